"""HAProxy's maps kept by the controller: the file, then HAProxy's copy entry by entry on the
runtime API (`set map`, `add map`, `del map`), so no reload is needed and no whole map is ever
missing. The intentions map (intentions.py) and the inbound listener's instances registered beyond
the plan (reconcile.inbound_entries) are kept this way.
"""

from __future__ import annotations

from pathlib import Path

from meshspec.runtime.proxy.runtime_api import RuntimeApi

BATCH = 50  # runtime-API commands per connection (`;`-joined)


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
