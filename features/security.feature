Feature: The mesh's secrets stay in their 0600 files
  The deploy makes the mesh's secrets (the management token, one Consul token per program, the
  stats page's password) and keeps each in a 0600 file. None of them may show anywhere else a
  user of the host could look: a process's command line or environment, a log, a file another user
  may read, or an answer of the registry.

  Background:
    Given the mesh under test

  Scenario: No secret the deploy made shows outside its file
    Then no process of the mesh carries a secret in its command line or environment
    And no file under the mesh's state dir that is not 0600, and no container log, holds a secret
    And the registry's catalog, health, agent and KV answers hold no secret
