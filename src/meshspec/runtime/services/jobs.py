"""Jobs shared by backend-api (enqueues, reads results) and task-worker (runs them).

A job is a row in PostgreSQL (`mesh_jobs`) and a persistent message on a durable RabbitMQ queue.
The row is written (queued) before the message is published; the worker marks it running, runs it,
commits done/failed and only then acks, so a worker that dies before the ack leaves the message to
be redelivered, and a redelivery of a job already finished is acked without running it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any, Literal

import aio_pika
import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from meshspec.runtime.services.mesh_client import MeshRequest

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "meshspec.jobs"
MAX_SLEEP_S = 30.0
# What a broker that went away raises: ChannelInvalidStateError (aiormq's) is a RuntimeError, not an
# AMQPError (seen on a channel closed by an RPC timeout while the process was stopped 20 s).
BROKER_ERRORS = (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError)
SCHEMA_LOCK = 0x6D657368  # pg_advisory_xact_lock key: backend-api and task-worker may start together
SCHEMA = """
CREATE TABLE IF NOT EXISTS mesh_jobs (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    payload     jsonb NOT NULL,
    status      text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    result      jsonb,
    error       text,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS mesh_jobs_status ON mesh_jobs (status);
"""


class Unavailable(Exception):
    """A dependency (PostgreSQL, RabbitMQ) cannot be used right now."""


# ------------------------------------------------------------------------------ job kinds --
class Sha256Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str = Field(max_length=1_000_000, description="text whose UTF-8 bytes are hashed")


class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=MAX_SLEEP_S)


PAYLOADS: dict[str, type[BaseModel]] = {"sha256": Sha256Payload, "sleep": SleepPayload, "mesh-request": MeshRequest}
KINDS = tuple(sorted(PAYLOADS))


class UnknownKind(ValueError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown job kind {kind!r}; known kinds: {', '.join(KINDS)}")


def parse_payload(kind: str, payload: dict[str, Any]) -> BaseModel:
    """The payload as its kind's model; UnknownKind or pydantic's ValidationError otherwise."""
    if kind not in PAYLOADS:
        raise UnknownKind(kind)
    return PAYLOADS[kind].model_validate(payload)


class EnqueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)


class JobMessage(BaseModel):
    """The body of a job message on the queue."""
    id: uuid.UUID
    kind: str
    payload: dict[str, Any]


Status = Literal["queued", "running", "done", "failed"]


class Job(BaseModel):
    id: uuid.UUID
    kind: str
    status: Status
    payload: dict[str, Any]
    result: Any = None
    error: str | None = None
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


# ------------------------------------------------------------------------------- postgres --
async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def with_password(url: str, password_file: str | None) -> str:
    """`url` with the password its file holds (the first line): the spec's URLs name the account,
    the password comes from a 0600 file of the program's user, so it is in no argv or environment."""
    if not password_file:
        return url
    with open(password_file) as held:
        return str(URL(url).with_password(held.readline().strip()))


class JobStore:
    """The `mesh_jobs` table over an asyncpg pool that connects lazily and survives server restarts.
    `schema`: the tables its program keeps (backend-api adds its received alerts', alert_store.py)."""

    def __init__(self, dsn: str, max_size: int = 5, timeout_s: float = 3.0, schema: str = SCHEMA) -> None:
        self.dsn, self.schema = dsn, schema
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.pool: asyncpg.Pool | None = None
        self.schema_ready = False
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> asyncpg.Pool:
        if self.pool is not None and self.schema_ready:
            return self.pool
        async with self._lock:
            try:
                if self.pool is None:
                    self.pool = await asyncpg.create_pool(
                        self.dsn, min_size=0, max_size=self.max_size, timeout=self.timeout_s,
                        command_timeout=10, init=_init_connection)
                if not self.schema_ready:
                    async with self.pool.acquire(timeout=self.timeout_s) as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                        await conn.execute(self.schema)
                    self.schema_ready = True
                    log.info("schema ready")
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                raise Unavailable(f"postgresql: {self.last_error}") from None
        return self.pool

    async def start(self, wait_s: float = 0.0) -> bool:
        """Create the schema now if PostgreSQL answers (retrying up to `wait_s`); later calls retry otherwise."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await self._ready()
                return True
            except Unavailable as exc:
                if time.monotonic() >= deadline:
                    log.warning("%s (will retry on use)", exc)
                    return False
                await asyncio.sleep(0.5)

    async def run(self, method: str, query: str, *args: Any) -> Any:
        pool = await self._ready()
        try:
            async with pool.acquire(timeout=self.timeout_s) as conn:
                return await getattr(conn, method)(query, *args, timeout=self.timeout_s)
        except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
                asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            raise Unavailable(f"postgresql: {self.last_error}") from None

    async def ping(self) -> None:
        await self.run("fetchval", "SELECT 1")

    async def create(self, job_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> Job:
        row = await self.run(
            "fetchrow", "INSERT INTO mesh_jobs (id, kind, payload, status) VALUES ($1, $2, $3, 'queued') RETURNING *",
            job_id, kind, payload)
        return Job(**dict(row))

    async def get(self, job_id: uuid.UUID) -> Job | None:
        row = await self.run("fetchrow", "SELECT * FROM mesh_jobs WHERE id = $1", job_id)
        return Job(**dict(row)) if row else None

    async def fail_queued(self, job_id: uuid.UUID, error: str) -> None:
        await self.run("execute", "UPDATE mesh_jobs SET status = 'failed', error = $2, finished_at = now() "
                        "WHERE id = $1 AND status = 'queued'", job_id, error)

    async def claim(self, msg: JobMessage) -> int | None:
        """Mark the job running (creating its row if a producer published without one); its attempt number,
        or None when the job already finished (a redelivery after the result was committed)."""
        return await self.run(
            "fetchval",
            """INSERT INTO mesh_jobs (id, kind, payload, status, attempts, started_at)
               VALUES ($1, $2, $3, 'running', 1, now())
               ON CONFLICT (id) DO UPDATE SET status = 'running', attempts = mesh_jobs.attempts + 1,
                                              started_at = now()
               WHERE mesh_jobs.status IN ('queued', 'running')
               RETURNING attempts""",
            msg.id, msg.kind, msg.payload)

    async def finish(self, job_id: uuid.UUID, status: Status, result: Any = None, error: str | None = None) -> None:
        await self.run(
            "execute", "UPDATE mesh_jobs SET status = $2, result = $3, error = $4, finished_at = now() "
            "WHERE id = $1 AND status = 'running'", job_id, status, result, error)

    async def close(self) -> None:
        if self.pool is not None:
            await asyncio.wait_for(self.pool.close(), 5)


# ------------------------------------------------------------------------------- rabbitmq --
class JobQueue:
    """A robust AMQP connection, a confirming channel and the durable jobs queue (for publishing)."""

    def __init__(self, url: str, queue: str = DEFAULT_QUEUE, timeout_s: float = 5.0) -> None:
        self.url = url
        self.queue_name = queue
        self.timeout_s = timeout_s
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Connect in the background, retrying until RabbitMQ answers; the connection then reconnects itself."""
        self._task = asyncio.create_task(self._connect_loop())

    async def _connect_loop(self) -> None:
        while True:
            try:
                self.connection = await aio_pika.connect_robust(self.url, timeout=self.timeout_s)
                self.channel = await self.connection.channel(publisher_confirms=True)
                await self.channel.declare_queue(self.queue_name, durable=True)
                log.info("connected to rabbitmq, queue %s", self.queue_name)
                return
            except BROKER_ERRORS as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.warning("rabbitmq: %s (retrying)", self.last_error)
                if self.connection is not None:
                    await _quietly(self.connection.close())
                    self.connection = None
                await asyncio.sleep(1.0)

    def _usable(self) -> aio_pika.abc.AbstractChannel:
        if self.connection is None or self.channel is None or not self.connection.connected.is_set() \
                or self.channel.is_closed:
            raise Unavailable(f"rabbitmq: not connected ({self.last_error or 'connecting'})")
        return self.channel

    async def ping(self) -> dict[str, int]:
        """A real round trip: (re)declare the queue and report its depth and consumers."""
        channel = self._usable()
        try:
            queue = await asyncio.wait_for(channel.declare_queue(self.queue_name, durable=True), self.timeout_s)
        except BROKER_ERRORS as exc:
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            raise Unavailable(f"rabbitmq: {self.last_error}") from None
        result = queue.declaration_result
        return {"messages": result.message_count, "consumers": result.consumer_count}

    async def publish(self, msg: JobMessage) -> None:
        """Publish persistently and wait for the broker's confirm."""
        channel = self._usable()
        message = aio_pika.Message(
            msg.model_dump_json().encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json", message_id=str(msg.id), type=msg.kind)
        try:
            await asyncio.wait_for(
                channel.default_exchange.publish(message, routing_key=self.queue_name, mandatory=True), self.timeout_s)
        except BROKER_ERRORS as exc:
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            raise Unavailable(f"rabbitmq: {self.last_error}") from None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.connection is not None:
            await _quietly(self.connection.close())


async def _quietly(coro) -> None:
    try:
        await asyncio.wait_for(coro, 5)
    except Exception:  # noqa: BLE001 - closing a connection that is already gone
        pass


def decode_message(body: bytes) -> JobMessage:
    """The job in a message body; ValueError with a readable reason otherwise."""
    try:
        return JobMessage.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(f"not a job message: {exc.error_count()} error(s): {exc.errors()[0]['msg']}") from None
