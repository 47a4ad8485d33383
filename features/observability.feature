@process @slow
Feature: Traces across the mesh, metrics found through the registry, alerts that reach someone, dashboards
  meshspec's own services send their spans to the trace store, the trace context carried by the
  proxy and in job messages; Prometheus finds what to scrape in the registry at run time and evaluates the mesh's alert
  rules on it; Alertmanager routes what fires by severity to backend-api's webhook, which stores
  it in PostgreSQL; the status page lists the active alerts, read from Alertmanager through the mesh.

  Background:
    Given the mesh under test

  Scenario: A request through the proxy is one trace across the processes it crossed
    When I ask backend-api's relay for a search of "traced" at semantic-search, with a sampled trace
    Then within 30 s the trace store holds one trace with spans of backend-api, semantic-search and embeddings

  Scenario: A job is one trace from the API that enqueued it to the worker that ran it
    When I enqueue a sha256 job at backend-api through the proxy, with a sampled trace
    Then within 30 s the trace store holds one trace with spans of backend-api and task-worker

  Scenario: An MCP tool call through the gateway is one trace, its context carried in _meta
    When I call "claude-task-runner.list_tasks" through mcp-gateway with a sampled trace in the call's _meta
    Then within 30 s the trace store holds one trace with spans of mcp-gateway and claude-task-runner

  Scenario: An instance registered by hand is scraped without a deploy
    When I register "hand-exporter-0" of service "hand-exporter" by hand, exporting the metrics of "node-exporter-local-0"
    Then within 40 s Prometheus scrapes "hand-exporter-0" as job "hand-exporter" and finds it up

  Scenario: The host's checker, which serves no HTTP, is scraped through node-exporter's textfile collector
    Then within 60 s Prometheus holds the checker's result and probe durations of every check, each as the registry holds it

  Scenario: A stopped service fires its alert, the webhook stores it and the status page lists it
    Then the status page lists no alert "MeshInstanceDown" for "node-exporter-local-0"
    And the alert webhook refuses the operator's key
    When I stop the program of "node-exporter-local-0"
    Then within 150 s the status page lists the alert "MeshInstanceDown" for "node-exporter-local-0"
    And the alert store holds "MeshInstanceDown" for "node-exporter-local-0", stored within its rule's for and one evaluation of the fault's first sight

  Scenario: The status page names the host of each instance
    Then the status page lists each instance of "backend-api" at its address, on its host

  Scenario: The dashboard draws each service's last hour from Prometheus in a browser
    When I send 300 requests to "backend-api" through the proxy over 60 s
    Then every request succeeded
    And within 120 s the dashboard draws a line for "backend-api" on every panel
    And the dashboard's topology labels "backend-api" with its request rate
    And within 90 s the dashboard's topology labels the line from "backend-api" to "prometheus" with the caller's request rate
    And the dashboard's screenshot is saved as "reports/dashboard.png"

  Scenario: The dashboard lists the slowest traced requests, each linked to its trace in Phoenix
    When I enqueue 3 sleep jobs of 5 s at backend-api through the proxy, each with a sampled trace of its own, and they are done
    Then within 90 s the dashboard lists one of those traces among the slowest traced requests
    And its link opens Phoenix's page of that trace, at the trace store's address, showing the trace and its entry span
    And Phoenix's page of that trace is saved as "reports/dashboard-trace.png"
