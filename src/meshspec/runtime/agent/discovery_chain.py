"""A service's discovery chain compiled from its config entries, as Consul's compiler shapes it.

Pure: `compile_chain` reads entries through a lookup and returns the `Chain` object of
`GET /v1/discovery-chain/<service>`. What it follows, in one namespace and partition (`default`):
the protocol (service-defaults, else proxy-defaults' `protocol`, else tcp); a service-router's
routes and a service-splitter's splits, only for an HTTP-family protocol (Consul refuses to write
them for tcp); and a service-resolver's connect timeout, subsets and default subset, redirect to
another service, and failover to other services or subsets. Every target is a catalog query: the
service, its subset's filter, in this datacenter. A request's overrides (protocol, connect
timeout, mesh gateway mode) replace what the entries say and mark the chain with a
CustomizationHash, as Consul's do. Not followed: other datacenters' and peers' targets (one
datacenter), load-balancer policies and request timeouts (kept only as written).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from meshspec.common.durations import go_duration, parse_duration

Lookup = Callable[[str, str], "dict[str, Any] | None"]  # (kind, name) -> the entry as written, or None
NS = PARTITION = "default"
HTTP_PROTOCOLS = ("http", "http2", "grpc")
DEFAULT_CONNECT_TIMEOUT = 5.0


def _lower(raw: Any) -> dict[str, Any]:
    """Entry fields case-insensitively, as Consul decodes them (ConnectTimeout or connect_timeout)."""
    return {str(k).lower().replace("_", ""): v for k, v in raw.items()} if isinstance(raw, dict) else {}


class _Compiler:
    def __init__(self, service: str, lookup: Lookup, datacenter: str, trust_domain: str,
                 overrides: dict[str, Any]) -> None:
        self.service, self.lookup, self.dc, self.trust_domain = service, lookup, datacenter, trust_domain
        self.overrides = overrides
        self.nodes: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, dict[str, Any]] = {}
        self.customized = False

    def entry(self, kind: str, name: str) -> dict[str, Any]:
        found = self.lookup(kind, name)
        if found is not None and kind != "service-defaults":
            self.customized = True
        return _lower(found)

    def protocol(self, service: str) -> str:
        if self.overrides.get("overrideprotocol"):
            return str(self.overrides["overrideprotocol"]).lower()
        defaults = _lower(self.lookup("service-defaults", service))
        proxy = _lower(_lower(self.lookup("proxy-defaults", "global")).get("config"))
        return str(defaults.get("protocol") or proxy.get("protocol") or "tcp").lower()

    # ---- targets and resolvers ------------------------------------------------------------------

    def target(self, service: str, subset: str, resolver: dict[str, Any]) -> str:
        target_id = f"{subset + '.' if subset else ''}{service}.{NS}.{PARTITION}.{self.dc}"
        if target_id not in self.targets:
            subsets = resolver.get("subsets") or {}  # keyed by subset names as written
            definition = _lower(subsets.get(subset)) if subset else {}
            sni = f"{subset + '.' if subset else ''}{service}.{NS}.{self.dc}.internal.{self.trust_domain}"
            self.targets[target_id] = {
                "ID": target_id, "Service": service, **({"ServiceSubset": subset} if subset else {}),
                "Namespace": NS, "Partition": PARTITION, "Datacenter": self.dc,
                "MeshGateway": {"Mode": mode} if (mode := _lower(self.overrides.get("overridemeshgateway")).get("mode")) else {},
                "Subset": {k: v for k, v in (("Filter", definition.get("filter")),
                                             ("OnlyPassing", definition.get("onlypassing"))) if v},
                "TransparentProxy": {}, "ConnectTimeout": go_duration(self._connect_timeout(resolver)),
                "SNI": sni, "Name": sni,
            }
        return target_id

    def _connect_timeout(self, resolver: dict[str, Any]) -> float:
        return (parse_duration(self.overrides.get("overrideconnecttimeout")) or parse_duration(resolver.get("connecttimeout"))
                or DEFAULT_CONNECT_TIMEOUT)

    def resolver_node(self, service: str, subset: str = "", seen: tuple[str, ...] = ()) -> str:
        """The key of the resolver node for `service` (and subset), following redirects."""
        resolver = self.entry("service-resolver", service)
        redirect = _lower(resolver.get("redirect"))
        if redirect and service not in seen:
            to = str(redirect.get("service") or service)
            return self.resolver_node(to, str(redirect.get("servicesubset") or ""), (*seen, service))
        subset = subset or str(resolver.get("defaultsubset") or "")
        target = self.target(service, subset, resolver)
        key = f"resolver:{target}"
        if key not in self.nodes:
            compiled: dict[str, Any] = {"ConnectTimeout": go_duration(self._connect_timeout(resolver)),
                                        **({} if resolver else {"Default": True}), "Target": target}
            failover = resolver.get("failover") or {}  # keyed by subset names as written, or "*"
            chosen = _lower(failover.get(subset) or failover.get("*"))
            if chosen:
                to = str(chosen.get("service") or service)
                to_subset = str(chosen.get("servicesubset") or "")
                compiled["Failover"] = {"Targets": [self.target(to, to_subset, self.entry("service-resolver", to))]}
            self.nodes[key] = {"Type": "resolver", "Name": target, "Resolver": compiled}
        return key

    # ---- splitters and routers -----------------------------------------------------------------

    def splitter_or_resolver(self, service: str, subset: str = "") -> str:
        splitter = self.entry("service-splitter", service) if not subset else {}
        splits = splitter.get("splits") if splitter else None
        if not splits:
            return self.resolver_node(service, subset)
        key = f"splitter:{service}.{NS}.{PARTITION}"
        compiled = []
        for raw in splits:
            split = _lower(raw)
            to, to_subset = str(split.get("service") or service), str(split.get("servicesubset") or "")
            # a split back to the same service goes to its resolver, not to this splitter again
            nxt = self.resolver_node(to, to_subset) if to == service else self.splitter_or_resolver(to, to_subset)
            compiled.append({"Definition": raw, "Weight": float(split.get("weight") or 0), "NextNode": nxt})
        self.nodes[key] = {"Type": "splitter", "Name": f"{service}.{NS}.{PARTITION}", "Splits": compiled}
        return key

    def start(self) -> str:
        if self.protocol(self.service) not in HTTP_PROTOCOLS:
            return self.resolver_node(self.service)
        router = self.entry("service-router", self.service)
        if not router.get("routes"):
            return self.splitter_or_resolver(self.service)
        routes = []
        for raw in router["routes"]:
            destination = _lower(_lower(raw).get("destination"))
            to = str(destination.get("service") or self.service)
            routes.append({"Definition": raw, "NextNode": self.splitter_or_resolver(to, str(destination.get("servicesubset") or ""))})
        catch_all = {"Match": {"HTTP": {"PathPrefix": "/"}},
                     "Destination": {"Service": self.service, "Partition": PARTITION, "Namespace": NS}}
        routes.append({"Definition": catch_all, "NextNode": self.splitter_or_resolver(self.service)})
        key = f"router:{self.service}.{NS}.{PARTITION}"
        self.nodes[key] = {"Type": "router", "Name": f"{self.service}.{NS}.{PARTITION}", "Routes": routes}
        return key


def compile_chain(service: str, lookup: Lookup, datacenter: str, trust_domain: str,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`overrides`: a POST's OverrideProtocol, OverrideConnectTimeout (a valid duration) and
    OverrideMeshGateway, in any case."""
    given = {k: v for k, v in _lower(overrides).items() if v}
    compiler = _Compiler(service, lookup, datacenter, trust_domain, given)
    start = compiler.start()
    meta = _lower(lookup("service-defaults", service)).get("meta")
    chain: dict[str, Any] = {"ServiceName": service, "Namespace": NS, "Partition": PARTITION, "Datacenter": datacenter}
    if given:
        chain["CustomizationHash"] = hashlib.sha256(json.dumps(given, sort_keys=True).encode()).hexdigest()[:8]
    if not compiler.customized:
        chain["Default"] = True
    chain["Protocol"] = compiler.protocol(service)
    if meta:
        chain["ServiceMeta"] = meta
    chain |= {"StartNode": start, "Nodes": compiler.nodes, "Targets": compiler.targets}
    return chain
