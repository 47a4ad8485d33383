@cluster @slow
Feature: A mesh across hosts: what crosses them, and a host lost
  With several hosts, each runs its own proxy, which checks every other host's proxy each second
  (a TLS handshake with its inbound listener). When a host is cut off, the other hosts' proxies take
  its instances out of rotation within seconds; the replicas on the other hosts answer meanwhile;
  when its link returns, its instances come back. Prometheus scrapes the other hosts' instances
  through its own host's proxy, which reaches them over mTLS. Runs against a mesh on the test cluster
  (`make cluster`, then the deploy with MESH_HOSTS_FILE): the cut is the host side of its veth
  set down, as a pulled cable.

  Background:
    Given the mesh under test

  Scenario: One of three hosts cut off under Locust load
    Given "backend-api" has an instance on "h3" and others on the other hosts
    When Locust calls "backend-api" through the proxy of every other host for 60 s, with "h3" cut off from 10 s to 40 s
    Then at most 0.1% of Locust's requests failed
    And every other host's proxy had the instances on "h3" out of rotation within 3 s of the cut
    And every other host's proxy had them back in rotation within 30 s of the link's return

  Scenario: Prometheus scrapes the other hosts' instances through its host's proxy, over mTLS
    Then within 60 s Prometheus has every instance of the other hosts that exports metrics up
    And for 35 s no packet from another host reaches a metrics port of "h2"
