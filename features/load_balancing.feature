Feature: Load balancing
  Each routed service is balanced with the policy the spec declares, over every planned instance
  the controller put in rotation from Consul's health.

  Scenario Outline: Every planned instance of a routed service is in the proxy's rotation
    Then the proxy has every instance of "<service>" up and ready
    And the proxy balances "<service>" with the "round_robin" policy of the spec

    Examples:
      | service            |
      | backend-api        |
      | frontend           |
      | semantic-search    |
      | prometheus         |
      | files              |
      | claude-task-runner |
      | mcp-gateway        |

  @slow @process
  Scenario: Round robin spreads requests evenly over the replicas
    Given an isolated mesh of "consul, mesh-proxy, mesh-controller, pushgateway" from the spec with 3 replicas of "pushgateway"
    And the mesh is converged
    Then the proxy has every instance of "pushgateway" up and ready within 10 seconds
    When I send 30 requests to "pushgateway" through the proxy
    Then every request succeeded
    And each instance of "pushgateway" served between 9 and 11 of them
