"""Steps about the frontend's dashboard, loaded in Debian's headless Chromium (driven by Playwright)
through the proxy's edge, as a user's browser reaches it."""

from __future__ import annotations

import json
import secrets
import shutil

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PageTimeout
from pytest_bdd import parsers, then, when

from meshspec.common import dashboard_queries
from tests.bdd.mesh_target import wait_for
from tests.integration.meshrun import REPO

# Debian's chromium, never a browser Playwright downloads. As root it needs no sandbox; on a
# machine without internet its background services would only flood refused connections.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PANELS = [panel.id for panel in dashboard_queries.PANELS]

# What one chart drew, read from its SVG: the points of its line and how many stand above its
# zero line (the chart's y grows downwards; `data-*` name the panel and the service).
CHART_JS = """([panel, service]) => {
  const svg = document.querySelector(`svg.chart[data-panel="${panel}"][data-service="${service}"]`);
  if (!svg) return null;
  const path = svg.querySelector("path");
  const zero = parseFloat(svg.querySelector("line.axis").getAttribute("y1"));
  const ys = path ? [...path.getAttribute("d").matchAll(/[ML]\\S+ (\\S+)/g)].map((m) => parseFloat(m[1])) : [];
  return { points: ys.length, above_zero: ys.filter((y) => y < zero - 0.5).length,
           now: svg.parentElement.querySelector(".now").textContent };
}"""


@pytest.fixture
def dashboard_page(world) -> Page:
    """The dashboard as the frontend serves it behind the proxy's edge, in a fresh Chromium profile."""
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is not installed (Debian package chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000},
                                    extra_http_headers=world.target.edge_headers)
            answer = page.goto(world.target.proxy_url + "/svc/frontend/dashboard")
            assert answer is not None and answer.ok, f"the dashboard: HTTP {answer.status if answer else '-'}"
            yield page
        finally:
            browser.close()


def _charts(page: Page, service: str) -> dict[str, dict | None]:
    return {panel: page.evaluate(CHART_JS, [panel, service]) for panel in PANELS}


@then(parsers.parse('the status page lists each instance of "{service}" at its address, on its host'))
def _(world, service):
    """The status page in Chromium: the service's row names each planned instance's address and host,
    as the registry's entries (whose Meta the deploy wrote) say, whichever host the registry is on."""
    planned = world.target.instances_of(service)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(extra_http_headers=world.target.edge_headers)
            answer = page.goto(world.target.proxy_url + "/svc/frontend/")
            assert answer is not None and answer.ok, f"the status page: HTTP {answer.status if answer else '-'}"
            cell = page.locator(f'#services tr[data-service="{service}"] td').nth(3)
            cell.wait_for(timeout=30_000)
            shown = cell.inner_text()
        finally:
            browser.close()
    missing = [f"{i.address}:{i.port} on {i.host.label}" for i in planned
               if f"{i.address}:{i.port} on {i.host.label}" not in shown]
    assert not missing, f"the status page's row of {service} says {shown!r}; missing {missing}"


@then(parsers.parse('within {seconds:d} s the dashboard draws a line for "{service}" on every panel'))
def _(dashboard_page, seconds, service):
    # The page redraws every 15 s; Prometheus sees the traffic one scrape and a query step later,
    # and the error ratio has points only where the service answered.
    ready = f"""() => {{
      const drawn = {json.dumps(PANELS)}.map((panel) => ({CHART_JS})([panel, {json.dumps(service)}]));
      return drawn.every((chart) => chart && chart.points >= 2) && drawn[{PANELS.index("requests")}].above_zero > 0;
    }}"""
    try:
        dashboard_page.wait_for_function(ready, timeout=seconds * 1000, polling=1000)
    except PageTimeout:
        pass  # the assertions below say what was drawn instead
    drawn = _charts(dashboard_page, service)
    error = dashboard_page.locator("#error")
    said = error.text_content() if error.is_visible() else "no error"
    empty = [panel for panel, chart in drawn.items() if not chart or chart["points"] < 2]
    assert not empty, f"within {seconds} s, {service}'s charts without a line: {empty} ({drawn}); the page says {said}"
    assert drawn["requests"]["above_zero"], f"no request into {service} drawn within {seconds} s: {drawn}"
    print(f"{service}: " + " ".join(f"{panel} {chart['points']} points ({chart['above_zero']} above zero), now "
                                    f"{chart['now']};" for panel, chart in drawn.items()))
    print(dashboard_page.locator("#source").text_content())


@then(parsers.parse('the dashboard\'s topology labels "{service}" with its request rate'))
def _(dashboard_page, service):
    labels = dashboard_page.locator("#topology text").all_text_contents()
    found = [label for label in labels if label.startswith(f"{service} ← ") and label.endswith("req/s")]
    assert found, f"no rate beside {service} in the topology ({len(labels)} labels: {labels[:5]} ...)"
    print(f"topology: {found[0]}")


@then(parsers.parse('within {seconds:d} s the dashboard\'s topology labels the line from "{caller}" to "{service}" '
                    'with the caller\'s request rate'))
