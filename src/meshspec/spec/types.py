"""Scalar types of the spec: durations, names, ports, pinned packages, placeholders."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from meshspec.common import durations

_DURATION = re.compile(r"^\d+(ms|s|m|h)$")  # the spec's durations: a whole number of one unit
# Go's longest duration (int64 nanoseconds, about 2562047h): Consul and HAProxy read none longer.
_MAX_MS = (2**63 - 1) // 1_000_000


def parse_duration(value: object) -> int:
    """'500ms' | '2s' | '1m' | '1h' -> milliseconds. Bare numbers are refused: their unit is a guess."""
    if isinstance(value, str) and _DURATION.match(value):
        seconds = durations.parse_duration(value)
        if seconds * 1000 > _MAX_MS:  # also the digits a float makes infinite
            shown = value if len(value) <= 24 else f"{value[:10]}...{value[-4:]} ({len(value)} characters)"
            raise ValueError(f"{shown!r} is longer than the longest duration Consul reads, {_MAX_MS // 3_600_000}h")
        return round(seconds * 1000)
    raise ValueError(f"expected a duration like '500ms', '2s', '1m' or '1h', got {value!r}")


def format_duration(ms: int) -> str:
    """Milliseconds -> the shortest exact duration string ('1500ms', '2s', '1m')."""
    return durations.format_duration(ms / 1000)


def _matching(pattern: str, what: str):
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


Duration = Annotated[int, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]
# Consul and DNS both want service names to be DNS labels.
ServiceName = Annotated[
    str, _matching(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a DNS label (lowercase letters, digits, '-'; at most 63)")
]
# A path prefix as HAProxy's path_beg matches it (no spaces, braces or quotes to escape).
PathPrefix = Annotated[str, _matching(r"/[A-Za-z0-9._~/-]*", "a path prefix ('/', then letters, digits, '._~/-')")]
# A host of the inventory by its name (`@local`, an SSH host) or one of its groups.
HostRef = Annotated[str, _matching(r"@?[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "a host or group name of the inventory")]
PortName = Annotated[str, _matching(r"[a-z][a-z0-9_]{0,30}", "a port name (lowercase letters, digits, '_')")]
UserName = Annotated[str, _matching(r"[a-z_][a-z0-9_-]{0,31}", "a system user's name, as useradd takes it "
                                                              "(lowercase letters, digits, '_', '-'; up to 32)")]
PipPin = Annotated[
    str,
    _matching(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[0-9A-Za-z.+!-]+", "a pinned pip requirement 'name==version'"),
]
NpmPin = Annotated[
    str,
    _matching(r"(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*@\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", "a pinned npm package 'name@x.y.z'"),
]
# Debian stable is itself the pin for apt; an explicit '=version' is allowed.
AptPackage = Annotated[
    str, _matching(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?", "a Debian package 'name' or 'name=version'")
]
MetaKey = Annotated[
    str, _matching(r"[A-Za-z0-9_-]{1,128}", "a Consul meta key (letters, digits, '_', '-'; at most 128)")
]
MetaValue = Annotated[str, Field(max_length=512)]
