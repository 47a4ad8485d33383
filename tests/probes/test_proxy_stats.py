"""mesh-proxy's probe reads HAProxy's own stats page, which lists the data plane's frontend: the
shipped spec's probe passes against HAProxy running the shipped plan's haproxy.cfg, and fails
against the seed's liar, naming what the page lacked. The page asks credentials (the deploy's,
which the probe reads from their file); HAProxy's metrics for Prometheus ask none."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from meshspec.runtime.probes.protocols import run
from tests.probes.shipped import plan_in, shipped_probe
from tests.proxy.harness import HAProxy


@pytest.fixture(scope="module")
def proxy_plan(tmp_path_factory) -> Iterator:
    plan = plan_in(tmp_path_factory.mktemp("mesh"))
    haproxy = HAProxy(plan).start()
    yield plan
    haproxy.stop()


def test_haproxy_stats_list_the_backends(proxy_plan):
    found = shipped_probe("mesh-proxy", plan=proxy_plan)
    stats = proxy_plan.instances_of("mesh-proxy")[0].ports["stats"]
    assert f":{stats}/stats;csv" in found["url"]  # its stats listener, not the data plane's port
    result = run(found, timeout=5)
    assert result.ok and "mesh,FRONTEND" in result.output, result.output


def test_the_liar_has_no_backends(proxy_plan, liar):
    result = run(shipped_probe("mesh-proxy", port=liar, plan=proxy_plan), timeout=5)  # it takes any credentials
    assert not result.ok and "mesh,FRONTEND" in result.output and '{"status":"healthy"}' in result.output, \
        result.output


@pytest.mark.parametrize("credentials", [None, "meshspec:not-the-password"])
def test_the_stats_page_refuses_a_reader_without_its_credentials(proxy_plan, tmp_path, credentials):
    found = shipped_probe("mesh-proxy", plan=proxy_plan)
    if credentials:
        (tmp_path / "wrong").write_text(credentials)
    result = run({**found, "credentials_file": str(tmp_path / "wrong") if credentials else None}, timeout=5)
    assert not result.ok and "answered HTTP 401" in result.output, result.output
    metrics = httpx.get(found["url"].split("/stats")[0] + "/metrics", trust_env=False)  # Prometheus' scrape needs none
    assert metrics.status_code == 200 and "haproxy_process_" in metrics.text
