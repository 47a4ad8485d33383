@process @slow
Feature: Alerts that reach the status page
  Prometheus evaluates the mesh's alert rules on what it scrapes, Alertmanager holds what fires,
  and the status page lists the active alerts through backend-api, which reads them from
  Alertmanager through the mesh.

  Background:
    Given the mesh under test

  Scenario: A stopped service fires its alert and the status page lists it
    Then the status page lists no alert "MeshInstanceDown" for "node-exporter-local-0"
    When I stop the program of "node-exporter-local-0"
    Then within 150 s the status page lists the alert "MeshInstanceDown" for "node-exporter-local-0"
