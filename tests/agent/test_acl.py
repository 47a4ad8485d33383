"""ACL enforcement with a management token, as Consul does with default_policy=deny."""

from __future__ import annotations

import consul
import pytest
import requests
from consul.callback import CB

pytestmark = pytest.mark.integration
TOKEN = "3f0f9a3e-management-token"
ANON = "Permission denied: token with AccessorID '00000002-0000-0000-0000-000000000002' lacks permission"


def test_management_token_may_do_everything(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    assert c.agent.service.register("web", service_id="web", port=80)
    assert c.kv.put("k", "v")
    assert c.kv.get("k")[1]["Value"] == b"v"
    assert list(c.catalog.services()[1]) == ["web"]
    # py-consul's agent.self() sends no token (real Consul refuses it too): pass it explicitly.
    assert c.http.get(CB.json(), "/v1/agent/self", headers=c.prepare_headers())["Config"]["Datacenter"] == "dc1"


def test_anonymous_is_refused_with_consuls_messages(make_agent):
    agent = make_agent(token=TOKEN)
    admin, anon = agent.client(token=TOKEN), agent.client()
    admin.agent.service.register("web", service_id="web", port=80)
    admin.kv.put("secret", "v")

    with pytest.raises(consul.ACLPermissionDenied, match=f"{ANON} 'service:write' on \"api\""):
        anon.agent.service.register("api", service_id="api")
    with pytest.raises(consul.ACLPermissionDenied, match=f"{ANON} 'key:read' on \"secret\""):
        anon.kv.get("secret")
    with pytest.raises(consul.ACLPermissionDenied, match=f"{ANON} 'key:write' on \"secret\""):
        anon.kv.put("secret", "x")
    with pytest.raises(consul.ACLPermissionDenied, match=f"{ANON} 'agent:read' on \"test-node\""):
        anon.agent.self()
    with pytest.raises(consul.ACLPermissionDenied, match=f"{ANON} 'service:write' on \"web\""):
        anon.agent.service.deregister("web")
    # Lists are filtered, not refused, and say so in a header.
    assert anon.catalog.services()[1] == {}
    assert anon.health.service("web")[1] == []
    assert anon.agent.services() == {}
    response = requests.get(f"http://{agent.address}/v1/catalog/services", timeout=5)
    assert response.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    assert admin.kv.get("secret")[1]["Value"] == b"v"  # nothing anonymous did changed state
    assert list(admin.agent.services()) == ["web"]


def test_unknown_token_is_acl_not_found(make_agent):
    agent = make_agent(token=TOKEN)
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        agent.client(token="not-the-token").kv.get("k")
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        agent.client(token="not-the-token").catalog.services()


@pytest.mark.parametrize("how", ["header", "query", "bearer"])
def test_token_accepted_from_header_query_or_bearer(make_agent, how):
    agent = make_agent(token=TOKEN)
    url = f"http://{agent.address}/v1/agent/self"
    kwargs = {
        "header": {"headers": {"X-Consul-Token": TOKEN}},
        "query": {"params": {"token": TOKEN}},
        "bearer": {"headers": {"Authorization": f"Bearer {TOKEN}"}},
    }[how]
    assert requests.get(url, timeout=5, **kwargs).status_code == 200
    assert requests.get(url, timeout=5).status_code == 403


def test_without_token_acls_are_off(agent):
    assert agent.client().kv.put("open", "yes")


def test_token_file_keeps_the_token_out_of_the_command_line(make_agent, tmp_path):
    token_file = tmp_path / "management-token"
    token_file.write_text(TOKEN + "\n")
    agent = make_agent(extra=["--token-file", str(token_file)])
    with pytest.raises(consul.ACLPermissionDenied):
        agent.client().kv.put("k", "v")
    assert agent.client(token=TOKEN).kv.put("k", "v")
    cmdline = open(f"/proc/{agent.proc.pid}/cmdline", "rb").read().decode()
    assert TOKEN not in cmdline


def test_the_shipped_consul_probe_reads_the_catalog_with_the_mesh_token(make_agent, tmp_path):
    """The consul service's probe finds its own registration in the catalog, a read only a token
    is answered; the token comes from the token file as the probe runs, never from the probe."""
    from meshspec.runtime.probes.protocols import run
    from tests.probes.shipped import PLAN, shipped_probe

    agent = make_agent(token=TOKEN)
    instance = PLAN.instances_of("consul")[0].id
    agent.client(token=TOKEN).agent.service.register("consul", service_id=instance, port=8500)
    token_file = tmp_path / "consul.token"
    token_file.write_text(TOKEN + "\n")
    probe = {**shipped_probe("consul", port=agent.port), "token_file": str(token_file)}
    assert TOKEN not in repr(shipped_probe("consul"))

    result = run(probe, timeout=5)
    assert result.ok and f'"{instance}"' in result.output, result.output
    anonymous = run({**probe, "token_file": None}, timeout=5)
    assert not anonymous.ok and "without" in anonymous.output and "('[]')" in anonymous.output, anonymous.output
    unreadable = run({**probe, "token_file": str(tmp_path / "missing")}, timeout=5)
    assert not unreadable.ok and "reading the Consul token" in unreadable.output, unreadable.output


def test_acls_apply_before_a_users_filter(make_agent):
    """The anonymous token's list is empty and says why, whatever its filter; a bad filter is still
    a 400, as Consul parses it before it reads anything. (That the filter runs after the ACLs shows
    from outside only in time: these are the answers, not the order.)"""
    agent = make_agent(token=TOKEN)
    agent.client(token=TOKEN).agent.service.register("web", service_id="web", port=80)
    url = f"http://{agent.address}/v1/agent/services"
    anonymous = requests.get(url, params={"filter": 'Service matches "(w+)+$"'}, timeout=5)
    assert anonymous.json() == {} and anonymous.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    assert requests.get(url, params={"filter": "Service =="}, timeout=5).status_code == 400
    admin = requests.get(url, params={"filter": 'Service matches "^w"'}, headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert list(admin.json()) == ["web"]
