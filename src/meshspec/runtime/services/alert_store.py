"""backend-api's alert webhook: the receiver Alertmanager notifies (render/monitoring.py routes the
mesh's alerts to it by severity), which stores every notified alert in PostgreSQL (`mesh_alerts`).

An alert is one row per firing (its fingerprint and start): a repeat notification updates it, a
resolved one sets its status and end. The webhook answers 200 only once the rows are committed, so
Alertmanager retries anything not stored. Only the consumer the spec gives Alertmanager's key to
may post (the proxy names it in X-Mesh-Consumer).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from meshspec.runtime.services.jobs import JobStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS mesh_alerts (
    fingerprint text NOT NULL,
    starts_at   timestamptz NOT NULL,
    name        text NOT NULL,
    severity    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('firing', 'resolved')),
    labels      jsonb NOT NULL,
    annotations jsonb NOT NULL,
    ends_at     timestamptz,
    receiver    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    notified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, starts_at)
);
"""
UPSERT = """
INSERT INTO mesh_alerts (fingerprint, starts_at, name, severity, status, labels, annotations, ends_at, receiver)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (fingerprint, starts_at) DO UPDATE SET status = EXCLUDED.status, ends_at = EXCLUDED.ends_at,
    annotations = EXCLUDED.annotations, receiver = EXCLUDED.receiver, notified_at = now()
"""


class Notified(BaseModel):
    """One alert of a webhook notification (Alertmanager's webhook payload, version 4)."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: datetime
    endsAt: datetime | None = None
    fingerprint: str = Field(min_length=1, max_length=64)


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: Literal["4"]
    receiver: str = Field(min_length=1, max_length=200)
    alerts: list[Notified] = Field(max_length=10_000)


class StoredAlert(BaseModel):
    fingerprint: str
    name: str
    severity: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    receiver: str
    received_at: datetime
    notified_at: datetime


def ended(at: datetime | None) -> datetime | None:
    """An alert's end: Alertmanager writes 0001-01-01T00:00:00Z for one that has not ended."""
    return at if at is not None and at.year > 1 else None


def rows(notification: Notification) -> list[tuple[Any, ...]]:
    """The rows a notification stores (UPSERT's arguments). Pure."""
    return [(a.fingerprint, a.startsAt, a.labels.get("alertname", ""), a.labels.get("severity", ""), a.status,
             a.labels, a.annotations, ended(a.endsAt), notification.receiver) for a in notification.alerts]


class AlertStore:
    """`mesh_alerts` in the database backend-api keeps its jobs in (the same pool)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def save(self, notification: Notification) -> int:
        """Store every alert of the notification in one transaction; the number stored."""
        found = rows(notification)
        if found:
            await self.store.run("executemany", UPSERT, found)
        return len(found)

    async def received(self, name: str | None, limit: int) -> list[StoredAlert]:
        """The alerts received, last notified first (only those named `name`, if given)."""
        query = ("SELECT * FROM mesh_alerts WHERE ($1::text IS NULL OR name = $1) "
                 "ORDER BY notified_at DESC LIMIT $2")
        return [StoredAlert(**dict(r)) for r in await self.store.run("fetch", query, name, limit)]
