Feature: Nothing runs as root that need not; the task runner runs only allowed programs; the proxy's admin surfaces are the controller's
  claude-task-runner runs any argv its callers send: each task runs as the runner's own task user
  (meshspec-tasks, made by the deploy), and only programs the spec's allow-list names, exactly as
  the task names them. HAProxy's runtime API and master CLI are sockets only the controller's user
  may open, and its stats page asks for credentials only root may read.

  Background:
    Given the mesh under test

  Scenario: A task runs as the task user, not as root
    When I open an MCP session with "claude-task-runner" through the proxy
    And I call "submit_task" with '{"command": ["id", "-un"]}'
    Then the task finishes with the output "meshspec-tasks"

  Scenario Outline: A program outside the allow-list is refused and never runs
    When I open an MCP session with "claude-task-runner" through the proxy
    And I call "submit_task" with '<arguments>'
    Then the tool call is refused with "is not allowed: this runner runs only"

    Examples:
      | arguments                                  |
      | {"command": ["sh", "-c", "id"]}            |
      | {"command": ["/usr/bin/id"]}               |
      | {"command": ["python3", "-c", "print(1)"]} |

  Scenario: HAProxy's runtime API and master CLI are sockets only the controller's user may open
    Then the proxy's runtime API and master CLI are unix sockets of "meshspec-proxy", mode 0600
    And an unprivileged user cannot open the proxy's runtime API
    And the proxy's runtime API answers root

  @process
  Scenario: The controller's user drives HAProxy without root
    Then "meshspec-proxy" reads HAProxy's servers through its runtime API and its processes through its master CLI

  Scenario: The controller reloads HAProxy through its master CLI when haproxy.cfg's shape changes
    When haproxy.cfg's shape changes, then changes back
    Then the controller reloaded HAProxy twice, and reports both HAProxy and Consul reachable

  Scenario: HAProxy's stats page asks for credentials that only root may read
    Then the proxy's stats page answers 401 without credentials
    And the proxy's stats page answers 401 to a wrong password
    And the proxy's stats page lists the mesh's frontend with the deploy's credentials
    And the stats credentials are root's, mode 0600, in a directory only root may list
    And an unprivileged user cannot read the stats credentials

  # In both runtimes; the programs that read a secret file are in the outline after it.
  Scenario Outline: A program runs as the user of its trust level, not as root
    Then the process that listens for "<service>" runs as "<user>", not as root

    Examples:
      | service            | user              |
      | mariadb            | mysql             |
      | node-exporter      | prometheus        |
      | postgresql         | postgres          |
      | files              | meshspec-mcp      |
      | ruv-swarm          | meshspec-mcp      |
      | github             | meshspec-mcp      |
      | http-fetch         | meshspec-mcp      |
      | playwright-mcp     | meshspec-mcp      |
      | chromadb           | meshspec-store    |
      | phoenix            | meshspec-store    |
      | frontend           | meshspec-app      |
      | embeddings         | meshspec-app      |
      | semantic-search    | meshspec-app      |
      | http               | meshspec-mcp      |
      | language-server    | meshspec-mcp      |
      | claude-task-runner | meshspec-tasks    |

  # The programs that read a secret file (a Consul token, a backing service's password, the mesh
  # CA's key, the proxy's certificate and key, a consumer's key it holds) run as
  # their own users on a host; in the docker runtime a container whose program reads one runs as
  # root, since the file it mounts is the host's root's (README, "Least privilege").
  @process
  Scenario Outline: A program that holds a secret runs as its own user, and reads only its own secrets
    Then the process that listens for "<service>" runs as "<user>", not as root
    And of the mesh's secret files "<user>" can read only "<files>"

    Examples:
      | service           | user              | files                                                                                                    |
      | consul            | meshspec-registry | consul/management-token, secrets/.connect-ca/ca.pem, secrets/.connect-ca/key.pem                         |
      | backend-api       | meshspec-api      | consul/tokens/service-backend-api, secrets/postgresql/backend-api, secrets/rabbitmq/backend-api          |
      | task-worker       | meshspec-worker   | consul/tokens/service-task-worker, secrets/postgresql/task-worker, secrets/rabbitmq/task-worker          |
      | mcp-gateway       | meshspec-gateway  | consul/tokens/service-mcp-gateway                                                                        |
      | mesh-controller   | meshspec-proxy    | consul/tokens/service-mesh-controller, instances/mesh-proxy-local-0/edge/consumers.map, instances/mesh-proxy-local-0/stats/users.cfg, instances/mesh-proxy-local-0/tls/ca.pem, instances/mesh-proxy-local-0/tls/certificate.pem |
      | rabbitmq          | rabbitmq          | secrets/rabbitmq/rabbitmq                                                                                |
      | prometheus        | prometheus        | consul/tokens/service-prometheus, secrets/.consumers/alert-webhook                                       |
      | alertmanager      | prometheus        | consul/tokens/service-prometheus, secrets/.consumers/alert-webhook                                       |
      | postgres-exporter | meshspec-exporter | secrets/postgresql/postgres-exporter                                                                     |
      | redis-exporter    | meshspec-redis-exporter | secrets/redis/redis-exporter                                                                 |
      | redis             | redis             | secrets/redis/redis                                                                                      |
      | postgresql        | postgres          | nothing                                                                                                  |
      | mariadb           | mysql             | nothing                                                                                                  |

  Scenario: HAProxy's workers, which parse every request, do not run as root
    Then HAProxy's master runs as root and every worker of it as "haproxy"
