"""An embedded single-node agent that speaks Consul's HTTP API (see DESIGN.md, "Consul API notes")."""

VERSION = "1.17.0"  # the Consul version whose API shapes this agent follows
