"""Blocking queries: `?index=N&wait=D` parks a request until its topics change or the wait ends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshspec.common.durations import parse_duration
from meshspec.runtime.agent.errors import bad_request

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0

Interest = Callable[[set[str]], bool]


@dataclass(frozen=True)
class BlockingParams:
    index: int
    wait: float  # seconds, jitter included


def parse_blocking(query: Any) -> BlockingParams:
    """Consul's rules: no index (or 0) means answer now; wait defaults to 5 min, is capped at
    10 min, and gets up to wait/16 of jitter so many watchers do not return in lockstep."""
    raw_index = query.get("index", "")
    try:
        index = int(raw_index) if raw_index else 0
        if index < 0:
            raise ValueError
    except ValueError:
        raise bad_request("Invalid index") from None
    raw_wait = query.get("wait", "")
    try:
        wait = parse_duration(raw_wait) if raw_wait else DEFAULT_WAIT
    except ValueError:
        raise bad_request("Invalid wait time") from None
    wait = min(max(wait, 0.0), MAX_WAIT)
    return BlockingParams(index, wait + random.random() * wait / 16)


class Hub:
    """Waiters registered by interest; every committed write notifies the ones it concerns."""

    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future, Interest] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def notify(self, topics: set[str]) -> None:
        for future, interested in list(self._waiters.items()):
            if not future.done() and interested(topics):
                future.set_result(True)

    async def wait(self, interested: Interest, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiters[future] = interested
        timer = loop.call_later(timeout, _settle, future)
        try:
            await future
        finally:
            timer.cancel()
            self._waiters.pop(future, None)


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(False)


def on_topics(*names: str) -> Interest:
    wanted = frozenset(names)
    return lambda topics: not wanted.isdisjoint(topics)


def on_prefix(prefix: str) -> Interest:
    return lambda topics: any(t.startswith(prefix) for t in topics)


async def run_blocking(
    hub: Hub, params: BlockingParams, interested: Interest, compute: Callable[[], tuple[int, Any]]
) -> tuple[int, Any]:
    """Answer at once unless the client's index is current; then re-evaluate on each relevant
    change and answer when the index moves past the client's, or when the wait runs out."""
    index, result = compute()
    if params.index == 0 or index > params.index:
        return index, result
    loop = asyncio.get_running_loop()
    deadline = loop.time() + params.wait
    while (remaining := deadline - loop.time()) > 0:
        await hub.wait(interested, remaining)
        index, result = compute()
        if index > params.index:
            break
    return index, result
