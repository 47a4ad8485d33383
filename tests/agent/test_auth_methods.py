"""ACL auth methods, binding rules, login and logout through py-consul, with JWTs signed here by a
key whose public half the auth method holds."""

from __future__ import annotations

import time

import consul
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.integration

TOKEN = "auth-methods-test-management-token"
ISSUER = "https://ci.example.test"


def key_pair():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def signed(private, **claims) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": "consul", "iat": now, "exp": now + 300, **claims}, private, algorithm="RS256")


@pytest.fixture
def with_method(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    private, public = key_pair()
    c.acl.auth_method.create("ci", "jwt", config={
        "JWTValidationPubKeys": [public], "BoundIssuer": ISSUER, "BoundAudiences": ["consul"],
        "ClaimMappings": {"service": "service", "env": "env"}, "ListClaimMappings": {"groups": "groups"}},
        max_token_ttl="1h")
    return agent, c, private


def test_login_gets_a_token_bound_by_the_matching_rules(with_method):
    agent, c, private = with_method
    c.acl.policy.create("readers", rules={"key_prefix": {"shared/": {"policy": "read"}}})
    c.acl.binding_rule.create("ci", "service", "${value.service}", selector='value.env == "prod"')
    c.acl.binding_rule.create("ci", "policy", "readers", selector='"ops" in list.groups')
    c.acl.binding_rule.create("ci", "policy", "no-such-policy")  # binds nothing: the policy does not exist
    login = c.acl.login("ci", signed(private, service="billing", env="prod", groups=["ops", "dev"]), meta={"host": "ci-7"})
    assert login["AuthMethod"] == "ci" and login["Local"] is True and "ExpirationTime" in login
    assert login["ServiceIdentities"] == [{"ServiceName": "billing"}]
    assert [p["Name"] for p in login["Policies"]] == ["readers"]
    assert login["Description"] == 'token created via login: {"host": "ci-7"}'
    billing = agent.client(token=login["SecretID"])
    billing.agent.service.register("billing", service_id="billing-1", port=1)  # its service identity writes it
    with pytest.raises(consul.ACLPermissionDenied):
        billing.agent.service.register("payroll", service_id="payroll-1", port=2)
    assert [t["AccessorID"] for t in c.acl.token.list(authmethod="ci")] == [login["AccessorID"]]
    assert billing.acl.logout(login["SecretID"]) is True
    with pytest.raises(consul.ACLPermissionDenied):
        billing.agent.services()


def test_a_login_nothing_binds_or_a_bad_jwt_gets_no_token(with_method):
    agent, c, private = with_method
    c.acl.binding_rule.create("ci", "service", "${value.service}", selector='value.env == "prod"')
    other_private, _ = key_pair()
    refused = {
        "no rule matches": signed(private, service="billing", env="dev"),
        "another key signed it": signed(other_private, service="billing", env="prod"),
        "expired": jwt.encode({"iss": ISSUER, "aud": "consul", "exp": int(time.time()) - 600, "service": "b", "env": "prod"},
                              private, algorithm="RS256"),
        "another issuer": signed(private, iss="https://elsewhere.test", service="billing", env="prod"),
        "another audience": signed(private, aud="vault", service="billing", env="prod"),
    }
    before = len(c.acl.token.list())
    for why, bearer in refused.items():
        with pytest.raises(consul.ACLPermissionDenied):
            c.acl.login("ci", bearer)
    assert len(c.acl.token.list()) == before, "a refused login made a token"
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        c.acl.login("no-such-method", signed(private))


def test_logout_refuses_a_token_login_did_not_make(with_method):
    agent, c, _ = with_method
    answer = requests.post(f"http://{agent.address}/v1/acl/logout", headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert answer.status_code == 403


def test_methods_and_rules_are_read_listed_updated_and_deleted_with_their_tokens(with_method):
    agent, c, private = with_method
    rule = c.acl.binding_rule.create("ci", "service", "${value.service}")
    assert c.acl.auth_method.read("ci")["Config"]["BoundIssuer"] == ISSUER
    assert [m["Name"] for m in c.acl.auth_method.list()] == ["ci"] and "Config" not in c.acl.auth_method.list()[0]
    assert [r["ID"] for r in c.acl.binding_rule.list(auth_method="ci")] == [rule["ID"]]
    assert c.acl.binding_rule.update(rule["ID"], "ci", "node", "${value.service}")["BindType"] == "node"
    login = c.acl.login("ci", signed(private, service="web"))
    assert login["NodeIdentities"] == [{"NodeName": "web", "Datacenter": "dc1"}]
    c.acl.auth_method.delete("ci")
    assert c.acl.binding_rule.list() == [] and login["AccessorID"] not in {t["AccessorID"] for t in c.acl.token.list()}
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        agent.client(token=login["SecretID"]).agent.services()


@pytest.mark.parametrize("method_type, config, message", [
    ("kubernetes", {"Host": "https://k8s"}, "cannot reach"),
    ("jwt", {}, "exactly one of"),
    ("jwt", {"JWKSURL": "https://idp/keys"}, "need a network"),
    ("jwt", {"JWTValidationPubKeys": ["not a key"]}, "error parsing public key"),
    ("frob", {}, "Type should be one of"),
])
def test_a_bad_method_is_refused(make_agent, method_type, config, message):
    agent = make_agent(token=TOKEN)
    answer = requests.put(f"http://{agent.address}/v1/acl/auth-method", json={"Name": "m", "Type": method_type, "Config": config},
                          headers={"X-Consul-Token": TOKEN}, timeout=5)
    assert answer.status_code == 400 and message in answer.text, answer.text


def test_methods_need_acl_write_and_survive_a_restart(with_method):
    agent, c, private = with_method
    c.acl.binding_rule.create("ci", "service", "${value.service}")
    reader = agent.client(token=c.acl.token.create(policies_id=[c.acl.policy.create("acl-read", rules={"acl": "read"})["ID"]])["SecretID"])
    assert reader.acl.auth_method.read("ci")["Name"] == "ci"
    with pytest.raises(consul.ACLPermissionDenied):
        reader.acl.auth_method.delete("ci")
    agent.kill()
    agent.start()
    assert agent.client(token=TOKEN).acl.login("ci", signed(private, service="web"))["ServiceIdentities"] == [{"ServiceName": "web"}]
