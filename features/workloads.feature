Feature: Workloads do their real jobs
  Each service is checked through its own protocol, not a health endpoint: SQL round trips,
  Redis keys, embeddings, vector search, Prometheus queries, jobs through RabbitMQ, and an offline
  tool call on every MCP server that has one (through the mesh proxy).

  Background:
    Given the mesh under test

  Scenario: PostgreSQL stores a row and returns it
    Then PostgreSQL stores a row and returns it

  Scenario: MariaDB stores a row and returns it
    Then MariaDB stores a row and returns it

  Scenario: Redis stores a key and returns it
    Then Redis stores a key and returns it

  Scenario: The embeddings service returns a MiniLM vector
    Then the embeddings service returns a vector of 384 dimensions for "a service mesh"

  Scenario: Semantic search indexes documents in Chroma and finds them by meaning
    Then semantic search finds "HAProxy balances load across servers" first for "which one is a load balancer?"

  Scenario: Prometheus scrapes every target it is given and they are up
    Then Prometheus answers the query "up" with 1 for every service that exports metrics

  Scenario: A job goes through RabbitMQ to the task worker and its result comes back
    Then a sha256 job of "meshspec" enqueued at backend-api comes back with its digest

  Scenario Outline: An MCP server does an offline tool call through the proxy
    When I open an MCP session with "<service>" through the proxy
    And I call "<tool>" with '<arguments>'
    Then the tool result contains "<expect>"
    When I end the session
    Then the session is gone

    Examples:
      | service            | tool              | arguments                                                                                        | expect                              |
      | claude-flow        | config_set        | {"key": "mesh.probe", "value": "hello-mesh"}                                                     | "success": true                     |
      | ruv-swarm          | swarm_init        | {"topology": "mesh", "maxAgents": 3}                                                             | mesh swarm                          |
      | http-fetch         | fetch             | {"url": "{service_url}/status"}                                                                  | server_instances                    |
      | ddg                | fetch_content     | {"url": "{service_url}/status"}                                                                  | server_instances                    |
      | nx-mcp             | nx_workspace_path | {}                                                                                               | instances/nx-mcp                    |
      | extended-memory    | save_context      | {"content": "mesh uses haproxy", "importance_level": 8, "project_id": "mesh", "tags": ["infra"]} | Context saved successfully          |
      | mcp-ssh            | list-connections  | {}                                                                                               | [disconnected]                      |
      | ultimatecoder      | tool_write_file   | {"file_path": "probe.txt", "content": "hello mesh"}                                              | written successfully                |
      | playwright-mcp     | browser_navigate  | {"url": "{service_url}/status"}                                                                  | Page URL:                           |
      | language-server    | find_definition   | {"file_path": "sample.ts", "symbol_name": "add"}                                                 | sample.ts:1:17                      |
