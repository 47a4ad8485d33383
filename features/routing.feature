Feature: Routing through the mesh proxy
  The proxy (HAProxy, configured from the plan) routes `/svc/<name>/...` to http services and
  `/mcp/<name>` to MCP servers; tcp services (databases, the broker) and the infrastructure are
  reached directly and get no route.

  Scenario: The proxy runs the configuration the plan renders
    Then the controller sees HAProxy and Consul
    And the proxy runs the configuration the plan renders

  Scenario Outline: An http service answers through the proxy
    Then "<service>" is reachable through the proxy

    Examples:
      | service           |
      | backend-api       |
      | frontend          |
      | chromadb          |
      | embeddings        |
      | semantic-search   |
      | prometheus        |
      | alertmanager      |
      | node-exporter     |
      | blackbox-exporter |
      | pushgateway       |
      | postgres-exporter |
      | redis-exporter    |
      | phoenix           |

  Scenario Outline: An MCP server completes the handshake through the proxy
    Then "<service>" is reachable through the proxy

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
      | mcp-gateway         |

  Scenario Outline: A tcp or infrastructure service is not routed
    Then "<service>" is not routed through the proxy

    Examples:
      | service         |
      | consul          |
      | mesh-proxy      |
      | mesh-controller |
      | rabbitmq        |
      | task-worker     |
      | postgresql      |
      | redis           |
      | mariadb         |

  Scenario: An unknown service is answered 404 by the proxy
    When I request "/svc/no-such-service/" through the proxy
    Then the proxy answers HTTP 404

  Scenario: Every answer through the proxy carries a request id
    When I request the health path of "backend-api" through the proxy
    Then the proxy answers HTTP 200
    And the response carries the header "X-Request-ID"
