"""frontend: the mesh status page and dashboard. Serves the pages and their assets, and forwards `/api/...`
to backend-api.

    meshspec serve frontend --host H --port P --api http://BACKEND
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from aiohttp import web

log = logging.getLogger("meshspec.frontend")
STATIC = Path(__file__).with_name("frontend_static")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"})
API_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=3)


class Frontend:
    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/", self.page("index.html"))
        app.router.add_get("/dashboard", self.page("dashboard.html"))
        app.router.add_static("/static/", STATIC, show_index=False)
        # The page only reads: GET (and HEAD) are forwarded, nothing that writes (backend-api's
        # relay through the mesh and its job queue are no status page's to offer).
        app.router.add_get("/api/{tail:.*}", self.forward)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application):
        self.session = aiohttp.ClientSession(auto_decompress=False)
        yield
        await self.session.close()

    @staticmethod
    def page(name: str):
        async def serve(request: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        return serve

    async def forward(self, request: web.Request) -> web.Response:
        """GET `/api/...` → backend-api's `/api/...`, query and headers kept."""
        url = f"{self.api_url}{request.rel_url.path_qs}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self.session.request(request.method, url, headers=headers,
                                            allow_redirects=False, timeout=API_TIMEOUT) as resp:
                body = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=resp.status, body=body, headers=out)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("backend-api unreachable: %s", exc)
            return web.json_response({"error": f"backend-api unreachable: {exc.__class__.__name__}"}, status=502)


def frontend_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8082,
    api: Annotated[str, typer.Option("--api", envvar="MESH_API_URL", help="backend-api base URL.")] = "http://127.0.0.1:8080",
) -> None:
    """Serve the mesh status page."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(Frontend(api).app(), host=host, port=port, print=None, access_log=None, shutdown_timeout=5)


if __name__ == "__main__":
    typer.run(frontend_command)
