"""ACLs as Consul enforces them with default_policy=deny and one management token.

The management token may do everything. No token means the anonymous token, which may do nothing:
single-object reads and all writes answer 403 with Consul's message; list reads are filtered (an
empty result plus `X-Consul-Results-Filtered-By-ACLs: true`). An unknown token answers
403 "ACL not found" everywhere.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from aiohttp import web

from meshspec.runtime.agent.errors import ConsulError

ANONYMOUS_ACCESSOR = "00000002-0000-0000-0000-000000000002"
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


@dataclass(frozen=True)
class Identity:
    accessor_id: str
    management: bool

    def require(self, resource: str, level: str, name: str | None = None) -> None:
        """Raise Consul's 403 unless this identity holds `resource:level` (on `name`)."""
        if self.management:
            return
        message = f"Permission denied: token with AccessorID '{self.accessor_id}' lacks permission '{resource}:{level}'"
        if name is not None:
            message += f' on "{name}"'
        raise ConsulError(403, message)

    def can(self, resource: str, level: str) -> bool:
        return self.management


ALLOW_ALL = Identity(accessor_id="00000000-0000-0000-0000-000000000000", management=True)
ANONYMOUS = Identity(accessor_id=ANONYMOUS_ACCESSOR, management=False)


def request_token(request: web.Request) -> str:
    """Consul's order: ?token=, then X-Consul-Token, then Authorization: Bearer."""
    token = request.query.get("token") or request.headers.get("X-Consul-Token", "")
    if not token:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return token.strip()


#: The agent's own tokens `PUT /v1/agent/token/<kind>` sets (in memory, as Consul without
#: enable_token_persistence); only `default` changes what this agent does: it stands for a request's
#: missing token.
AGENT_TOKEN_KINDS = ("default", "agent", "agent_recovery", "agent_master", "replication",
                     "config_file_service_registration", "dns")


class Acl:
    def __init__(self, management_token: str | None) -> None:
        self.enabled = bool(management_token)
        self._token = management_token or ""
        self.agent_tokens: dict[str, str] = {}
        # A stable accessor ID for messages and token/self, derived without revealing the secret.
        self._management = Identity(str(uuid.uuid5(uuid.NAMESPACE_OID, "meshspec:" + self._token)), True)

    def identify(self, request: web.Request) -> Identity:
        if not self.enabled:
            return ALLOW_ALL
        token = request_token(request) or self.agent_tokens.get("default", "")
        if not token:
            return ANONYMOUS
        if hmac.compare_digest(token.encode(), self._token.encode()):
            return self._management
        raise ConsulError(403, "ACL not found")
