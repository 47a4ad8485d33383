@slow @process
Feature: Resilience
  A replica that dies costs clients nothing (retries and redispatch), leaves the rotation, and
  comes back by itself (supervisord restarts it; the controller and HAProxy's checks re-admit it).

  Background:
    Given an isolated mesh of "consul, mesh-proxy, mesh-controller, pushgateway" from the spec with 3 replicas of "pushgateway"
    And the mesh is converged

  @drift
  Scenario: A SIGKILLed replica costs no client error and is restarted
    When I kill the program of "pushgateway-local-1"
    And I send 30 requests to "pushgateway" through the proxy
    Then every request succeeded
    And supervisord restarts "pushgateway-local-1" within 15 seconds
    And "pushgateway-local-1" is back in the proxy rotation within 20 seconds
    And every instance of "pushgateway" is passing within 30 seconds

  @drift
  Scenario: A stopped replica leaves the rotation and traffic goes to the others
    When I stop the program of "pushgateway-local-2"
    Then "pushgateway-local-2" leaves the proxy rotation within 15 seconds
    When I send 20 requests to "pushgateway" through the proxy
    Then every request succeeded
    And "pushgateway-local-2" served none of them
    And verify reports "program pushgateway-local-2 is STOPPED"
