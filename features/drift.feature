@slow @process @drift
Feature: Drift detection
  `meshspec verify` catches reality that differs from the spec, each drift by name in one line;
  the deploy re-run repairs it. These scenarios break an isolated mesh and restore it.

  Background:
    Given the isolated mesh "tests/data/specs/small.yaml"
    And the mesh is converged

  Scenario: A stopped program is caught by name
    When I stop the program of "web-local-1"
    Then verify fails
    And verify reports "program web-local-1 is STOPPED"
    And verify reports "nothing listens at" for "web-local-1"
    And verify reports nothing about any instance but "web-local-1"

  Scenario: A registration nobody declared is caught
    When I register "intruder-1" of service "intruder" in Consul
    Then verify reports "unexpected registration not in the spec: intruder-1"

  Scenario: A registration moved to a dead port is caught
    When I move the registration of "web-local-0" to a port where nothing listens
    Then verify reports "where nothing listens" for "web-local-0"

  Scenario: A tag changed behind meshspec's back is caught
    When I change the tags of "web-local-1" to "canary"
    Then verify reports "registered with tags ['canary'], declared ['web']"

  Scenario: A check swapped behind meshspec's back is caught and repaired
    When I swap the check of "web-local-1" for a TCP check, meta and all else kept
    Then verify reports "check type 'tcp', declared 'ttl'" for "web-local-1"
    When I deploy the mesh again
    Then the deploy succeeds
    And the mesh is converged

  Scenario: The deploy re-run repairs a lost registration
    When I deregister "redis-local-0" from Consul
    Then verify reports "redis-local-0 is not registered in Consul"
    When I deploy the mesh again
    Then the deploy succeeds
    And the mesh is converged
