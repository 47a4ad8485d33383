"""The ACL system through py-consul: policies in Consul's rule language, tokens that hold them or a
service identity, enforcement (403 on writes and single reads, silent filtering of lists), rule
precedence, the anonymous token, and the builtins that cannot be changed."""

from __future__ import annotations

import subprocess
import threading
import time

import consul
import pytest
import requests

from tests.agent.conftest import MESHSPEC

pytestmark = pytest.mark.integration

TOKEN = "acl-system-management-token"
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


@pytest.fixture
def secured(make_agent):
    return make_agent(token=TOKEN)


def get(agent, path: str, token: str | None = None) -> requests.Response:
    return requests.get(f"http://{agent.address}{path}", headers={"X-Consul-Token": token} if token else {}, timeout=5)


def policy(admin: consul.Consul, name: str, rules: str) -> dict:
    """A policy from HCL rules (py-consul sends rules as JSON; the HTTP API takes either)."""
    answer = requests.put(f"http://127.0.0.1:{admin.http.port}/v1/acl/policy", json={"Name": name, "Rules": rules},
                          headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_policies_are_created_read_updated_listed_and_deleted(secured):
    admin = secured.client(token=TOKEN)
    created = admin.acl.policy.create("web-writer", rules={"service": {"web": {"policy": "write"}}},
                                      description="writes web")
    assert created["Name"] == "web-writer" and created["CreateIndex"] == created["ModifyIndex"] > 0
    assert admin.acl.policy.read(created["ID"])["Rules"] == created["Rules"]
    listed = {p["Name"]: p for p in admin.acl.policy.list()}
    assert set(listed) == {"global-management", "web-writer"} and "Rules" not in listed["web-writer"]
    updated = admin.acl.policy.update(created["ID"], "web-writer", rules={"service": {"web": {"policy": "read"}}})
    assert updated["ModifyIndex"] > created["ModifyIndex"] and updated["CreateIndex"] == created["CreateIndex"]
    by_name = get(secured, "/v1/acl/policy/name/web-writer", TOKEN).json()
    assert by_name["ID"] == created["ID"] and '"read"' in by_name["Rules"]
    assert admin.acl.policy.delete(created["ID"]) is True
    assert get(secured, f"/v1/acl/policy/{created['ID']}", TOKEN).status_code == 404


@pytest.mark.parametrize(("body", "message"), [
    ({"Name": "bad name!"}, "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"),
    ({"Name": "p", "Rules": 'service "web" { policy = "admin" }'}, 'Invalid service "web" policy: \'admin\''),
    ({"Name": "p", "Rules": 'service "web" { policy = '}, "Failed to parse ACL rules"),
    ({"Name": "p", "Rules": 'servce "web" { policy = "read" }'}, "unknown resource 'servce'"),
    ({"Name": "global-management"}, 'A Policy with Name "global-management" already exists'),
])
def test_a_bad_policy_is_refused_and_nothing_is_stored(secured, body, message):
    answer = requests.put(f"http://{secured.address}/v1/acl/policy", json=body, headers={"X-Consul-Token": TOKEN},
                          timeout=5)
    assert answer.status_code == 400 and message in answer.text, answer.text
    assert [p["Name"] for p in secured.client(token=TOKEN).acl.policy.list()] == ["global-management"]


def test_a_token_may_do_what_its_policy_grants_and_lists_show_only_that(secured):
    admin = secured.client(token=TOKEN)
    admin.agent.service.register("web", service_id="web-1", port=1)
    admin.agent.service.register("db", service_id="db-1", port=2)
    admin.kv.put("app/config", "ok")
    admin.kv.put("secret/password", "hunter2")
    rules = policy(admin, "web-app", 'service "web" { policy = "write" }\nkey_prefix "app/" { policy = "read" }')
    secret = admin.acl.token.create(policies_id=[rules["ID"]], description="web app")["SecretID"]
    web = secured.client(token=secret)

    web.agent.service.register("web", service_id="web-2", port=3)  # its own service: allowed
    with pytest.raises(consul.ACLPermissionDenied):
        web.agent.service.register("db", service_id="db-2", port=4)
    assert web.kv.get("app/config")[1]["Value"] == b"ok"
    with pytest.raises(consul.ACLPermissionDenied):
        web.kv.put("app/config", "changed")
    with pytest.raises(consul.ACLPermissionDenied):
        web.kv.get("secret/password")

    listing = get(secured, "/v1/kv/?recurse", secret)
    assert [e["Key"] for e in listing.json()] == ["app/config"] and listing.headers[FILTERED] == "true"
    services = get(secured, "/v1/catalog/services", secret)
    assert set(services.json()) == {"web"} and services.headers[FILTERED] == "true"
    assert get(secured, "/v1/health/service/db", secret).json() == []
    assert sorted(web.agent.services()) == ["web-1", "web-2"]


def test_a_service_identity_writes_its_service_and_reads_the_others(secured):
    admin = secured.client(token=TOKEN)
    admin.agent.service.register("db", service_id="db-1", port=2)
    secret = admin.acl.token.create(service_identities=[{"ServiceName": "api"}])["SecretID"]
    api = secured.client(token=secret)
    api.agent.service.register("api", service_id="api-1", port=1, check=consul.Check.ttl("30s"))
    api.agent.check.ttl_pass("service:api-1")
    assert [e["Service"]["ID"] for e in api.health.service("db")[1]] == ["db-1"]  # discovers what it needs
    with pytest.raises(consul.ACLPermissionDenied):
        api.agent.service.deregister("db-1")
    with pytest.raises(consul.ACLPermissionDenied):
        api.kv.put("anything", "x")


def test_deny_beats_write_and_exact_and_longer_prefixes_win(secured):
    admin = secured.client(token=TOKEN)
    broad = policy(admin, "broad", 'key_prefix "" { policy = "write" }\nkey_prefix "app/" { policy = "read" }\n'
                                   'key "app/mine" { policy = "write" }')
    deny = policy(admin, "deny-app-locked", 'key_prefix "app/locked" { policy = "deny" }')
    merged = policy(admin, "also-write-locked", 'key_prefix "app/locked" { policy = "write" }')
    secret = admin.acl.token.create(policies_id=[broad["ID"], deny["ID"], merged["ID"]])["SecretID"]
    c = secured.client(token=secret)
    assert c.kv.put("other", "x") is True  # the empty prefix: write
    assert c.kv.put("app/mine", "x") is True  # an exact rule beats the app/ prefix
    with pytest.raises(consul.ACLPermissionDenied):
        c.kv.put("app/theirs", "x")  # the longer app/ prefix (read) beats the empty one (write)
    with pytest.raises(consul.ACLPermissionDenied):
        c.kv.get("app/locked/key")  # deny beats write from another policy


def test_the_anonymous_token_holds_what_it_is_given(secured):
    admin = secured.client(token=TOKEN)
    admin.kv.put("public/motd", "hello")
    assert get(secured, "/v1/kv/public/motd").status_code == 403
    reader = policy(admin, "public-read", 'key_prefix "public/" { policy = "read" }')
    admin.acl.token.update("00000002-0000-0000-0000-000000000002", policies_id=[reader["ID"]])
    assert get(secured, "/v1/kv/public/motd").status_code == 200  # no token: the anonymous token's policy
    assert get(secured, "/v1/kv/public/motd", "not-a-token").text == "ACL not found"


def test_builtins_cannot_be_changed_and_secrets_need_acl_write(secured):
    admin = secured.client(token=TOKEN)
    me = admin.acl.token.read_self()
    assert me["Description"] == "Initial Management Token" and me["Policies"][0]["Name"] == "global-management"
    denied = requests.delete(f"http://{secured.address}/v1/acl/token/{me['AccessorID']}",
                             headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert denied.status_code == 400
    changed = requests.put(f"http://{secured.address}/v1/acl/policy/00000000-0000-0000-0000-000000000001",
                           json={"Name": "global-management", "Rules": ""}, headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert changed.status_code == 400 and "not permitted" in changed.text
    auditor_policy = policy(admin, "acl-read", 'acl = "read"')
    auditor = admin.acl.token.create(policies_id=[auditor_policy["ID"]])["SecretID"]
    listed = get(secured, "/v1/acl/tokens", auditor).json()
    assert {t["SecretID"] for t in listed} == {"<hidden>"}  # acl:read sees tokens, never their secrets
    assert get(secured, "/v1/acl/policy", auditor).status_code in (404, 405)
    assert requests.put(f"http://{secured.address}/v1/acl/token", json={}, headers={"X-Consul-Token": auditor},
                        timeout=5).status_code == 403
    bootstrap = requests.put(f"http://{secured.address}/v1/acl/bootstrap", timeout=5)
    assert (bootstrap.status_code, bootstrap.text) == (403, "Permission denied: ACL bootstrap no longer allowed (reset index: 1)")


def test_acl_endpoints_answer_401_without_acls(agent):
    assert (get(agent, "/v1/acl/policies").status_code, get(agent, "/v1/acl/policies").text) == (401, "ACL support disabled")


def test_an_empty_token_file_refuses_to_start(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    done = subprocess.run([str(MESHSPEC), "agent", "--data-dir", str(tmp_path / "data"), "--port", "1",
                           "--token-file", str(empty)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "is empty: refusing to start without ACLs" in done.stderr


def test_a_role_bundles_policies_and_identities_for_the_tokens_that_link_it(secured):
    admin = secured.client(token=TOKEN)
    admin.kv.put("team/notes", "n")
    readers = policy(admin, "team-read", 'key_prefix "team/" { policy = "read" }')
    role = admin.acl.role.create("team", policies_id=[readers["ID"]], service_identities=[{"ServiceName": "tool"}])
    assert admin.acl.role.read(role["ID"])["Name"] == "team"
    assert [r["Name"] for r in admin.acl.role.list()] == ["team"]
    secret = admin.acl.token.create(roles_id=[role["ID"]])["SecretID"]
    member = secured.client(token=secret)
    assert member.kv.get("team/notes")[1]["Value"] == b"n"  # from the role's policy
    member.agent.service.register("tool", service_id="tool-1", port=1)  # from the role's service identity
    with pytest.raises(consul.ACLPermissionDenied):
        member.kv.put("team/notes", "x")
    assert admin.acl.role.delete(role["ID"]) is True
    with pytest.raises(consul.ACLPermissionDenied):
        member.kv.get("team/notes")  # the role is gone, and what it granted with it


def test_a_cloned_token_has_new_secrets_and_the_same_grants(secured):
    admin = secured.client(token=TOKEN)
    original = admin.acl.token.create(service_identities=[{"ServiceName": "api"}], description="api")
    clone = admin.acl.token.clone(original["AccessorID"], description="api, second copy")
    assert clone["AccessorID"] != original["AccessorID"] and clone["SecretID"] != original["SecretID"]
    assert clone["ServiceIdentities"] == original["ServiceIdentities"] and clone["Description"] == "api, second copy"
    secured.client(token=clone["SecretID"]).agent.service.register("api", service_id="api-9", port=9)


def test_a_token_with_an_expiration_works_until_then_and_is_gone_after(make_agent):
    """Consul's token expiry, with the agent's minimum lifetime lowered as Consul's own
    acl.token_min_expiration_ttl allows, so the test waits seconds rather than a minute."""
    agent = make_agent(token=TOKEN, extra=["--acl-token-min-expiration-ttl", "1s"])
    c = agent.client(token=TOKEN)
    policy = c.acl.policy.create("kv-reader", rules={"key_prefix": {"": {"policy": "read"}}})
    short = c.acl.token.create(policies_id=[policy["ID"]], expiration_ttl="2s")
    assert "ExpirationTTL" not in short and short["ExpirationTime"].endswith("Z")  # the TTL becomes a time
    lasting = c.acl.token.create(policies_id=[policy["ID"]])
    c.kv.put("k", "v")
    assert agent.client(token=short["SecretID"]).kv.get("k")[1]["Value"] == b"v"
    with pytest.raises(consul.ConsulException, match="Cannot change expiration time"):
        c.acl.token.update(short["AccessorID"], policies_id=[policy["ID"]], expiration_ttl="1h")
    time.sleep(2.2)
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        agent.client(token=short["SecretID"]).kv.get("k")
    assert requests.get(f"http://{agent.address}/v1/acl/token/{short['AccessorID']}",
                        headers={"X-Consul-Token": TOKEN}, timeout=5).status_code == 404
    listed = {t["AccessorID"] for t in c.acl.token.list()}
    assert lasting["AccessorID"] in listed and short["AccessorID"] not in listed
    assert agent.client(token=lasting["SecretID"]).kv.get("k")[1]["Value"] == b"v"


@pytest.mark.parametrize("body, message", [
    ({"ExpirationTTL": "1h", "ExpirationTime": "2099-01-01T00:00:00Z"}, "cannot both be set"),
    ({"ExpirationTTL": "30s"}, "ExpirationTime cannot be less than 1m0s in the future (was 30s)"),
    ({"ExpirationTTL": "48h"}, "ExpirationTime cannot be more than 24h0m0s in the future (was 48h0m0s)"),
    ({"ExpirationTime": "2001-01-01T00:00:00Z"}, "ExpirationTime cannot be before CreateTime"),
    ({"ExpirationTTL": "soon"}, "invalid duration"),
])
def test_a_lifetime_outside_consuls_bounds_is_refused(secured, body, message):
    answer = requests.put(f"http://{secured.address}/v1/acl/token", json=body, headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert answer.status_code == 400 and message in answer.text, answer.text


def test_acl_lists_are_blocking_queries(secured):
    """A watcher of the token list (as consul-template or an operator's tool keeps one) wakes when a
    token is made, and not before."""
    url, headers = f"http://{secured.address}/v1/acl/tokens", {"X-Consul-Token": TOKEN}
    index = int(requests.get(url, headers=headers, timeout=5).headers["X-Consul-Index"])
    for path in ("policies", "roles", "auth-methods", "binding-rules"):
        assert requests.get(f"http://{secured.address}/v1/acl/{path}", headers=headers, timeout=5).headers["X-Consul-Index"]
    answers: dict = {}
    watcher = threading.Thread(target=lambda: answers.update(r=requests.get(url, params={"index": index, "wait": "10s"},
                                                                            headers=headers, timeout=15)))
    started = time.monotonic()
    watcher.start()
    time.sleep(0.3)
    assert watcher.is_alive(), "the watcher answered before anything changed"
    made = secured.client(token=TOKEN).acl.token.create(description="wakes the watcher")
    watcher.join(10)
    assert time.monotonic() - started < 5
    assert made["AccessorID"] in {t["AccessorID"] for t in answers["r"].json()}
    assert int(answers["r"].headers["X-Consul-Index"]) > index
