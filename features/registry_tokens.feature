Feature: Every program holds its own registry token
  The management token is the registry's own and the operator's (deploy, verify). Every other
  program reads Consul with its own service's token: it writes only its own registration and checks,
  and reads only the services it depends on, or the whole registry when the spec says so. Consul's
  default-deny ACLs enforce it, and anonymous reads see nothing.

  Background:
    Given the mesh under test

  Scenario: Only the registry is given the management token
    Then of the mesh's processes only the registry names the management token file
    And no process of the mesh carries a secret in its command line or environment

  Scenario Outline: A service's token cannot change another service's registration
    Then the token of "<service>" is refused the deregistration of "<other>" with 403
    And the token of "<service>" is refused a key write with 403

    Examples:
      | service     | other       |
      | backend-api | frontend    |
      | mcp-gateway | consul      |
      | frontend    | backend-api |

  Scenario: A service's token reads what it depends on, and no more
    Then the token of "frontend" reads the passing instances of "backend-api"
    And the token of "frontend" reads no instance of "postgresql"
    And the token of "backend-api" reads every service of the plan

  Scenario: An anonymous read of the registry sees nothing
    Then an anonymous read of Consul's catalog lists no service
