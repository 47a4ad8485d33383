Feature: Converge and idempotency
  The deploy brings reality to the spec; verify proves it; a second deploy changes nothing.

  Scenario: The mesh is converged: every check of verify passes
    Given the mesh is converged
    Then every planned instance is running
    And the counts agree
    And the host runs exactly the planned instances

  Scenario: Verify checks the whole mesh in seconds
    Given the mesh under test
    Then verify checks every instance in less than 30 seconds

  @slow @deploy
  Scenario: A second deploy of a converged mesh changes nothing
    Given the mesh is converged
    When I deploy the mesh again
    Then the deploy succeeds
    And the deploy changed nothing
    And the mesh is converged
