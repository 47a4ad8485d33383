"""The aiohttp application and the process lifecycle (ready line, clean exit on SIGTERM/SIGINT)."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal

from aiohttp import web

from meshspec.runtime.agent import (
    routes_acl,
    routes_agent,
    routes_auth,
    routes_catalog,
    routes_config,
    routes_connect_ca,
    routes_event,
    routes_intentions,
    routes_kv,
    routes_operator,
    routes_session,
    routes_snapshot,
    routes_txn,
)
from meshspec.runtime.agent.core import Agent, Config
from meshspec.runtime.agent.http import AGENT_KEY, WAKE_CACHE, WakeCache, consul_middleware

log = logging.getLogger("meshspec.agent")
MAX_BODY = 4 * 1024 * 1024


def make_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[consul_middleware], client_max_size=MAX_BODY)
    app[AGENT_KEY] = agent
    app[WAKE_CACHE] = WakeCache()
    app[routes_event.EVENTS] = routes_event.EventLog()
    for module in (routes_acl, routes_agent, routes_auth, routes_catalog, routes_config, routes_connect_ca, routes_event,
                   routes_intentions, routes_kv, routes_operator, routes_session, routes_snapshot, routes_txn):
        app.add_routes(module.routes)
    return app


def raise_open_files_limit() -> None:
    """Each parked blocking query holds a socket: allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config) -> None:
    raise_open_files_limit()
    agent = Agent(config)
    runner = web.AppRunner(make_app(agent), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        # Bind before starting check runners, so a taken port fails fast and runs nothing.
        await web.TCPSite(runner, config.bind, config.port, backlog=4096, reuse_address=True).start()
        await agent.start()
        await _until_signalled(agent, config)
    finally:
        await runner.cleanup()
        await agent.stop()


async def _until_signalled(agent: Agent, config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "meshspec agent ready: http://%s:%d node=%s datacenter=%s acl=%s index=%d trust_domain=%s ca_root=%s",
        config.bind, config.port, config.node_name, config.datacenter,
        "enabled" if agent.acl.enabled else "disabled", agent.store.index, agent.ca.trust_domain, agent.ca.root_id,
    )
    signalled = asyncio.ensure_future(stop.wait())
    left = asyncio.ensure_future(agent.leaving.wait())
    await asyncio.wait((signalled, left), return_when=asyncio.FIRST_COMPLETED)
    for waiting in (signalled, left):
        waiting.cancel()
    log.info("meshspec agent %s", "leaving (/v1/agent/leave)" if agent.leaving.is_set() else "shutting down")
