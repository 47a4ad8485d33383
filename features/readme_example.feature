@slow @process @drift
Feature: The README's example scenario
  Written from the existing steps only, as the README shows a user.

  Scenario: A stopped MCP server is reported and comes back with the next deploy
    Given the isolated mesh "tests/data/specs/small.yaml"
    And the mesh is converged
    When I stop the program of "files-local-0"
    Then verify reports "program files-local-0 is STOPPED"
    When I deploy the mesh again
    Then the deploy succeeds
    And the mesh is converged
