"""The controller's side of intentions: the registry decides who may call whom, HAProxy enforces it.

HAProxy cannot ask the registry per request, so the controller keeps a map in it (haproxy.cfg's
`intention_lines` read it): for each routed service, the decision for every source an intention
names (`<source>/<service>`) and for any other caller (`*/<service>`), each taken as Consul takes
it, the most specific matching intention winning, and deny where none matches (the ACL default of
a mesh: default-deny). A blocking query on `/v1/connect/intentions` brings each change; the map
file is rewritten first (a reload or restart loads it), then HAProxy's copy is changed entry by
entry on the runtime API (`set map`, `add map`, `del map`): no reload, no window where a whole map
is missing.
"""

from __future__ import annotations

from pathlib import Path

from meshspec.runtime.agent.routes_intentions import WILDCARD, decide
from meshspec.runtime.proxy.runtime_api import RuntimeApi

ANY_OTHER = ""  # a source no intention names: only `*` sources match it
BATCH = 50  # runtime-API commands per connection (`;`-joined)


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


def parse_map(text: str) -> dict[str, str]:
    """`show map <file>`: one `<id> <key> <value>` line per entry."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0].startswith("0x"):
            out[words[1]] = words[2]
    return out


def map_commands(path: str, current: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """The runtime-API commands that turn HAProxy's map `current` into `wanted`."""
    commands = [f"set map {path} {key} {value}" for key, value in sorted(wanted.items())
                if key in current and current[key] != value]
    commands += [f"add map {path} {key} {value}" for key, value in sorted(wanted.items()) if key not in current]
    commands += [f"del map {path} {key}" for key in sorted(set(current) - set(wanted))]
    return commands


def install_map(api: RuntimeApi, path: Path, wanted: dict[str, str]) -> int:
    """The file, then HAProxy's copy; returns how many entries changed in HAProxy. The file is
    rewritten in place: it is the controller's, in the proxy's directory, which is root's; HAProxy
    reads it only when the controller itself reloads it (this same loop), or when it restarts."""
    path.write_text("".join(f"{key} {value}\n" for key, value in sorted(wanted.items())))
    commands = map_commands(str(path), parse_map(api.send(f"show map {path}")), wanted)
    for start in range(0, len(commands), BATCH):
        api.command(";".join(commands[start:start + BATCH]))
    return len(commands)
