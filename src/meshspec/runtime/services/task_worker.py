"""task-worker: runs jobs taken from RabbitMQ and stores their results in PostgreSQL.

    meshspec serve task-worker --host H --port P
    env: MESH_AMQP_URL, MESH_DATABASE_URL, MESH_CONSUL_ADDR, MESH_CONSUL_TOKEN_FILE, MESH_PROXY_URL

Each message is acked only after its result is committed (see meshspec.runtime.services.jobs). `GET /health`
answers 200 only while the consumer is connected; `GET /metrics` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import aio_pika
import aiohttp
import typer
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError

from meshspec.common.consul_token import read_token
from meshspec.runtime.services.identity import MeshIdentity, mesh_identity
from meshspec.runtime.services.jobs import (
    BROKER_ERRORS,
    DEFAULT_QUEUE,
    MAX_SLEEP_S,
    JobMessage,
    JobStore,
    Sha256Payload,
    SleepPayload,
    Unavailable,
    UnknownKind,
    decode_message,
    parse_payload,
    with_password,
)
from meshspec.runtime.services.mesh_client import ConsulReader, MeshError, MeshRequest, MeshRouter

log = logging.getLogger("meshspec.task_worker")
RETRY_DELAY_S = 1.0  # before handing a message back when PostgreSQL is unavailable


class JobFailed(Exception):
    """The job ran and failed; the message is the job's error."""


class WorkerConfig(BaseModel):
    amqp_url: str
    database_url: str
    queue: str = DEFAULT_QUEUE
    prefetch: int = 8
    consul_addr: str | None = None
    consul_token: str | None = None
    proxy_url: str | None = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("meshspec_worker_jobs", "Jobs handled, by kind and outcome "
                            "(done, failed, duplicate: a redelivery of a finished job, rejected: not a job message).",
                            ["kind", "outcome"], registry=self.registry)
        self.duration = Histogram("meshspec_worker_job_duration_seconds", "Time spent running a job.", ["kind"],
                                  registry=self.registry)
        self.in_progress = Gauge("meshspec_worker_jobs_in_progress", "Jobs being run now.", registry=self.registry)
        self.connected = Gauge("meshspec_worker_consumer_connected", "1 while the AMQP consumer is connected.",
                               registry=self.registry)


