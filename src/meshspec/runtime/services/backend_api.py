"""backend-api: the mesh's own API — services, topology and health from Consul, requests through the
mesh, and jobs via RabbitMQ with results in PostgreSQL.

    meshspec serve backend-api --host H --port P
    env: MESH_CONSUL_ADDR, MESH_CONSUL_TOKEN_FILE, MESH_PROXY_URL, MESH_AMQP_URL, MESH_DATABASE_URL
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Optional

import aiohttp
import typer
from aiohttp import web
from pydantic import BaseModel, ValidationError

from meshspec.common import alert_webhook
from meshspec.common.consul_token import read_token
from meshspec.runtime.services import alert_store
from meshspec.runtime.services.alert_store import AlertStore, Notification
from meshspec.runtime.services.dashboard import Dashboard
from meshspec.runtime.services.identity import MeshIdentity, mesh_identity
from meshspec.runtime.services.jobs import (
    DEFAULT_QUEUE,
    SCHEMA,
    EnqueueRequest,
    JobMessage,
    JobQueue,
    JobStore,
    Unavailable,
    UnknownKind,
    parse_payload,
    with_password,
)
from meshspec.runtime.services.mesh_client import (
    STATUS_ORDER,
    ConsulReader,
    MeshError,
    MeshRequest,
    MeshRouter,
    describe_instance,
)
from meshspec.runtime.services.slow_traces import SlowTraces

log = logging.getLogger("meshspec.backend_api")
# Its own waits on what it depends on stay under the proxy's request timeout the shipped spec gives
# it (2 s): a slow dependency then makes an answer that says so (degraded /health, a 503 naming
# it), not a replica the proxy times out, retries elsewhere and ejects with all the others.
DEP_TIMEOUT_S = 1.0
CONSUL_TIMEOUT_S = 1.5
API = "/api/v1/mesh"
# The active alerts the status page shows: Alertmanager's, not silenced or inhibited. Only alerts
# with a severity, which every rule of the mesh sets (render/monitoring.py): the checker's own
# round-trip probe posts alerts without one, which are no news.
ALERTS_PATH = "/api/v2/alerts?active=true&silenced=false&inhibited=false"
SEVERITY_ORDER = {"critical": 0, "warning": 1}


class Config(BaseModel):
    consul_addr: str
    consul_token: str | None = None
    proxy_url: str | None = None
    amqp_url: str
    database_url: str
    queue: str = DEFAULT_QUEUE
    alerts_service: str = "alertmanager"
    alerts_consumer: str | None = None  # who may post to the alert webhook (X-Mesh-Consumer); None: nobody


# ------------------------------------------------------------------------------- helpers --
def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def json_response(data: Any, status: int = 200, **kw: Any) -> web.Response:
    if isinstance(data, BaseModel):
        return web.Response(text=data.model_dump_json(), status=status, content_type="application/json", **kw)
    return web.json_response(data, status=status, **kw)


def validation_problems(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


async def read_model(request: web.Request, model: type[BaseModel]) -> BaseModel:
    """The request body as `model`; raises a JSON 4xx for anything else."""
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"error": f"invalid {model.__name__}", "problems": validation_problems(exc)}),
            content_type="application/json") from None


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every error as JSON; never a traceback to the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return error(exc.status, exc.reason, path=request.path)
    except Unavailable as exc:
        return error(503, str(exc))
    except MeshError as exc:
        return error(exc.status, str(exc), route=exc.route)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, f"internal error ({exc.__class__.__name__})")


async def timed(check: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), DEP_TIMEOUT_S)
        state: dict[str, Any] = {"ok": True}
        if detail is not None:
            state["detail"] = detail
    except asyncio.TimeoutError:
        state = {"ok": False, "error": f"no answer within {DEP_TIMEOUT_S}s"}
    except (Unavailable, MeshError, aiohttp.ClientError, OSError) as exc:
        state = {"ok": False, "error": str(exc) or exc.__class__.__name__}
    state["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return state


# ------------------------------------------------------------------------------ handlers --
class BackendApi:
    def __init__(self, config: Config, identity: MeshIdentity | None = None) -> None:
        self.config = config
        self.identity = identity
        self.store = JobStore(config.database_url, schema=SCHEMA + alert_store.SCHEMA)
        self.alert_store = AlertStore(self.store)
        self.queue = JobQueue(config.amqp_url, config.queue)
        self.session: aiohttp.ClientSession | None = None
        self.consul: ConsulReader | None = None
        self.router: MeshRouter | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors], client_max_size=4 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get(f"{API}/services", self.services)
        app.router.add_get(f"{API}/topology", self.topology)
        app.router.add_get(f"{API}/health", self.mesh_health)
        app.router.add_post(f"{API}/proxy", self.proxy)
        app.router.add_post(f"{API}/enqueue", self.enqueue)
        app.router.add_get(f"{API}/results/{{id}}", self.result)
        app.router.add_get(f"{API}/alerts", self.alerts)
        app.router.add_post(alert_webhook.PATH, self.store_alerts)
        app.router.add_get(f"{API}/alerts/received", self.received_alerts)
        app.router.add_get(f"{API}/metrics", Dashboard(lambda: self.router).metrics)
        app.router.add_get(f"{API}/traces/slow", SlowTraces(lambda: self.router, lambda: self.consul).slow)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application):
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200), auto_decompress=False)
        self.consul = ConsulReader(self.session, self.config.consul_addr, self.config.consul_token, CONSUL_TIMEOUT_S)
        self.router = MeshRouter(self.session, self.consul, self.config.proxy_url,
                                 tls=self.identity.context if self.identity else None)
        if self.identity:
            self.identity.start()
        self.queue.start()
        await self.store.start(wait_s=2.0)
        yield
        if self.identity:
            await self.identity.close()
        await self.queue.close()
        await self.store.close()
        await self.session.close()

    async def health(self, request: web.Request) -> web.Response:
        names = ("consul", "postgresql", "rabbitmq")
        states = await asyncio.gather(
            timed(self._consul_ping), timed(self.store.ping), timed(self.queue.ping))
        deps = dict(zip(names, states))
        ok = all(s["ok"] for s in states)
        body = {"status": "ok" if ok else "degraded", "dependencies": deps,
                "routing": "proxy" if self.config.proxy_url else "consul",
                "identity": self.identity.status if self.identity else None}
        # 200 while degraded: the proxy's liveness check reads this page, and a shared dependency's
        # outage failing it ejects every replica at once (measured: the registry agent down 15 s
        # took all three out of rotation, 42% of the chaos run's requests failed). Each endpoint
        # that needs the lost dependency answers 503 naming it; the spec's check decides readiness.
        return web.json_response(body, status=200)

    async def _consul_ping(self) -> dict[str, Any]:
        """Reachable, and readable with our token: a filtered catalog means a missing or too narrow token."""
        leader = await self.consul.leader()
        names = await self.consul.service_names()
        if self.consul.acl_filtered:
            raise MeshError(503, "consul filters the catalog by ACLs: no token, or one that cannot read every service")
        return {"leader": leader, "services": len(names)}

    async def _mesh(self) -> dict[str, list[dict[str, Any]]]:
        try:
            return await self.consul.mesh()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise MeshError(503, f"consul unreachable: {exc.__class__.__name__}: {exc}") from None

    async def services(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind")
        out = []
        for name, entries in (await self._mesh()).items():
            instances = [describe_instance(e) for e in entries]
            svc = summarize(name, instances)
            if kind is None or svc["kind"] == kind:
                for inst in svc["instances"]:
                    inst.pop("checks")
                out.append(svc)
        return web.json_response({"services": out, "count": len(out), "acl_filtered": self.consul.acl_filtered})

    async def topology(self, request: web.Request) -> web.Response:
        mesh = await self._mesh()
        nodes, edges = [], []
        for name, entries in mesh.items():
            svc = summarize(name, [describe_instance(e) for e in entries])
            nodes.append({"id": name, "kind": svc["kind"], "status": svc["status"],
                          "instances": len(svc["instances"])})
            for dep in svc["depends_on"]:
                edges.append({"source": name, "target": dep, "target_registered": dep in mesh})
        return web.json_response({"nodes": nodes, "edges": edges})

    async def mesh_health(self, request: web.Request) -> web.Response:
        checks: Counter[str] = Counter({s: 0 for s in STATUS_ORDER})
        instances_by_status: Counter[str] = Counter({s: 0 for s in STATUS_ORDER})
        instances = []
        for name, entries in (await self._mesh()).items():
            for inst in map(describe_instance, entries):
                instances_by_status[inst["status"]] += 1
                checks.update(c["status"] for c in inst["checks"])
                instances.append({"service": name, "id": inst["id"], "address": inst["address"],
                                  "port": inst["port"], "status": inst["status"], "checks": inst["checks"]})
        return web.json_response({"checks": dict(checks), "instances_by_status": dict(instances_by_status),
                                  "instances": instances})

    async def proxy(self, request: web.Request) -> web.Response:
        req = await read_model(request, MeshRequest)
        return json_response(await self.router.send(req))

    async def enqueue(self, request: web.Request) -> web.Response:
        req = await read_model(request, EnqueueRequest)
        try:
            payload = parse_payload(req.kind, req.payload).model_dump(mode="json")
        except UnknownKind as exc:
            return error(422, str(exc))
        except ValidationError as exc:
            return error(422, f"invalid payload for {req.kind!r}", problems=validation_problems(exc))
        job_id = uuid.uuid4()
        job = await self.store.create(job_id, req.kind, payload)
        try:
            await self.queue.publish(JobMessage(id=job_id, kind=req.kind, payload=payload))
        except Unavailable as exc:
            await self.store.fail_queued(job_id, f"not published: {exc}")
            raise
        return json_response({"id": str(job_id), "kind": job.kind, "status": job.status,
                              "created_at": job.created_at.isoformat(), "result_url": f"{API}/results/{job_id}"},
                             status=202, headers={"Location": f"{API}/results/{job_id}"})

    async def result(self, request: web.Request) -> web.Response:
        try:
            job_id = uuid.UUID(request.match_info["id"])
        except ValueError:
            return error(404, f"no job {request.match_info['id']!r} (job ids are UUIDs)")
        job = await self.store.get(job_id)
        if job is None:
            return error(404, f"no job {str(job_id)!r}")
        return json_response(job)


    async def alerts(self, request: web.Request) -> web.Response:
        service = self.config.alerts_service
        answer = await self.router.send(MeshRequest(service=service, path=ALERTS_PATH, timeout_s=DEP_TIMEOUT_S))
        try:
            if answer.status != 200:
                raise ValueError(f"HTTP {answer.status}")
            found = json.loads(answer.body)
            shown = [alert_summary(a) for a in found if a.get("labels", {}).get("severity")]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return error(502, f"{service} did not answer with its alerts ({exc})", route=answer.route.model_dump())
        shown.sort(key=lambda a: (SEVERITY_ORDER.get(a["severity"], 2), a["starts_at"], a["name"]))
        return json_response({"count": len(shown), "alerts": shown, "source": answer.route.model_dump()})


    async def store_alerts(self, request: web.Request) -> web.Response:
        """Alertmanager's webhook: 200 once every alert of the notification is stored (a 5xx, and it
        retries); only from the consumer that holds Alertmanager's key, as the proxy names it."""
        consumer = request.headers.get("X-Mesh-Consumer")
        if not self.config.alerts_consumer or consumer != self.config.alerts_consumer:
            return error(403, f"only the consumer {self.config.alerts_consumer!r} posts alerts "
                              f"(this request: {consumer or 'no consumer'})")
        notification = await read_model(request, Notification)
        stored = await self.alert_store.save(notification)
        log.info("stored %d alert(s) notified to %s", stored, notification.receiver)
        return json_response({"stored": stored})

    async def received_alerts(self, request: web.Request) -> web.Response:
        """The alerts Alertmanager notified, as stored (`?name=` one alert's; `?limit=`, at most 1000)."""
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            return error(400, "limit must be a whole number from 1 to 1000")
        found = await self.alert_store.received(request.query.get("name") or None, limit)
        return json_response({"count": len(found), "alerts": [a.model_dump(mode="json") for a in found]})


