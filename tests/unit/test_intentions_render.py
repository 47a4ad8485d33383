"""Intentions: the ones the deploy writes (render.intentions) and the map the controller keeps in
HAProxy from the registry's (runtime.proxy.intentions). Pure."""

from __future__ import annotations

import dataclasses

from meshspec.render.acl import description_prefix
from meshspec.render.haproxy import config_shape, render_haproxy
from meshspec.render.intentions import ToolPolicy, consumer_denials, intention_entries, mesh_intentions, tool_policies
from meshspec.runtime.proxy.intentions import intention_map
from meshspec.runtime.proxy.maps import map_commands, parse_map
from tests.unit.test_acl_tokens import shipped


def registry_form(source: str, destination: str, action: str) -> dict:
    precedence = {(False, False): 9, (True, False): 8, (False, True): 6, (True, True): 5}[(source == "*", destination == "*")]
    return {"SourceName": source, "DestinationName": destination, "Action": action, "Precedence": precedence}


def test_deny_by_default_each_dependency_allowed_and_the_spec_s_own_win():
    plan = shipped()
    wanted = {(i.source, i.destination): i.action for i in mesh_intentions(plan)}
    assert wanted[("*", "*")] == "deny"
    assert wanted[("frontend", "backend-api")] == "allow"  # frontend depends_on backend-api
    assert wanted[("mcp-gateway", "*")] == "allow"  # stated in the spec
    assert ("frontend", "postgresql") not in wanted
    consumers = {c.name for c in plan.spec.consumers}  # their intentions and tool intentions stay out of the registry
    stated = [i for i in plan.spec.intentions if i.tool is None and i.source not in consumers]
    assert len(wanted) == sum(len(s.depends_on) for s in plan.spec.services) + len(stated) + 1


def test_one_config_entry_per_destination_each_source_described_as_the_mesh_s():
    plan = shipped()
    entries = {e["Name"]: e for e in intention_entries(plan)}
    assert entries["*"]["Kind"] == "service-intentions"
    assert {s["Name"]: s["Action"] for s in entries["*"]["Sources"]} == {
        "*": "deny", "mcp-gateway": "allow", "backend-api": "allow", "task-worker": "allow"}
    assert all(s["Description"].startswith(description_prefix(plan)) for e in entries.values() for s in e["Sources"])


def test_tool_intentions_group_by_service_and_tool():
    plan = shipped()
    assert tool_policies(plan) == [ToolPolicy("claude-task-runner", "submit_task", allow=("backend-api", "operator"),
                                              deny=(), others="deny")]
    assert all("Permissions" not in s for e in intention_entries(plan) for s in e["Sources"])


def test_the_proxy_reads_the_tool_only_where_tool_intentions_name_the_service():
    plan = shipped()
    config = render_haproxy(plan)
    assert config.count("wait-for-body") == 1
    assert "wait-for-body time 2s if { var(txn.svc) -m str claude-task-runner } METH_POST" in config
    assert ('"message":"tool intention denies %[var(txn.who)] -> claude-task-runner.submit_task"}}\' if { var(txn.svc) '
            '-m str claude-task-runner } { var(txn.mcp_tool) -m str submit_task } !{ var(txn.who) -m str backend-api operator }'
            in config)
    # a change of a tool intention is a change of the shape, which the controller reloads for
    spec = plan.spec.model_copy(update={"intentions": plan.spec.intentions[:-1]})
    assert config_shape(plan)["hash"] != config_shape(dataclasses.replace(plan, spec=spec))["hash"]


def test_a_consumer_calls_every_route_but_those_its_own_intentions_deny():
    plan = shipped()
    routes = ["backend-api", "claude-task-runner", "files", "mcp-gateway"]
    assert consumer_denials(plan, routes) == {  # their * deny, but their allows
        "alert-webhook": ["claude-task-runner", "files", "mcp-gateway"], "ide": ["backend-api", "files"]}
    front = render_haproxy(plan)
    assert ('http-request deny deny_status 403 content-type text/plain lf-string "intention denies ide -> %[var(txn.svc)]" '
            'if !{ ssl_fc } { var(txn.consumer) -m str ide } { var(txn.svc) -m str ') in front
    assert not any("intention denies operator" in line for line in front.splitlines())  # no intention names it


def test_the_map_takes_the_most_specific_intention_and_denies_where_none_matches():
    intentions = [registry_form("*", "*", "deny"), registry_form("gw", "*", "allow"), registry_form("gw", "db", "deny"),
                  registry_form("*", "web", "allow"), registry_form("web", "api", "allow")]
    decisions = intention_map(intentions, {"api", "db", "web"})
    assert decisions == {
        "gw/api": "allow", "gw/db": "deny", "gw/web": "allow",  # gw -> db, exact, beats gw -> *
        "web/api": "allow", "web/db": "deny", "web/web": "allow",  # * -> web beats * -> *
        "*/api": "deny", "*/db": "deny", "*/web": "allow",  # any caller no intention names
    }
    assert intention_map([], {"api"}) == {"*/api": "deny"}  # no intention at all: the ACL default, deny


def test_the_map_changes_entry_by_entry():
    shown = "0x55d0c2f0a8d0 gw/api allow\n0x55d0c2f0a9e0 */api deny\n0x55d0c2f0aaf0 old/api allow\n"
    current = parse_map(shown)
    assert current == {"gw/api": "allow", "*/api": "deny", "old/api": "allow"}
    assert map_commands("/m.map", current, {"gw/api": "deny", "*/api": "deny", "new/api": "allow"}) == [
        "set map /m.map gw/api deny", "add map /m.map new/api allow", "del map /m.map old/api"]
