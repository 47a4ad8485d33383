"""The nonce of a probe's round trip: `{nonce}` in a spec's health.http texts stays in the rendered
probe, and each run of the probe (runtime.probes.protocols) puts a fresh random value in its place,
so only a service that stored this run's object can answer with it."""

from __future__ import annotations

import secrets

NAME = "nonce"
MARK = "{" + NAME + "}"


def fresh() -> str:
    return secrets.token_hex(8)


def fill(text: str | None, nonce: str) -> str | None:
    return text.replace(MARK, nonce) if text else text
