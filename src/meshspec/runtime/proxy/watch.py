"""The controller's watch: one Consul blocking query after another per routed or tunnelled service.

`/v1/health/service/<name>?index=&wait=` returns when the service's health changes (or the wait
ends); each answer goes to `on_result`, each failure to `on_error`, then a retry with backoff. The
caller keeps the last-known-good endpoints: nothing is taken out while Consul does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from meshspec.common.durations import parse_duration
from meshspec.runtime.proxy.reconcile import Endpoint, parse_health

FIRST_BACKOFF, MAX_BACKOFF = 0.2, 5.0  # seconds between retries while Consul fails


async def blocking_get(session: aiohttp.ClientSession, url: str, index: int, wait: str) -> tuple[int, Any]:
    """One Consul blocking query: its X-Consul-Index and JSON body (raises unless HTTP 200)."""
    timeout = aiohttp.ClientTimeout(total=parse_duration(wait) + 10)
    async with session.get(url, params={"index": str(index), "wait": wait}, timeout=timeout) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        return int(response.headers.get("X-Consul-Index", "0") or 0), await response.json(content_type=None)


async def watch(session: aiohttp.ClientSession, consul: str, service: str, wait: str, mesh: str | None,
                on_result: Callable[[str, int, list[Endpoint]], None],
                on_error: Callable[[str, Exception], None]) -> None:
    """Watch `service` until cancelled. `consul`: base URL; `wait`: the blocking wait ("30s")."""
    index, backoff = 0, FIRST_BACKOFF
    url = f"{consul}/v1/health/service/{service}"
    while True:
        try:
            new_index, body = await blocking_get(session, url, index, wait)
            index = new_index if new_index >= index else 0  # an index going backwards resets (Consul's rule)
            backoff = FIRST_BACKOFF
            on_result(service, index, parse_health(body or [], mesh))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # keep last-known-good; retry with backoff
            on_error(service, err)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
