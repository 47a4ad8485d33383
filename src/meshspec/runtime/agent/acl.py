"""ACLs as Consul enforces them with default_policy=deny: tokens, policies in Consul's rule
language, service and node identities, and the authorizer every endpoint asks.

A request's token (`?token=`, `X-Consul-Token`, `Authorization: Bearer`, else the agent's
`default` token, else the anonymous token) resolves to an `Identity`. The management token the
agent starts with holds the builtin `global-management` policy: everything. Any other token may
do what the rules of its policies and identities grant: for a named resource (`service "web"`,
`key_prefix "app/"`, ...) an exact rule wins over a prefix rule, the longest prefix over a
shorter one, and where several policies name the same thing, deny beats write beats read (Consul's
precedence). Nothing granted means denied. Single-object reads and all writes answer 403 with
Consul's message; list reads drop what the token may not read (`X-Consul-Results-Filtered-By-ACLs`).
An unknown token answers 403 "ACL not found" everywhere.
"""

from __future__ import annotations

import functools
import hmac
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import hcl
from aiohttp import web

from meshspec.runtime.agent.errors import ConsulError

ANONYMOUS_ACCESSOR = "00000002-0000-0000-0000-000000000002"
ANONYMOUS_SECRET = "anonymous"
MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
MANAGEMENT_POLICY_NAME = "global-management"
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
#: Resources named by a rule (`service "web"`, `service_prefix "we"`); each also has a `_prefix` form.
NAMED = ("agent", "event", "key", "node", "query", "service", "session")
#: Resources with one level for everything (`operator = "read"`).
SCALAR = ("acl", "keyring", "mesh", "operator", "peering")
#: Levels on intentions, named by their destination: not a rule of their own but the `intentions`
#: field of a service rule (read by default when the service is read or written, as in Consul).
DERIVED = ("intention",)
PRECEDENCE = {"deny": 3, "write": 2, "read": 1, "list": 0}  # when policies disagree, the higher wins

#: The agent's own tokens `PUT /v1/agent/token/<kind>` sets (in memory, as Consul without
#: enable_token_persistence); only `default` changes what this agent does: it stands for a request's
#: missing token.
AGENT_TOKEN_KINDS = ("default", "agent", "agent_recovery", "agent_master", "replication",
                     "config_file_service_registration", "dns")


# ---- rules ----------------------------------------------------------------------------------------


@dataclass
class Rules:
    """What one or more policies grant: levels by exact name, by prefix, and for scalar resources."""

    exact: dict[str, dict[str, str]] = field(default_factory=lambda: {r: {} for r in NAMED + DERIVED})
    prefix: dict[str, dict[str, str]] = field(default_factory=lambda: {r: {} for r in NAMED + DERIVED})
    scalar: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Rules) -> None:
        for mine, theirs in ((self.exact, other.exact), (self.prefix, other.prefix)):
            for resource, names in theirs.items():
                for name, level in names.items():
                    mine[resource][name] = _stronger(mine[resource].get(name), level)
        for resource, level in other.scalar.items():
            self.scalar[resource] = _stronger(self.scalar.get(resource), level)

    def level(self, resource: str, name: str | None) -> str | None:
        """The level granted on `resource` (`name` for a named one): exact, else longest prefix."""
        if resource in SCALAR:
            return self.scalar.get(resource)
        if name is None:
            return None
        if name in self.exact[resource]:
            return self.exact[resource][name]
        matches = [p for p in self.prefix[resource] if name.startswith(p)]
        return self.prefix[resource][max(matches, key=len)] if matches else None


def _stronger(a: str | None, b: str) -> str:
    return b if a is None or PRECEDENCE[b] > PRECEDENCE[a] else a


@functools.lru_cache(maxsize=1024)
def parse_rules(text: str) -> Rules:
    """Consul's rule language (HCL, or its JSON form) → Rules; ValueError says what is wrong.
    Cached by text: every request of a token resolves its policies' rules, and HCL parsing is the
    costly part. Callers only read the result (`Rules.merge` reads its argument)."""
    rules = Rules()
    if not text.strip():
        return rules
    try:
        parsed = hcl.loads(text)
    except ValueError as err:
        raise ValueError(f"Failed to parse ACL rules: {err}") from None
    for key, value in parsed.items():
        resource, is_prefix = (key[: -len("_prefix")], True) if key.endswith("_prefix") else (key, False)
        if key in SCALAR:
            rules.scalar[key] = _level(value, key, allow_list=False)
        elif resource in NAMED:
            if not isinstance(value, dict):
                raise ValueError(f"Failed to parse ACL rules: {key} needs a name and a block: {key} \"NAME\" {{ policy = ... }}")
            for name, block in value.items():
                if not isinstance(block, dict) or "policy" not in block:
                    raise ValueError(f'Failed to parse ACL rules: {key} "{name}" has no policy')
                level = _level(block["policy"], f'{key} "{name}"', allow_list=resource == "key")
                table = rules.prefix if is_prefix else rules.exact
                table[resource][str(name)] = level
                if resource == "service":
                    intentions = block.get("intentions") or ("deny" if level == "deny" else "read")
                    table["intention"][str(name)] = _level(intentions, f'{key} "{name}" intentions', allow_list=False)
        else:
            raise ValueError(f"Failed to parse ACL rules: unknown resource {key!r}; expected one of "
                             f"{', '.join(sorted([*SCALAR, *NAMED, *(r + '_prefix' for r in NAMED)]))}")
    return rules


