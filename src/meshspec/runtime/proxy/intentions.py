"""The controller's side of intentions: the registry decides who may call whom, HAProxy enforces it.

HAProxy cannot ask the registry per request, so the controller keeps a map in it (haproxy.cfg's
`intention_lines` read it): for each routed service, the decision for every source an intention
names (`<source>/<service>`) and for any other caller (`*/<service>`), each taken as Consul takes
it, the most specific matching intention winning, and deny where none matches (the ACL default of
a mesh: default-deny). A blocking query on `/v1/connect/intentions` brings each change; the map
file is rewritten first (a reload or restart loads it), then HAProxy's copy is changed entry by
entry on the runtime API (maps.install_map): no reload, no window where a whole map is missing.
"""

from __future__ import annotations

from meshspec.runtime.agent.routes_intentions import WILDCARD, decide

ANY_OTHER = ""  # a source no intention names: only `*` sources match it


def intention_map(intentions: list[dict], destinations: set[str]) -> dict[str, str]:
    """`<source>/<destination>` -> allow | deny, for every destination and every named source, and
    `*/<destination>` for the sources no intention names."""
    sources = sorted({i["SourceName"] for i in intentions if i["SourceName"] != WILDCARD})
    decisions = {}
    for destination in sorted(destinations):
        for source, key in [*((s, s) for s in sources), (ANY_OTHER, WILDCARD)]:
            allowed = decide(intentions, source, destination, default_allow=False)
            decisions[f"{key}/{destination}"] = "allow" if allowed else "deny"
    return decisions
