"""Intentions through py-consul: exact upsert/read/delete, listing, match and check with Consul's
precedence, the ACL default when nothing matches, `intentions` in service rules, and snapshots."""

from __future__ import annotations

import consul
import pytest
import requests

from meshspec.runtime.agent.routes_intentions import decide, precedence
from tests.agent.conftest import client_with_rules

pytestmark = pytest.mark.integration

TOKEN = "intentions-test-management-token"


def test_precedence_and_decisions_are_consuls():
    assert [precedence("web", "db"), precedence("*", "db"), precedence("web", "*"), precedence("*", "*")] == [9, 8, 6, 5]
    everything_denied = [{"SourceName": "*", "DestinationName": "*", "Action": "deny", "Precedence": 5}]
    web_to_db = [*everything_denied, {"SourceName": "web", "DestinationName": "db", "Action": "allow", "Precedence": 9}]
    assert decide(web_to_db, "web", "db", default_allow=False) is True  # the exact allow beats the * deny
    assert decide(web_to_db, "api", "db", default_allow=True) is False  # only the * deny matches
    assert decide([], "api", "db", default_allow=False) is False


def test_intentions_are_kept_matched_and_checked(make_agent):
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    assert c.connect.intentions.upsert("web", "db", action="allow", description="web reads db") is True
    assert c.connect.intentions.upsert("*", "db", action="deny") is True
    assert c.connect.intentions.upsert("web", "*", action="allow") is True
    exact = c.connect.intentions.read("web", "db")
    assert (exact["Action"], exact["Precedence"], exact["Description"]) == ("allow", 9, "web reads db")
    assert c.connect.intentions.upsert("web", "db", action="deny") is True  # an upsert, not a second one
    assert c.connect.intentions.read("web", "db")["ID"] == exact["ID"]
    assert c.connect.intentions.read("web", "db")["Action"] == "deny"

    listed = c.connect.intentions.list()
    assert [(i["SourceName"], i["DestinationName"]) for i in listed] == [("web", "db"), ("*", "db"), ("web", "*")]
    matched = c.connect.intentions.match("destination", "db")["db"]
    assert [(i["SourceName"], i["Precedence"]) for i in matched] == [("web", 9), ("*", 8), ("web", 6)]  # web -> * too

    assert c.connect.intentions.check("web", "db") is False  # the exact deny
    assert c.connect.intentions.check("web", "cache") is True  # web -> * allow
    assert c.connect.intentions.check("api", "db") is False  # * -> db deny
    assert c.connect.intentions.check("api", "cache") is False  # nothing matches: ACLs' default deny
    assert c.connect.intentions.delete("web", "db") is True
    assert requests.get(f"http://{agent.address}/v1/connect/intentions/exact?source=web&destination=db",
                        headers={"X-Consul-Token": TOKEN}, timeout=5).status_code == 404


def test_without_acls_nothing_matching_means_allowed(agent):
    assert agent.client().connect.intentions.check("api", "cache") is True


def test_bad_intentions_are_refused(make_agent):
    agent = make_agent(token=TOKEN)
    url = f"http://{agent.address}/v1/connect/intentions/exact"
    headers = {"X-Consul-Token": TOKEN}
    missing = requests.put(f"{url}?source=web", json={"Action": "allow"}, headers=headers, timeout=5)
    assert (missing.status_code, missing.text) == (400, "required query parameter 'destination' not set")
    bad = requests.put(f"{url}?source=web&destination=db", json={"Action": "maybe"}, headers=headers, timeout=5)
    assert bad.status_code == 400 and "Action must be set to 'allow' or 'deny'" in bad.text
    assert agent.client(token=TOKEN).connect.intentions.list() == []


def test_service_rules_grant_intentions_on_their_destination(make_agent):
    agent = make_agent(token=TOKEN)
    admin = agent.client(token=TOKEN)
    c = client_with_rules(agent, TOKEN, "db-owner", 'service "db" { policy = "write" intentions = "write" }\n'
                                                    'service "web" { policy = "read" }')
    assert c.connect.intentions.upsert("web", "db", action="allow") is True
    with pytest.raises(consul.ACLPermissionDenied):
        c.connect.intentions.upsert("db", "web", action="allow")  # web: intentions read only
    admin.connect.intentions.upsert("db", "web", action="allow")
    admin.connect.intentions.upsert("db", "cache", action="allow")
    assert [(i["SourceName"], i["DestinationName"]) for i in c.connect.intentions.list()] == [
        ("db", "web"), ("web", "db")]  # db -> cache is on a destination this token cannot read


def test_the_legacy_endpoints_name_an_intention_by_its_id(make_agent):
    """POST creates and answers the ID; GET, PUT and DELETE by ID work on the intentions the exact
    endpoints see; a second intention for the same pair is refused."""
    agent = make_agent(token=TOKEN)
    c = agent.client(token=TOKEN)
    base, headers = f"http://{agent.address}/v1/connect/intentions", {"X-Consul-Token": TOKEN}
    made = requests.post(base, json={"SourceName": "web", "DestinationName": "db", "Action": "allow",
                                     "Description": "legacy", "Meta": {"by": "test"}}, headers=headers, timeout=5)
    assert made.status_code == 200, made.text
    ixn_id = made.json()["ID"]
    read = requests.get(f"{base}/{ixn_id}", headers=headers, timeout=5).json()
    assert (read["SourceName"], read["DestinationName"], read["Action"], read["Meta"]) == ("web", "db", "allow", {"by": "test"})
    assert c.connect.intentions.read("web", "db")["ID"] == ixn_id
    again = requests.post(base, json={"SourceName": "web", "DestinationName": "db", "Action": "deny"}, headers=headers, timeout=5)
    assert again.status_code == 500 and again.text.startswith("duplicate intention found: web => db (ID: " + ixn_id)
    changed = requests.put(f"{base}/{ixn_id}", json={"SourceName": "web", "DestinationName": "db", "Action": "deny"},
                           headers=headers, timeout=5)
    assert changed.status_code == 200 and c.connect.intentions.check("web", "db") is False
    assert requests.put(f"{base}/nope", json={"SourceName": "a", "DestinationName": "b", "Action": "deny"},
                        headers=headers, timeout=5).status_code == 500
    reader = client_with_rules(agent, TOKEN, "db-reader", 'service "db" { policy = "read" }')
    denied = requests.delete(f"{base}/{ixn_id}", headers={"X-Consul-Token": reader.token}, timeout=5)
    assert denied.status_code == 403
    assert requests.get(f"{base}/{ixn_id}", headers={"X-Consul-Token": reader.token}, timeout=5).status_code == 200
    assert requests.delete(f"{base}/{ixn_id}", headers=headers, timeout=5).json() is True
    assert requests.get(f"{base}/{ixn_id}", headers=headers, timeout=5).status_code == 404
    assert c.connect.intentions.list() == []
