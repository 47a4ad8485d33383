"""Steps about the frontend's dashboard, loaded in Debian's headless Chromium (driven by Playwright)
through the proxy's edge, as a user's browser reaches it."""

from __future__ import annotations

import json
import shutil

import pytest
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PageTimeout
from pytest_bdd import parsers, then

from meshspec.common import dashboard_queries
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


@then(parsers.parse('the dashboard\'s screenshot is saved as "{path}"'))
def _(dashboard_page, path):
    target = REPO / path
    target.parent.mkdir(parents=True, exist_ok=True)
    dashboard_page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000, f"{target}: {target.stat().st_size} bytes"
    print(f"screenshot: {target} ({target.stat().st_size} bytes)")
