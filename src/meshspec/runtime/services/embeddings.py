"""The embeddings service, in place of Ollama: real MiniLM inference behind Ollama's and OpenAI's
embedding APIs.

The model runs in a worker process started with the service's own venv (`--python`), so torch
and sentence-transformers stay out of meshspec's environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import typer
from aiohttp import web

WORKER = Path(__file__).with_name("embeddings_worker.py")
HEALTH_TEXT = "meshspec embeddings health check"
log = logging.getLogger("meshspec.embeddings")


class Model:
    """One worker process; requests take turns (the model is CPU-bound anyway)."""

    def __init__(self, python: str):
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict = {}
        self._lock = asyncio.Lock()
        self._next_id = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.python, str(WORKER), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the model worker ({self.python}) exited before it was ready")
        self.info = json.loads(line)
        log.info("model %s ready, dimension %s", self.info["model"], self.info["dimension"])

    async def embed(self, texts: list[str]) -> list[list[float]]:
        async with self._lock:
            self._next_id += 1
            self.proc.stdin.write((json.dumps({"id": self._next_id, "texts": texts}) + "\n").encode())
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the model worker exited")
        answer = json.loads(line)
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer["vectors"]


def _texts(value: object) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise web.HTTPBadRequest(text=json.dumps({"error": "input must be a string or a non-empty list of strings"}),
                                 content_type="application/json")
    return texts


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}), content_type="application/json")
    return body


def make_app(model: Model) -> web.Application:
    routes = web.RouteTableDef()

    def name() -> str:
        return model.info.get("model", "all-MiniLM-L6-v2")

    @routes.post("/api/embeddings")  # Ollama's original API
    async def ollama_embeddings(request):
        body = await _body(request)
        [vector] = await model.embed(_texts(body.get("prompt")))
        return web.json_response({"embedding": vector})

    @routes.post("/api/embed")  # Ollama's current API
    async def ollama_embed(request):
        body = await _body(request)
        return web.json_response({"model": name(), "embeddings": await model.embed(_texts(body.get("input")))})

    @routes.post("/v1/embeddings")  # OpenAI's API
    async def openai_embeddings(request):
        body = await _body(request)
        vectors = await model.embed(_texts(body.get("input")))
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return web.json_response({"object": "list", "model": name(), "data": data})

    @routes.get("/api/tags")  # Ollama's list of the models it serves: no inference
    async def ollama_tags(request):
        return web.json_response({"models": [{"name": name(), "model": name()}]})

    in_flight: list[asyncio.Task] = []

    async def measure() -> tuple[dict, int]:
        started = time.perf_counter()
        try:
            [vector] = await model.embed([HEALTH_TEXT])
        except (RuntimeError, ValueError, OSError) as err:
            return {"status": "critical", "error": str(err)}, 503
        ok = len(vector) == model.info["dimension"]
        body = {"status": "passing" if ok else "critical", "model": name(), "dimension": len(vector),
                "ms": round((time.perf_counter() - started) * 1000, 1)}
        return body, 200 if ok else 503

    @routes.get("/health")
    async def health(request):
        """Healthy only if a real embedding of a fixed text has the model's dimension.

        Checkers arriving together (Consul, HAProxy, verify) share one inference instead of
        queueing behind each other for the model.
        """
        if not in_flight or in_flight[0].done():
            in_flight[:] = [asyncio.ensure_future(measure())]
        body, status = await asyncio.shield(in_flight[0])
        return web.json_response(body, status=status)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.add_routes(routes)
    return app


def embeddings_command(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(..., "--port"),
    python: str = typer.Option(..., "--python", help="The Python of the venv holding the model packages."),
) -> None:
    """Serve embeddings from the all-MiniLM-L6-v2 model (Ollama- and OpenAI-compatible)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        model = Model(python)
        await model.start()
        runner = web.AppRunner(make_app(model))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("listening on %s:%s", host, port)
        await model.proc.wait()  # a dead model is a dead service: exit so supervisord restarts it
        raise SystemExit("the model worker exited")

    asyncio.run(run())