def _(dashboard_page, seconds, caller, service):
    """The page itself is such traffic: at every refresh backend-api reads Prometheus through the
    proxy's mTLS listener, with its certificate."""
    selector = f'#topology text.edge-rate[data-edge="{caller}->{service}"]'
    try:
        dashboard_page.wait_for_selector(selector, timeout=seconds * 1000)
    except PageTimeout:
        pass  # the assertion below says what was drawn instead
    found = dashboard_page.locator(selector).all_text_contents()
    drawn = dashboard_page.locator("#topology text.edge-rate").evaluate_all(
        "(texts) => texts.map((t) => `${t.dataset.edge} ${t.textContent}`)")
    assert found and found[0].endswith("req/s"), \
        f"no rate on the line {caller} -> {service} within {seconds} s; lines with a rate: {drawn}"
    print(f"topology: {caller} -> {service} at {found[0]}; {len(drawn)} lines with a rate: {', '.join(drawn[:6])}")


@then(parsers.parse('the dashboard\'s screenshot is saved as "{path}"'))
def _(dashboard_page, path):
    target = REPO / path
    target.parent.mkdir(parents=True, exist_ok=True)
    dashboard_page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000, f"{target}: {target.stat().st_size} bytes"
    print(f"screenshot: {target} ({target.stat().st_size} bytes)")


@when(parsers.parse("I enqueue {count:d} sleep jobs of {seconds:d} s at backend-api through the proxy, each with "
                    "a sampled trace of its own, and they are done"))
def _(world, count, seconds):
    """A job's trace runs on to the end of the worker's run: seconds of sleep rank it above the
    quick requests the mesh's checks and the other scenarios trace (a read of the whole registry,
    the slowest of them, takes about a second)."""
    api = f"{world.target.proxy_url}/svc/backend-api/api/v1/mesh"
    traces = {}
    with httpx.Client(timeout=30, trust_env=False, headers=world.target.edge_headers) as http:
        for _ in range(count):
            trace_id = secrets.token_hex(16)
            answer = http.post(f"{api}/enqueue", json={"kind": "sleep", "payload": {"seconds": seconds}},
                               headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
            assert answer.status_code == 202, answer.text[:300]
            traces[trace_id] = answer.json()["id"]
        for trace_id, job in traces.items():
            done = wait_for(lambda: http.get(f"{api}/results/{job}").json()["status"] in ("done", "failed"),
                            count * seconds + 30, interval=0.5)
            assert done, f"job {job} (trace {trace_id}) not done within {count * seconds + 30} s"
    world.counters["slow_traces"] = traces
    print(f"{count} sleep jobs of {seconds} s done, traces " + ", ".join(traces))


@then(parsers.parse("within {seconds:d} s the dashboard lists one of those traces among the slowest traced requests"))
def _(dashboard_page, world, seconds):
    mine = list(world.counters["slow_traces"])
    links = ", ".join(f'tr[data-trace="{t}"] a.trace-link' for t in mine)
    try:
        dashboard_page.wait_for_selector(links, timeout=seconds * 1000)  # the list redraws every 15 s
    except PageTimeout:
        listed = dashboard_page.locator("#slow-traces tbody tr").all_inner_texts()
        raise AssertionError(f"none of {len(mine)} traces listed within {seconds} s; the list: {listed}; "
                             f"{dashboard_page.locator('#phoenix').text_content()}") from None
    row = dashboard_page.locator(links).first.locator("xpath=ancestor::tr")
    world.counters["listed"] = row.get_attribute("data-trace")
    print("listed: " + " | ".join(row.locator("td").all_inner_texts()))
    print(dashboard_page.locator("#phoenix").text_content())


@then("its link opens Phoenix's page of that trace, at the trace store's address, showing the trace and its entry span")
def _(dashboard_page, world):
    trace_id = world.counters["listed"]
    row = dashboard_page.locator(f'tr[data-trace="{trace_id}"]')
    link, entry = row.locator("a.trace-link"), row.locator("td").nth(3).inner_text()
    store = world.target.instances_of(world.target.plan.spec.tracing.store)[0]
    href = link.get_attribute("href")
    assert href.startswith(f"http://{store.address}:{store.port}/projects/") and href.endswith(f"/traces/{trace_id}"), href
    with dashboard_page.context.expect_page() as opened:
        link.click()
    phoenix = opened.value
    # Phoenix's UI draws the trace from its GraphQL API after the page loads.
    try:
        phoenix.get_by_text(trace_id, exact=True).first.wait_for(timeout=30_000)
        phoenix.get_by_text(entry, exact=True).first.wait_for(timeout=10_000)
        # the entry span's details, drawn last: the attribute naming the instance that made it
        phoenix.get_by_text("service.instance.id", exact=True).first.wait_for(timeout=10_000)
    except PageTimeout:
        raise AssertionError(f"{phoenix.url} does not show trace {trace_id} with its span {entry!r} within 40 s; "
                             f"it shows: {phoenix.locator('body').inner_text()[:600]!r}") from None
    world.counters["phoenix_page"] = phoenix
    print(f"Phoenix shows trace {trace_id} (entry span {entry!r}) at {phoenix.url}")


@then(parsers.parse('Phoenix\'s page of that trace is saved as "{path}"'))
def _(world, path):
    target = REPO / path
    target.parent.mkdir(parents=True, exist_ok=True)
    world.counters["phoenix_page"].screenshot(path=str(target))
    assert target.stat().st_size > 10_000, f"{target}: {target.stat().st_size} bytes"
    print(f"screenshot: {target} ({target.stat().st_size} bytes)")
