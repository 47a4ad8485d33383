Feature: Spec validation
  A malformed spec is refused before any host is touched, with one line per problem
  (FILE:LINE:COL: key.path: message) and exit code 2; the shipped spec plans without a collision.

  Scenario: The shipped spec is valid and declares the 41 services
    When I validate the spec "mesh_spec.yaml"
    Then validation passes
    And the summary reads "41 services: 19 mcp, 8 core, 3 database, 3 ai, 8 monitoring"

  Scenario Outline: A malformed spec is refused at the offending line
    When I validate the spec "tests/data/bad_specs/<file>"
    Then validation fails with exit code 2
    And a problem is reported at line <line> under "<key>" saying "<fragment>"

    Examples:
      | file                               | line | key                           | fragment                       |
      | 04_duplicate_key.yaml              | 28   | services.api.port             | duplicate key                  |
      | 11_port_is_string.yaml             | 26   | services.api.port             | valid integer                  |
      | 25_port_collision.yaml             | 26   | services.api.port             | is already taken by mesh-proxy |
      | 30_depends_on_cycle.yaml           | 27   | services.api.depends_on.1     | dependency cycle               |
      | 33_mcp_service_http_probe.yaml     | 37   | services.tools.health.http    | use health.mcp                 |
      | 39_placeholder_unknown.yaml        | 29   | services.api.process.command.2 | unknown placeholder {prot}    |
      | 43_lb_weighted_without_weights.yaml | 32  | services.api.routing.lb       | needs weights                  |
      | 47_database_routed_as_http.yaml    | 31   | services.db.routing.mode      | a database is routed as tcp    |

  Scenario: Every malformed spec of the corpus is refused with exactly the problems it documents
    Then every malformed spec in "tests/data/bad_specs" is refused with the problems its header lists

  Scenario: The plan gives every instance its own port, offset applied
    When I plan the spec "mesh_spec.yaml" with port offset 20000
    Then no two instances share a port
    And every instance listens at its spec port plus 20000
    And the plan holds 47 instances on "127.0.0.1"
