"""Config entries checked as Consul checks them before it stores one. Pure.

Every kind: the top-level keys it has (in Consul's CamelCase or snake_case; anything else is
Consul's `invalid config key`); sameness groups are Consul Enterprise's. The kinds the agent reads
itself are checked further: a resolver's timeouts, subset names, default subset, failover subsets
and redirect; a splitter's weights that sum to 100; and, for a router or a splitter, a protocol
that permits them (an HTTP-family one, from service-defaults or proxy-defaults). The keys nested
inside (a gateway's listeners, a route's rules) are kept as written (README).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.discovery_chain import HTTP_PROTOCOLS
from meshspec.runtime.agent.errors import ConsulError

Lookup = Callable[[str, str], "dict[str, Any] | None"]  # (kind, name) -> the stored entry, or None
COMMON = {"kind", "name", "meta", "createindex", "modifyindex"}
KEYS = {
    "service-defaults": {"protocol", "mode", "transparentproxy", "mutualtlsmode", "meshgateway", "expose",
                         "externalsni", "upstreamconfig", "destination", "maxinboundconnections",
                         "localconnecttimeoutms", "localrequesttimeoutms", "balanceinboundconnections",
                         "ratelimits", "envoyextensions"},
    "proxy-defaults": {"config", "mode", "transparentproxy", "mutualtlsmode", "meshgateway", "expose", "accesslogs",
                       "envoyextensions", "failoverpolicy", "prioritizebylocality"},
    "service-resolver": {"connecttimeout", "requesttimeout", "defaultsubset", "subsets", "redirect", "failover",
                         "loadbalancer", "prioritizebylocality"},
    "service-router": {"routes"},
    "service-splitter": {"splits"},
    "mesh": {"transparentproxy", "allowenablingpermissivemutualtls", "tls", "http", "peering", "validateclusters"},
    "service-intentions": {"sources", "jwt"},
    "ingress-gateway": {"tls", "listeners", "defaults"},
    "terminating-gateway": {"services"},
    "exported-services": {"services"},
    "api-gateway": {"listeners", "status"},
    "http-route": {"parents", "rules", "hostnames", "status"},
    "tcp-route": {"parents", "services", "status"},
    "jwt-provider": {"jsonwebkeyset", "issuer", "audiences", "locations", "forwarding", "clockskewseconds",
                     "cacheconfig"},
    "inline-certificate": {"certificate", "privatekey"},
    "file-system-certificate": {"certificate", "privatekey"},
}
ENTERPRISE_KINDS = {"sameness-group": "sameness-groups"}
SUBSET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _key(raw: str) -> str:
    return raw.lower().replace("_", "")


def _decode_error(problems: list[str]) -> ConsulError:
    """Consul's multierror from decoding, behind the HTTP handler's prefix."""
    listed = "".join(f"\t* {p}\n" for p in problems)
    count = f"{len(problems)} error{'s' if len(problems) > 1 else ''} occurred"
    return ConsulError(400, f"Request decoding failed: {count}:\n{listed}\n")


def check_entry(kind: str, name: str, body: dict[str, Any], lookup: Lookup) -> None:
    """Raise Consul's error for an entry it would refuse to store."""
    if kind in ENTERPRISE_KINDS:
        raise ConsulError(400, f"Request decoding failed: {ENTERPRISE_KINDS[kind]} are an enterprise-only feature")
    unknown = [k for k in body if _key(k) not in COMMON | KEYS[kind]]
    if unknown:
        raise _decode_error([f'invalid config key "{k}"' for k in unknown])
    fields = {_key(k): v for k, v in body.items()}
    if kind == "service-resolver":
        _check_resolver(fields)
    elif kind == "service-splitter":
        _check_splitter(fields)
    if kind in ("service-router", "service-splitter"):
        protocol = _protocol(name, lookup)
        if protocol not in HTTP_PROTOCOLS:
            raise ConsulError(500, f'discovery chain "{name}" uses a protocol "{protocol}" that does not permit '
                                   f'advanced routing or splitting behavior')


def _protocol(service: str, lookup: Lookup) -> str:
    defaults = {_key(k): v for k, v in (lookup("service-defaults", service) or {}).items()}
    proxy = {_key(k): v for k, v in (lookup("proxy-defaults", "global") or {}).items()}
    config = {str(k).lower(): v for k, v in (proxy.get("config") or {}).items()}
    return str(defaults.get("protocol") or config.get("protocol") or "tcp").lower()


def _check_resolver(fields: dict[str, Any]) -> None:
    for key, label in (("connecttimeout", "ConnectTimeout"), ("requesttimeout", "RequestTimeout")):
        try:
            seconds = parse_duration(fields.get(key))
        except ValueError as err:
            raise ConsulError(400, f"Request decoding failed: {label}: {err}") from None
        if seconds < 0:
            raise ConsulError(500, f"Bad {label} '{fields[key]}', must be >= 0")
    subsets = fields.get("subsets") or {}
    for subset in subsets:
        if not SUBSET_NAME.match(str(subset)):
            raise ConsulError(500, f'Subset "{subset}" is invalid')
    default = fields.get("defaultsubset")
    if default and default not in subsets:
        raise ConsulError(500, f'Bad DefaultSubset "{default}": not a valid subset')
    if fields.get("redirect") and fields.get("failover"):
        raise ConsulError(500, "Redirect and Failover cannot both be set")
    for subset in fields.get("failover") or {}:
        if subset != "*" and subset not in subsets:
            raise ConsulError(500, f'Bad Failover["{subset}"]: not a valid subset')


def _check_splitter(fields: dict[str, Any]) -> None:
    splits = fields.get("splits") or []
    if not splits:
        raise ConsulError(500, "no splits configured")
    weights = [float({_key(k): v for k, v in s.items()}.get("weight") or 0) if isinstance(s, dict) else 0.0 for s in splits]
    for weight in weights:
        if not 0 <= weight <= 100:
            raise ConsulError(500, f"split weight must be between 0 and 100: {weight:.2f}")
    if abs(sum(weights) - 100) > 0.01:
        raise ConsulError(500, f"the sum of all split weights must be 100, not {sum(weights):.2f}")
