Feature: The mesh's secrets stay in their 0600 files
  The deploy makes the mesh's secrets (the management token, one Consul token per program, the
  stats page's password, the backing services' passwords, the mesh CA's key) and keeps each in a
  0600 file. None of them may show anywhere else a
  user of the host could look: a process's command line or environment, a log, a file another user
  may read, or an answer of the registry.

  Background:
    Given the mesh under test

  Scenario: No secret the deploy made shows outside its file
    Then no process of the mesh carries a secret in its command line or environment
    And no file under the mesh's state dir that is not 0600, and no container log, holds a secret
    And the registry's catalog, health, agent and KV answers hold no secret

  # The proxy's service-facing listener (its `mtls` port) requires a client certificate of the mesh
  # CA, which the registry's Connect CA issues to each service (README, "Mesh identity").
  Scenario: The proxy's mTLS listener lets in the mesh's callers alone
    Then a caller with a certificate the registry issued for "mcp-gateway" reaches "backend-api" through the mTLS listener
    And the mTLS listener refuses a caller with no certificate, another CA's, an expired one, and plaintext

  # Intentions (the registry's, from the spec: deny by default, each service's depends_on allowed,
  # and the spec's own) decide on the caller's certificate: frontend depends on backend-api alone.
  Scenario: The proxy denies a call the intentions do not allow
    Then a caller with a certificate the registry issued for "frontend" reaches "backend-api" through the mTLS listener
    And a caller with a certificate the registry issued for "frontend" is denied "postgres-exporter" by the intentions, with 403 and the reason

  # Tool intentions decide one MCP tool, read from each request's JSON-RPC body: only backend-api
  # and the operator may make claude-task-runner run a program (mesh_spec.yaml). The ide consumer
  # may use its other tools; mcp-gateway, which calls it for whoever reaches the gateway, may not.
  Scenario: The proxy denies an MCP tool its tool intentions leave out, with 403 and the reason
    When I open an MCP session with "claude-task-runner" through the proxy as the consumer "ide"
    Then calling "submit_task" with '{"command": ["true"]}' gets 403 and "tool intention denies ide -> claude-task-runner.submit_task"
    When I call "list_tasks" with '{"limit": 1}'
    Then the tool result contains "count"
    When I open an MCP session with "mcp-gateway" through the proxy
    And I call "claude-task-runner.submit_task" with '{"command": ["id"]}'
    Then the tool result is an error that contains "tool intention denies mcp-gateway -> claude-task-runner.submit_task"

  # Callers from outside the mesh (consumers in the spec) present an API key at the proxy's edge
  # listener; the deploy derives each and keeps it 0600 (README, "Clients at the edge").
  Scenario: The proxy's edge answers only a consumer's API key
    Then a request through the proxy's edge with no API key gets 401 and the reason
    And a request through the proxy's edge with a wrong API key gets 401 and the reason
    And a request through the proxy's edge with the key's hash gets 401 and the reason
    And a request with the operator's API key reaches "backend-api" through the proxy's edge
    # the ide consumer's own intentions: mcp-gateway and claude-task-runner, and no other route
    And a request with the "ide" consumer's API key is denied "backend-api" by its intentions, with 403 and the reason

  # The backing services were open: PostgreSQL trusted every TCP login, MariaDB's root had no
  # password, RabbitMQ let guest/guest in, Redis answered anyone its protected mode let in. Each now lets in only the account the deploy made, with
  # its password (the probes, which log in with it, pass: the Health feature).
  Scenario Outline: A backing service refuses a login without the deploy's password
    Then "<service>" refuses a login as "<user>" with <password>

    Examples:
      | service    | user     | password           |
      | postgresql | postgres | no password        |
      | postgresql | postgres | a wrong password   |
      | rabbitmq   | guest    | the password guest |
      | rabbitmq   | meshspec | a wrong password   |
      | mariadb    | root     | no password        |
      | mariadb    | root     | a wrong password   |
      | mariadb    | nobody   | no password        |
      | redis      | default  | no password        |
      | redis      | default  | a wrong password   |
