@mcp
Feature: MCP sessions through the mesh proxy
  A client opens a session at /mcp/<name>, lists tools, calls one, and ends it; the proxy keeps
  every request of a session on one instance (stick table on Mcp-Session-Id).

  Scenario: An entity written to the knowledge graph through the proxy is read back
    When I open an MCP session with "knowledge-graph-mcp" through the proxy
    And I call "create_entities" with '{"entities": [{"name": "bdd-proxy", "entityType": "service", "observations": ["HAProxy"]}]}'
    And I call "read_graph" with '{}'
    Then the tool result contains "bdd-proxy"
    When I end the session
    Then the session is gone

  Scenario Outline: A full session: initialize, tools/list, tools/call, DELETE
    When I open an MCP session with "<service>" through the proxy
    Then the server issued a session id
    And the session lists the tool "<tool>"
    And the proxy pins the session to one instance of the service
    When I call "<tool>" with '<arguments>'
    Then the tool result contains "<expect>"
    When I end the session
    Then the session is gone

    Examples:
      | service             | tool               | arguments                                                                                     | expect               |
      | files               | write_file         | {"path": "bdd.txt", "content": "hello mesh"}                                                  | Successfully wrote   |
      | sequentialthinking  | sequentialthinking | {"thought": "Check the mesh", "nextThoughtNeeded": false, "thoughtNumber": 1, "totalThoughts": 1} | thoughtHistoryLength |
      | knowledge-graph-mcp | read_graph         | {}                                                                                            | entities             |
      | memory-bank-mcp     | memory_bank_write  | {"projectName": "bdd", "fileName": "notes.md", "content": "hello mesh"}                       | written successfully |
      | http                | http_get           | {"url": "{proxy_url}/healthz"}                                                                | 200                  |
      | claude-task-runner  | list_tasks         | {}                                                                                            | count                |

  Scenario: A written file is read back in a later session
    When I open an MCP session with "files" through the proxy
    And I call "write_file" with '{"path": "bdd-later.txt", "content": "still here"}'
    And I end the session
    And I open an MCP session with "files" through the proxy
    And I call "read_text_file" with '{"path": "bdd-later.txt"}'
    Then the tool result contains "still here"
