Feature: Health
  Every instance runs, listens, does its job (a real probe: an HTTP answer, an MCP handshake with
  tools, a database query) and its Consul check passes.

  Scenario: Every instance of the mesh passes its probe and its Consul check
    Then every instance is passing

  Scenario Outline: Every instance of a service is running, listening, healthy, registered and passing
    Then every instance of "<service>" is passing

    Examples:
      | service             |
      | claude-flow         |
      | ruv-swarm           |
      | files               |
      | context7            |
      | http-fetch          |
      | ddg                 |
      | sequentialthinking  |
      | nx-mcp              |
      | extended-memory     |
      | mcp-ssh             |
      | ultimatecoder       |
      | playwright-mcp      |
      | memory-bank-mcp     |
      | knowledge-graph-mcp |
      | compass-mcp         |
      | github              |
      | http                |
      | language-server     |
      | claude-task-runner  |
      | consul              |
      | mesh-proxy          |
      | mesh-controller     |
      | backend-api         |
      | frontend            |
      | rabbitmq            |
      | task-worker         |
      | mcp-gateway         |
      | postgresql          |
      | redis               |
      | mariadb             |
      | chromadb            |
      | embeddings          |
      | semantic-search     |
      | prometheus          |
      | alertmanager        |
      | node-exporter       |
      | blackbox-exporter   |
      | pushgateway         |
      | postgres-exporter   |
      | redis-exporter      |
      | phoenix             |

  Scenario Outline: An MCP server completes a real handshake and lists its tools
    Then the MCP server "<service>" completes the handshake with at least <tools> tools

    Examples:
      | service            | tools |
      | claude-flow        | 100   |
      | files              | 5     |
      | sequentialthinking | 1     |
      | http               | 1     |
      | claude-task-runner | 3     |
      | mcp-gateway        | 19    |

  @slow @process @drift
  Scenario: A stopped instance turns its Consul check critical and fails its probe
    Given the isolated mesh "tests/data/specs/small.yaml"
    And the mesh is converged
    When I stop the program of "web-local-0"
    Then the Consul check of "web-local-0" is critical within 10 seconds
    And verify reports "nothing listens at" for "web-local-0"
    And every instance of "redis" is passing
