Feature: Discovery through Consul
  Every instance is registered with its real address and port, exactly as the deploy declares it,
  and Consul holds nothing the spec does not declare.

  Scenario: The registry is exactly the plan
    Then every planned instance is registered as declared
    And Consul carries no registration the spec does not declare
    And Consul's catalog lists every service of the plan

  Scenario Outline: A service is discoverable at its planned address
    Then Consul's passing instances of "<service>" are its planned instances

    Examples:
      | service            |
      | consul             |
      | mesh-proxy         |
      | backend-api        |
      | files              |
      | claude-task-runner |
      | postgresql         |
      | rabbitmq           |
      | chromadb           |
      | prometheus         |
      | phoenix            |

  Scenario Outline: Prometheus scrapes the services that export metrics
    Then Prometheus has a healthy scrape target for every instance of "<service>"

    Examples:
      | service           |
      | mesh-proxy        |
      | mesh-controller   |
      | prometheus        |
      | node-exporter     |
      | postgres-exporter |
      | redis-exporter    |
