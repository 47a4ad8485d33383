"""Durations as Consul and Go write them ("10s", "500ms", "1m30s", "120000ms"): the one parser
and formatter of the spec, the registrations, the agent and the proxy controller."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_MS_PER_UNIT = {"h": 3_600_000, "m": 60_000, "s": 1000}  # shortest exact rendering, largest unit first


def parse_duration(value: str | int | float | None) -> float:
    """Seconds in `value`; numbers are nanoseconds as in Consul's JSON. Raises ValueError."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {value!r}")
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    text = str(value).strip()
    if text == "0":
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body) or not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def format_duration(seconds: float) -> str:
    """The shortest exact rendering to the millisecond ('1500ms', '2s', '1m', '2h'); it parses back."""
    ms = round(seconds * 1000)
    for unit, size in _MS_PER_UNIT.items():
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def go_duration(seconds: float) -> str:
    """As Go's time.Duration.String() writes it ("200ms", "10s", "1m0s", "1h30m0s"): what Consul
    answers for a duration it stored."""
    ns = round(seconds * 1e9)
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size or unit == "ns":
                return sign + (f"{ns / size:.9f}".rstrip("0").rstrip(".") if ns else "0") + (unit if ns else "s")
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".")
    return sign + (f"{hours}h{minutes}m" if hours else f"{minutes}m" if minutes else "") + f"{secs}s"
