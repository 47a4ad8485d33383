"""A round-trip probe proves a store stores: the shipped spec's Alertmanager and Pushgateway probes
post an object carrying a fresh nonce, read it back, and (Pushgateway) delete it, against the real
Debian programs. The seed's liar answers 200 to every step and still fails: it cannot know the nonce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshspec.runtime.probes.protocols import run
from tests.probes.shipped import PLAN, shipped_probe, start
from tests.support import wait_until

ALERTMANAGER, PUSHGATEWAY = "/usr/bin/prometheus-alertmanager", "/usr/bin/prometheus-pushgateway"

if not (Path(ALERTMANAGER).exists() and Path(PUSHGATEWAY).exists()):
    pytest.skip("needs Debian's prometheus-alertmanager and prometheus-pushgateway", allow_module_level=True)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Iterator[dict[str, int]]:
    """The real Alertmanager and Pushgateway at the ports the plan gives them."""
    root = tmp_path_factory.mktemp("stores")
    (root / "alertmanager.yml").write_text("route: {receiver: mesh}\nreceivers: [{name: mesh}]\n")
    ports = {name: PLAN.instances_of(name)[0].port for name in ("alertmanager", "pushgateway")}
    procs = [start([ALERTMANAGER, f"--config.file={root / 'alertmanager.yml'}", f"--storage.path={root / 'am'}",
                    f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address="],
                   ports["alertmanager"], root / "alertmanager.log"),
             start([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{ports['pushgateway']}",
                    f"--persistence.file={root / 'pushgateway.data'}"], ports["pushgateway"], root / "pushgateway.log")]
    yield ports
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_alertmanager_keeps_the_alert_the_probe_posted(stores):
    first, second = run(shipped_probe("alertmanager"), timeout=5), run(shipped_probe("alertmanager"), timeout=5)
    assert first.ok and second.ok, (first.output, second.output)
    assert first.output.startswith("after POST /api/v2/alerts: GET ") and '"nonce":"' in first.output, first.output
    assert first.output != second.output  # each run reads back its own nonce


def test_the_pushgateway_round_trip_leaves_no_group_behind(stores):
    result = run(shipped_probe("pushgateway"), timeout=5)
    assert result.ok and 'nonce="' in result.output, result.output
    # The Pushgateway accepts a DELETE (202) and applies it a moment later.
    wait_until(lambda: "meshspec_probe_pushed" not in httpx.get(f"http://127.0.0.1:{stores['pushgateway']}/metrics").text,
               5, what="the probe's group deleted")


def test_a_failed_after_step_fails_the_probe(stores):
    found = shipped_probe("pushgateway")
    found["after"] = [{**found["after"][0], "url": found["after"][0]["url"].replace("/metrics/job/", "/nowhere/")}]
    result = run(found, timeout=5)
    assert not result.ok and "; then DELETE " in result.output and "answered HTTP 404" in result.output, result.output


@pytest.mark.parametrize("service", ["alertmanager", "pushgateway"])
def test_the_liar_cannot_answer_the_nonce(service, liar):
    result = run(shipped_probe(service, port=liar), timeout=5)
    assert not result.ok and "without" in result.output and '{"status":"healthy"}' in result.output, result.output
