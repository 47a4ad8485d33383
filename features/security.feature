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

  # The backing services were open: PostgreSQL trusted every TCP login, MariaDB's root had no
  # password, RabbitMQ let guest/guest in. Each now lets in only the account the deploy made, with
  # its password (the probes, which log in with it, pass: the Health feature).
  Scenario Outline: A backing service refuses a login without the deploy's password
    Then "<service>" refuses a login as "<user>" with <password>

    Examples:
      | service    | user     | password           |
      | postgresql | postgres | no password        |
      | postgresql | postgres | a wrong password   |
      | rabbitmq   | guest    | the password guest |
      | rabbitmq   | meshspec | a wrong password   |
      | mariadb    | root     | no password        |
      | mariadb    | root     | a wrong password   |
      | mariadb    | nobody   | no password        |