def _level(value: Any, where: str, allow_list: bool) -> str:
    allowed = ("read", "write", "deny", "list") if allow_list else ("read", "write", "deny")
    if value not in allowed:
        raise ValueError(f"Failed to parse ACL rules: Invalid {where} policy: {value!r}; expected one of "
                         f"{', '.join(allowed)}")
    return value


def service_identity_rules(service: str) -> Rules:
    """Consul's synthetic policy of a service identity: write its own service (and its sidecar),
    read every service and node (to discover what it depends on)."""
    return parse_rules(f'service "{service}" {{ policy = "write" }}\n'
                       f'service "{service}-sidecar-proxy" {{ policy = "write" }}\n'
                       'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }')


def node_identity_rules(node: str) -> Rules:
    return parse_rules(f'node "{node}" {{ policy = "write" }}\nservice_prefix "" {{ policy = "read" }}')


# ---- identities -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    accessor_id: str
    management: bool
    rules: Rules = field(default_factory=Rules, compare=False)

    def allows(self, resource: str, level: str, name: str | None = None) -> bool:
        if self.management:
            return True
        granted = self.rules.level(resource, name)
        if granted is None or granted == "deny":
            return False
        if level == "write":
            return granted == "write"
        if level == "list":
            return granted in ("list", "read", "write")
        return granted in ("read", "write")

    def require(self, resource: str, level: str, name: str | None = None) -> None:
        """Raise Consul's 403 unless this identity holds `resource:level` (on `name`)."""
        if self.allows(resource, level, name):
            return
        message = f"Permission denied: token with AccessorID '{self.accessor_id}' lacks permission '{resource}:{level}'"
        if name is not None and resource not in SCALAR:
            message += f' on "{name}"'
        raise ConsulError(403, message)

    def can(self, resource: str, level: str, name: str | None = None) -> bool:
        return self.allows(resource, level, name)


ALLOW_ALL = Identity(accessor_id="00000000-0000-0000-0000-000000000000", management=True)


def request_token(request: web.Request) -> str:
    """Consul's order: ?token=, then X-Consul-Token, then Authorization: Bearer."""
    token = request.query.get("token") or request.headers.get("X-Consul-Token", "")
    if not token:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return token.strip()


def expired(token: dict[str, Any], now: float) -> bool:
    """A token past its ExpirationTime: Consul resolves, reads and lists it no more."""
    when = token.get("ExpirationTime")
    return bool(when) and datetime.fromisoformat(when).timestamp() <= now


class Acl:
    """Resolves a request's token to an Identity, from the management token and the store's
    tokens and policies (`store.acl_tokens` by AccessorID, `store.acl_policies` by ID)."""

    def __init__(self, management_token: str | None, store: Any) -> None:
        self.enabled = bool(management_token)
        self.management_secret = management_token or ""
        # A stable accessor ID for messages and token/self, derived without revealing the secret.
        self.management_accessor = str(uuid.uuid5(uuid.NAMESPACE_OID, "meshspec:" + self.management_secret))
        self._management = Identity(self.management_accessor, True)
        self.store = store
        self.agent_tokens: dict[str, str] = {}

    def identify(self, request: web.Request) -> Identity:
        if not self.enabled:
            return ALLOW_ALL
        return self.resolve(request_token(request) or self.agent_tokens.get("default", "") or ANONYMOUS_SECRET)

    def resolve(self, secret: str) -> Identity:
        if hmac.compare_digest(secret.encode(), self.management_secret.encode()):
            return self._management
        token = next((t for t in self.store.acl_tokens.values() if hmac.compare_digest(t["SecretID"].encode(), secret.encode())),
                     None)
        if token is None or expired(token, time.time()):
            if secret == ANONYMOUS_SECRET:
                return Identity(ANONYMOUS_ACCESSOR, False)  # the anonymous token, never stored: no rules
            raise ConsulError(403, "ACL not found")
        return self.identity_of(token)

    def identity_of(self, token: dict[str, Any]) -> Identity:
        """What a token holds: its policies and identities, and those of each role it links."""
        rules = Rules()
        grants = [token, *(role for link in token.get("Roles") or []
                           if (role := self.store.acl_roles.get(link["ID"])) is not None)]
        management = False
        for grant in grants:
            for link in grant.get("Policies") or []:
                if link["ID"] == MANAGEMENT_POLICY_ID:
                    management = True
                elif (policy := self.store.acl_policies.get(link["ID"])) is not None:
                    rules.merge(parse_rules(policy["Rules"]))
            for service in grant.get("ServiceIdentities") or []:
                rules.merge(service_identity_rules(service["ServiceName"]))
            for node in grant.get("NodeIdentities") or []:
                rules.merge(node_identity_rules(node["NodeName"]))
        return Identity(token["AccessorID"], management, rules)
