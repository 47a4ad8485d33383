@docker
Feature: The docker runtime runs one container per instance
  With MESH_RUNTIME=docker the same spec converges to one container per instance on the host's
  Docker engine: on the host network, under docker-init, labelled as the mesh's, restarted by the
  engine when its process dies, and started again by the next deploy when stopped by hand.

  Background:
    Given the mesh under test

  Scenario: Docker runs exactly the planned instances
    Then Docker runs one container per planned instance, labelled with its instance and spec hash
    And every container runs on the host network under docker-init with a restart policy
    And every instance is passing

  @drift
  Scenario: A container whose process dies is restarted by the engine
    When I kill the process of the container of "pushgateway-local-0"
    Then Docker restarts the container of "pushgateway-local-0" within 20 seconds
    And every instance of "pushgateway" is passing within 30 seconds

  @drift
  Scenario: A container stopped by hand is caught by verify and started by the next deploy
    When I stop the container of "blackbox-exporter-local-0"
    Then verify reports "container blackbox-exporter-local-0 is EXITED"
    When I deploy the mesh again
    Then the deploy succeeds
    And every planned instance is running
    And every instance of "blackbox-exporter" is passing within 30 seconds
