"""Who may call whom: the mesh's intentions, as the deploy writes them to the registry.

Deny by default: a `* -> *` deny; an allow from each service to each service it `depends_on`; and
the spec's own `intentions`, which win over both for the pairs they state. Each destination's
intentions go to the registry as one `service-intentions` config entry (Consul's way of writing
them: its sources are the destination's intentions, and only they), so a second deploy converges
them; every description begins with the mesh's prefix, which is how the deploy knows its own.

Pure: the plan in, Consul's JSON out. The proxy enforces them (runtime.proxy.intentions).

Intentions whose source is a consumer (a caller at the edge, not a service of the registry) and
tool intentions (`tool:`) are not written to the registry: Consul states them as L7 permissions
matching headers, which an intention list of its API does not carry to the proxy's controller; the
proxy enforces them from haproxy.cfg (render.haproxy.tool_lines), so a change takes a deploy.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshspec.plan import Plan
from meshspec.render.acl import description_prefix
from meshspec.spec.models import WILDCARD, Intention


def mesh_intentions(plan: Plan) -> list[Intention]:
    stated = {(i.source, i.destination): i for i in plan.spec.intentions
              if i.tool is None and i.source not in consumer_names(plan)}
    derived = [Intention(source=s.name, destination=dep, action="allow", description=f"{s.name} depends on {dep}")
               for s in plan.spec.services for dep in s.depends_on]
    derived.append(Intention(source=WILDCARD, destination=WILDCARD, action="deny", description="deny by default"))
    wanted = dict(stated)
    for intention in derived:
        wanted.setdefault((intention.source, intention.destination), intention)
    return sorted(wanted.values(), key=lambda i: (i.destination, i.source))


def intention_entries(plan: Plan) -> list[dict]:
    """One service-intentions config entry per destination, as PUT /v1/config takes it."""
    prefix = description_prefix(plan)
    entries: dict[str, dict] = {}
    for i in mesh_intentions(plan):
        entry = entries.setdefault(i.destination, {"Kind": "service-intentions", "Name": i.destination, "Sources": []})
        entry["Sources"].append({"Name": i.source, "Action": i.action, "Description": prefix + (i.description or i.action)})
    return list(entries.values())


def consumer_names(plan: Plan) -> set[str]:
    return {c.name for c in plan.spec.consumers}


def consumer_denials(plan: Plan, services: list[str]) -> dict[str, list[str]]:
    """Which of `services` (the proxy's routes) each consumer may not call. A consumer's key lets it
    call every route unless an intention names it as the source: one for the service, else one for
    `*`, decides (the mesh's deny-by-default is for services, whose intentions the registry holds)."""
    stated = {(i.source, i.destination): i.action for i in plan.spec.intentions
              if i.tool is None and i.source in consumer_names(plan)}
    denied = {}
    for consumer in sorted(consumer_names(plan)):
        refused = [s for s in services if stated.get((consumer, s), stated.get((consumer, WILDCARD), "allow")) == "deny"]
        if refused:
            denied[consumer] = refused
    return denied


@dataclass(frozen=True)
class ToolPolicy:
    """Who may call one MCP tool of one service: `allow`/`deny` name callers (services or consumers),
    `others` is the `*` intention's action (None: the tool intentions say nothing of other callers)."""

    service: str
    tool: str
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    others: str | None


def tool_policies(plan: Plan) -> list[ToolPolicy]:
    grouped: dict[tuple[str, str], list[Intention]] = {}
    for i in plan.spec.intentions:
        if i.tool is not None:
            grouped.setdefault((i.destination, i.tool), []).append(i)
    return [ToolPolicy(service, tool,
                       allow=tuple(sorted(i.source for i in stated if i.action == "allow" and i.source != WILDCARD)),
                       deny=tuple(sorted(i.source for i in stated if i.action == "deny" and i.source != WILDCARD)),
                       others=next((i.action for i in stated if i.source == WILDCARD), None))
            for (service, tool), stated in sorted(grouped.items())]
