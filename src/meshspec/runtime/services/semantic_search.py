"""semantic-search: index documents, query them by meaning and delete them, through the mesh's
embeddings service and Chroma (its REST API v2). Its health probe (mesh_spec.yaml) is a round trip
through all three: a document indexed, found first for its own text, deleted."""

from __future__ import annotations

import hashlib
import json
import logging

import httpx
import typer
from aiohttp import web

COLLECTION = "meshspec-documents"
CHROMA_DB = "/api/v2/tenants/default_tenant/databases/default_database"
log = logging.getLogger("meshspec.semantic_search")


class Backends:
    def __init__(self, chroma: str, embeddings: str):
        self.http = httpx.AsyncClient(timeout=30)
        self.chroma, self.embeddings = chroma.rstrip("/"), embeddings.rstrip("/")
        self._collection: str | None = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        reply = await self.http.post(f"{self.embeddings}/api/embed", json={"input": texts})
        reply.raise_for_status()
        return reply.json()["embeddings"]

    async def collection(self) -> str:
        if self._collection is None:
            reply = await self.http.post(f"{self.chroma}{CHROMA_DB}/collections",
                                         json={"name": COLLECTION, "get_or_create": True,
                                               "configuration": {"hnsw": {"space": "cosine"}}})
            reply.raise_for_status()
            self._collection = reply.json()["id"]
        return self._collection

    async def chroma_post(self, action: str, body: dict) -> dict:
        reply = await self.http.post(f"{self.chroma}{CHROMA_DB}/collections/{await self.collection()}/{action}", json=body)
        if reply.status_code == 404:  # the collection was deleted behind our back: make it again once
            self._collection = None
            reply = await self.http.post(f"{self.chroma}{CHROMA_DB}/collections/{await self.collection()}/{action}", json=body)
        reply.raise_for_status()
        return reply.json() if reply.content else {}


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def _object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def make_app(backends: Backends) -> web.Application:
    routes = web.RouteTableDef()

    @routes.post("/index")
    async def index(request):
        """{"documents": [{"id"?, "text", "metadata"?}, ...]} -> the ids indexed."""
        docs = (await _object(request)).get("documents")
        if not isinstance(docs, list) or not docs or not all(isinstance(d, dict) and isinstance(d.get("text"), str) for d in docs):
            raise _bad("documents must be a non-empty list of {text, id?, metadata?}")
        ids = [str(d.get("id") or hashlib.sha256(d["text"].encode()).hexdigest()[:16]) for d in docs]
        texts = [d["text"] for d in docs]
        body = {"ids": ids, "embeddings": await backends.embed(texts), "documents": texts}
        if any(d.get("metadata") for d in docs):
            body["metadatas"] = [d.get("metadata") or {"source": "meshspec"} for d in docs]
        await backends.chroma_post("upsert", body)
        return web.json_response({"indexed": ids})

    @routes.delete("/documents/{id}")
    async def delete(request):
        """Remove one document by its id (deleting one that is not there is no error, as in Chroma)."""
        doc_id = request.match_info["id"]
        await backends.chroma_post("delete", {"ids": [doc_id]})
        return web.json_response({"deleted": [doc_id]})

    @routes.post("/search")
    async def search(request):
        """{"query", "k"?} -> the k nearest documents with their cosine distance."""
        body = await _object(request)
        return await _search(body.get("query"), body.get("k", 3))

    @routes.get("/search")
    async def search_by_get(request):
        """?q=...&k=... -> the same as POST /search."""
        k = request.query.get("k", "3")
        return await _search(request.query.get("q"), int(k) if k.isdigit() else None)

    async def _search(query: object, k: object) -> web.Response:
        if not isinstance(query, str) or not query or not isinstance(k, int) or not 1 <= k <= 100:
            raise _bad("query must be a non-empty string and k a whole number from 1 to 100")
        [vector] = await backends.embed([query])
        found = await backends.chroma_post("query", {"query_embeddings": [vector], "n_results": k,
                                                     "include": ["documents", "distances", "metadatas"]})
        hits = [{"id": i, "text": t, "distance": d, "metadata": m}
                for i, t, d, m in zip(found["ids"][0], found["documents"][0], found["distances"][0],
                                      (found.get("metadatas") or [[None] * len(found["ids"][0])])[0])]
        return web.json_response({"query": query, "results": hits})

    @routes.get("/health")
    async def health(request):
        """Both backends answer: Chroma's heartbeat, the embeddings service's list of models. No
        inference: this is the page every liveness read asks (HAProxy every 5 s); the probe's round
        trip is what proves both do their job."""
        checks = {}
        for name, url in (("chroma", f"{backends.chroma}/api/v2/heartbeat"), ("embeddings", f"{backends.embeddings}/api/tags")):
            try:
                reply = await backends.http.get(url)
                checks[name] = "passing" if reply.status_code == 200 else f"HTTP {reply.status_code}"
            except httpx.HTTPError as err:
                checks[name] = f"unreachable: {type(err).__name__}"
        ok = all(v == "passing" for v in checks.values())
        return web.json_response({"status": "passing" if ok else "critical", "dependencies": checks}, status=200 if ok else 503)

    app = web.Application()
    app.add_routes(routes)
    return app


def semantic_search_command(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(..., "--port"),
    chroma: str = typer.Option(..., "--chroma", help="Chroma's base URL."),
    embeddings: str = typer.Option(..., "--embeddings", help="The embeddings service's base URL."),
) -> None:
    """Index and search documents by meaning (embeddings + Chroma)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per backend call is noise
    web.run_app(make_app(Backends(chroma, embeddings)), host=host, port=port, print=None)
