"""No shipped probe passes the seed's liar on its own merits: every service's probe, aimed at a
listener that answers anything with `{"status":"healthy"}`, fails before who answered is even asked
(the owner proof, which fails it too, is left out here)."""

from __future__ import annotations

import pytest

from meshspec.runtime.probes.protocols import run
from tests.probes.shipped import SPEC, shipped_probe


@pytest.mark.parametrize("service", [s.name for s in SPEC.services])
def test_the_liar_fails_every_shipped_probe(service, liar):
    # The liar takes any credentials: a probe that sends some (mesh-proxy's stats page) is sent without.
    result = run({**shipped_probe(service, port=liar), "credentials_file": None}, timeout=3)
    assert not result.ok, result.output