class TaskWorker:
    def __init__(self, config: WorkerConfig, identity: MeshIdentity | None = None) -> None:
        self.config = config
        self.identity = identity
        self.store = JobStore(config.database_url)
        self.metrics = Metrics()
        self.counts = {"done": 0, "failed": 0, "duplicate": 0, "rejected": 0}
        self.consumer_connected = False
        self.last_error: str | None = None
        self.session: aiohttp.ClientSession | None = None
        self.router: MeshRouter | None = None
        self._consume_task: asyncio.Task | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None

    # ---------------------------------------------------------------------------- job kinds --
    async def run_job(self, kind: str, payload: dict[str, Any]) -> Any:
        try:
            model = parse_payload(kind, payload)
        except UnknownKind as exc:
            raise JobFailed(str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise JobFailed(f"invalid payload for {kind!r}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if isinstance(model, Sha256Payload):
            data = model.data.encode()
            return {"algorithm": "sha256", "digest": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if isinstance(model, SleepPayload):
            started = time.perf_counter()
            await asyncio.sleep(min(model.seconds, MAX_SLEEP_S))
            return {"slept_s": round(time.perf_counter() - started, 3)}
        if isinstance(model, MeshRequest):
            try:
                resp = await self.router.send(model)
            except MeshError as exc:
                raise JobFailed(f"mesh-request to {model.service} failed: {exc}") from None
            return resp.model_dump(mode="json")
        raise JobFailed(f"no runner for job kind {kind!r}")  # a kind added to PAYLOADS but not here

    # ------------------------------------------------------------------------------ consuming --
    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            job = decode_message(message.body)
        except ValueError as exc:
            log.error("rejecting message %s: %s", message.message_id, exc)
            self._count("?", "rejected")
            await message.reject(requeue=False)
            return
        try:
            attempt = await self.store.claim(job)
        except Unavailable as exc:
            await self._hand_back(message, job, exc)
            return
        if attempt is None:
            log.info("job %s already finished; acking the redelivery", job.id)
            self._count(job.kind, "duplicate")
            await message.ack()
            return
        log.info("job %s (%s) attempt %d", job.id, job.kind, attempt)
        self.metrics.in_progress.inc()
        started = time.perf_counter()
        try:
            result, error = await self.run_job(job.kind, job.payload), None
        except JobFailed as exc:
            result, error = None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in a runner fails the job, not the worker
            log.exception("job %s crashed", job.id)
            result, error = None, f"internal error: {exc.__class__.__name__}: {exc}"
        finally:
            self.metrics.in_progress.dec()
            self.metrics.duration.labels(job.kind).observe(time.perf_counter() - started)
        outcome = "failed" if error else "done"
        try:
            await self.store.finish(job.id, outcome, result=result, error=error)
        except Unavailable as exc:
            await self._hand_back(message, job, exc)
            return
        await message.ack()  # only now: the result is committed
        self._count(job.kind, outcome)

    async def _hand_back(self, message: aio_pika.abc.AbstractIncomingMessage, job: JobMessage, exc: Exception) -> None:
        log.warning("job %s: %s; handing the message back", job.id, exc)
        await asyncio.sleep(RETRY_DELAY_S)
        await message.nack(requeue=True)

    def _count(self, kind: str, outcome: str) -> None:
        self.counts[outcome] += 1
        self.metrics.jobs.labels(kind, outcome).inc()

    async def consume_forever(self) -> None:
        """Connect, consume until the connection or channel closes, reconnect; forever."""
        while True:
            closed = asyncio.Event()
            try:
                self._connection = await aio_pika.connect(self.config.amqp_url, timeout=5)
                self._connection.close_callbacks.add(lambda *_: closed.set())
                channel = await self._connection.channel()
                channel.close_callbacks.add(lambda *_: closed.set())
                await channel.set_qos(prefetch_count=self.config.prefetch)
                queue = await channel.declare_queue(self.config.queue, durable=True)
                await queue.consume(self.on_message)
                self._set_connected(True)
                log.info("consuming %s (prefetch %d)", self.config.queue, self.config.prefetch)
                await closed.wait()
                self.last_error = "connection closed"
            except BROKER_ERRORS as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
            self._set_connected(False)
            log.warning("rabbitmq: %s; reconnecting", self.last_error)
            if self._connection is not None and not self._connection.is_closed:
                await asyncio.shield(self._close_connection())
            await asyncio.sleep(1.0)

    async def _close_connection(self) -> None:
        try:
            await asyncio.wait_for(self._connection.close(), 5)
        except Exception:  # noqa: BLE001 - already broken
            pass

    def _set_connected(self, value: bool) -> None:
        self.consumer_connected = value
        self.metrics.connected.set(1 if value else 0)

    # ---------------------------------------------------------------------------------- HTTP --
    async def health(self, request: web.Request) -> web.Response:
        body = {"status": "ok" if self.consumer_connected else "disconnected",
                "consumer": {"connected": self.consumer_connected, "queue": self.config.queue,
                             "prefetch": self.config.prefetch, "last_error": self.last_error},
                "jobs": dict(self.counts)}
        return web.json_response(body, status=200 if self.consumer_connected else 503)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_handler)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application):
        self.session = aiohttp.ClientSession(auto_decompress=False)
        consul = (ConsulReader(self.session, self.config.consul_addr, self.config.consul_token)
                  if self.config.consul_addr else None)
        identity = self.identity
        self.router = MeshRouter(self.session, consul, self.config.proxy_url, tls=identity.context if identity else None)
        if identity:
            identity.start()
        await self.store.start(wait_s=2.0)
        self._consume_task = asyncio.create_task(self.consume_forever())
        yield
        if identity:
            await identity.close()
        self._consume_task.cancel()
        if self._connection is not None:
            await self._close_connection()
        await self.store.close()
        await self.session.close()


def task_worker_command(
    host: Annotated[str, typer.Option("--host", help="Address of the /health and /metrics server.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the /health and /metrics server.")] = 8081,
    amqp: Annotated[str, typer.Option("--amqp", envvar="MESH_AMQP_URL", help="RabbitMQ URL.")] = "amqp://guest:guest@127.0.0.1/",
    amqp_password_file: Annotated[Optional[str], typer.Option("--amqp-password-file", envvar="MESH_AMQP_PASSWORD_FILE", help="File holding the RabbitMQ password.")] = None,
    database: Annotated[str, typer.Option("--database", envvar="MESH_DATABASE_URL", help="PostgreSQL URL.")] = "postgresql://postgres@127.0.0.1/postgres",
    database_password_file: Annotated[Optional[str], typer.Option("--database-password-file", envvar="MESH_DATABASE_PASSWORD_FILE", help="File holding the PostgreSQL password.")] = None,
    queue: Annotated[str, typer.Option("--queue", envvar="MESH_JOBS_QUEUE", help="The jobs queue.")] = DEFAULT_QUEUE,
    prefetch: Annotated[int, typer.Option("--prefetch", envvar="MESH_WORKER_PREFETCH", min=1, max=1000, help="Jobs run at once.")] = 8,
    consul: Annotated[Optional[str], typer.Option("--consul", envvar="MESH_CONSUL_ADDR", help="Consul address, for mesh-request jobs.")] = None,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", envvar="MESH_CONSUL_TOKEN_FILE", help="File holding the Consul token.")] = None,
    proxy: Annotated[Optional[str], typer.Option("--proxy", envvar="MESH_PROXY_URL", help="Mesh proxy URL, for mesh-request jobs.")] = None,
    service: Annotated[Optional[str], typer.Option("--service", envvar="MESH_SERVICE", help="The service whose certificate it presents to an https (mTLS) --proxy.")] = None,
) -> None:
    """Run jobs from the jobs queue; results go to PostgreSQL."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        token = read_token(token_file)
    except OSError as exc:
        typer.echo(f"task-worker: cannot read the token file: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        amqp, database = with_password(amqp, amqp_password_file), with_password(database, database_password_file)
    except OSError as exc:
        typer.echo(f"task-worker: cannot read a password file: {exc}", err=True)
        raise typer.Exit(1) from None
    config = WorkerConfig(amqp_url=amqp, database_url=database, queue=queue, prefetch=prefetch,
                          consul_addr=consul or None, consul_token=token, proxy_url=proxy or None)
    try:
        identity = mesh_identity(consul, token, service, proxy)
    except ValueError as exc:
        typer.echo(f"task-worker: {exc}", err=True)
        raise typer.Exit(2) from None
    web.run_app(TaskWorker(config, identity).app(), host=host, port=port, print=None, access_log=None, shutdown_timeout=5)


if __name__ == "__main__":
    typer.run(task_worker_command)