def alert_summary(alert: dict[str, Any]) -> dict[str, Any]:
    """One of Alertmanager's alerts (API v2) as the status page shows it."""
    labels = alert["labels"]
    return {"name": labels["alertname"], "severity": labels["severity"], "summary": alert.get("annotations", {}).get("summary", ""),
            "labels": {k: v for k, v in labels.items() if k not in ("alertname", "severity")},
            "starts_at": alert["startsAt"], "fingerprint": alert["fingerprint"]}


def summarize(name: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
    """One service: kind and depends-on from its instances' Meta, tags, worst status, instance counts."""
    metas = [i["meta"] for i in instances]
    kind = next((m["kind"] for m in metas if m.get("kind")), None)
    depends = sorted({d.strip() for m in metas for d in (m.get("depends-on") or "").split(",") if d.strip()})
    tags = sorted({t for i in instances for t in i["tags"]})
    counts = Counter(i["status"] for i in instances)
    status = max((i["status"] for i in instances), key=lambda s: STATUS_ORDER.get(s, 2)) if instances else "critical"
    return {"name": name, "kind": kind, "tags": tags, "status": status, "depends_on": depends,
            "counts": {s: counts.get(s, 0) for s in STATUS_ORDER}, "instances": instances}


# ----------------------------------------------------------------------------------- CLI --
def backend_api_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    consul: Annotated[str, typer.Option("--consul", envvar="MESH_CONSUL_ADDR", help="Consul address, host:port or URL.")] = "127.0.0.1:8500",
    token_file: Annotated[Optional[Path], typer.Option("--token-file", envvar="MESH_CONSUL_TOKEN_FILE", help="File holding the Consul token.")] = None,
    proxy: Annotated[Optional[str], typer.Option("--proxy", envvar="MESH_PROXY_URL", help="Mesh proxy URL; without it requests go straight to Consul instances.")] = None,
    service: Annotated[Optional[str], typer.Option("--service", envvar="MESH_SERVICE", help="The service whose certificate it presents to an https (mTLS) --proxy.")] = None,
    amqp: Annotated[str, typer.Option("--amqp", envvar="MESH_AMQP_URL", help="RabbitMQ URL.")] = "amqp://guest:guest@127.0.0.1/",
    amqp_password_file: Annotated[Optional[str], typer.Option("--amqp-password-file", envvar="MESH_AMQP_PASSWORD_FILE", help="File holding the RabbitMQ password.")] = None,
    database: Annotated[str, typer.Option("--database", envvar="MESH_DATABASE_URL", help="PostgreSQL URL.")] = "postgresql://postgres@127.0.0.1/postgres",
    database_password_file: Annotated[Optional[str], typer.Option("--database-password-file", envvar="MESH_DATABASE_PASSWORD_FILE", help="File holding the PostgreSQL password.")] = None,
    queue: Annotated[str, typer.Option("--queue", envvar="MESH_JOBS_QUEUE", help="The jobs queue.")] = DEFAULT_QUEUE,
    alerts_service: Annotated[str, typer.Option("--alerts-service", envvar="MESH_ALERTS_SERVICE", help="The Alertmanager whose active alerts it lists.")] = "alertmanager",
    alerts_consumer: Annotated[Optional[str], typer.Option("--alerts-consumer", envvar="MESH_ALERTS_CONSUMER", help="The consumer whose requests may post to the alert webhook.")] = None,
) -> None:
    """Serve the mesh API (services, topology, health, proxy, jobs, alerts)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        token = read_token(token_file)
    except OSError as exc:
        typer.echo(f"backend-api: cannot read the token file: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        amqp, database = with_password(amqp, amqp_password_file), with_password(database, database_password_file)
    except OSError as exc:
        typer.echo(f"backend-api: cannot read a password file: {exc}", err=True)
        raise typer.Exit(1) from None
    config = Config(consul_addr=consul, consul_token=token, proxy_url=proxy or None, amqp_url=amqp,
                    database_url=database, queue=queue, alerts_service=alerts_service,
                    alerts_consumer=alerts_consumer)
    try:
        identity = mesh_identity(consul, token, service, proxy)
    except ValueError as exc:
        typer.echo(f"backend-api: {exc}", err=True)
        raise typer.Exit(2) from None
    web.run_app(BackendApi(config, identity).app(), host=host, port=port, print=None, access_log=None, shutdown_timeout=5,
                handler_cancellation=True)


if __name__ == "__main__":
    typer.run(backend_api_command)
