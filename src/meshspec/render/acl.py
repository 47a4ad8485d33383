"""The Consul ACL tokens a mesh's programs hold, each with only what its holder needs.

One token per service: it writes the service's own registration and checks, reads the nodes, and
reads the services it depends on, or every service when the spec says `registry: {read: all}`.
One token per host for its checker: it writes the checks of that host's services. The management
token is the registry's own and the operator's (deploy, verify); no program gets it.

Pure: names, descriptions and rules in Consul's JSON form of its rule language (what py-consul
sends, and Consul parses as HCL). The secrets are not here: the deploy derives
each from the management token (converge.ops.consul), so they are in no rendered text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshspec.plan import Instance, Plan

# Consul's rule for policy names (agent/structs/acl.go: validPolicyName).
_NOT_IN_POLICY_NAME = re.compile(r"[^A-Za-z0-9_-]")


Rules = dict[str, dict[str, dict[str, str]]]


@dataclass(frozen=True)
class RegistryToken:
    name: str  # the token's policy's name; also what its secret is derived from
    description: str
    rules: Rules  # {"service": {"web": {"policy": "write"}}, ...}
    path: str  # the file on the host that holds its secret (mode 0600)


def _rules(*grants: tuple[str, str, str]) -> Rules:
    """(resource, name, level) grants as Consul's JSON rules."""
    rules: Rules = {}
    for resource, name, level in grants:
        rules.setdefault(resource, {})[name] = {"policy": level}
    return rules


def policy_name(plan: Plan, holder: str) -> str:
    """A name of this mesh's (a token's policy's, and what its secret is derived from)."""
    return _NOT_IN_POLICY_NAME.sub("-", f"meshspec-{plan.spec.mesh.name}-{holder}")[:128]


def description_prefix(plan: Plan) -> str:
    """How the descriptions of this mesh's tokens begin: the deploy prunes only those."""
    return f"meshspec {plan.spec.mesh.name}: "


def service_rules(plan: Plan, service: str) -> Rules:
    spec = plan.service(service)
    reads = ([("service_prefix", "", "read")] if spec.registry.read == "all"
             else [("service", dep, "read") for dep in sorted(set(spec.depends_on) - {service})])
    # The proxy's controller holds the proxy's identity too: it fetches the proxy's certificate from
    # the Connect CA (which asks service:write on the service it names) and rotates it in HAProxy.
    drives = ([("service", plan.spec.proxy.service, "write")]
              if service == plan.spec.proxy.controller and plan.spec.proxy.service else [])
    agents = [("agent_prefix", "", "read")] if spec.registry.agent == "read" else []
    return _rules(("service", service, "write"), *drives, *reads, *agents, ("node_prefix", "", "read"))


def service_token(plan: Plan, service: str) -> RegistryToken:
    return RegistryToken(policy_name(plan, f"service-{service}"), f"{description_prefix(plan)}service {service}",
                         service_rules(plan, service), str(plan.layout.service_token_file(service)))


def checker_token(plan: Plan, host_label: str, instances: list[Instance]) -> RegistryToken:
    """The checker updates the TTL check of each instance on its host: Consul asks service:write."""
    writes = [("service", name, "write") for name in sorted({i.service for i in instances})]
    return RegistryToken(policy_name(plan, f"checker-{host_label}"), f"{description_prefix(plan)}checker of {host_label}",
                         _rules(*writes, ("node_prefix", "", "read")), str(plan.layout.checker_token_file))


def host_tokens(plan: Plan, host_label: str, instances: list[Instance]) -> list[RegistryToken]:
    """The tokens whose files a host keeps: its checker's, and one per service it runs."""
    services = sorted({i.service for i in instances})
    return [checker_token(plan, host_label, instances), *(service_token(plan, s) for s in services)]


def mesh_tokens(plan: Plan) -> list[RegistryToken]:
    """Every token of the mesh, which the registry must hold: those of every host."""
    hosts = sorted({i.host.label for i in plan.instances})
    found = {t.name: t for h in hosts for t in host_tokens(plan, h, [i for i in plan.instances if i.host.label == h])}
    return sorted(found.values(), key=lambda t: t.name)
