"""Prometheus' targets from the registry: Prometheus' HTTP service discovery (`http_sd_configs`)
served by the controller, since Debian builds Prometheus without `consul_sd_configs`.

Every instance in the registry's catalog whose registration says where it exports metrics
(common.scrape_meta) is a target, labelled with its service (`job`), its ID (`instance_id`), its
kind and host where its Meta has them, and the mesh. An instance registered by hand, or a real
Consul's, is scraped within Prometheus' next refresh, with no deploy.

The catalog is read with the caller's token (Prometheus sends it as a Bearer credential), never
the controller's own: the registry's ACLs decide what a caller may list, as they would for
`consul_sd_configs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp

from meshspec.common import scrape_meta

READ_TIMEOUT = aiohttp.ClientTimeout(total=10)


def target_groups(catalog: dict[str, list[dict[str, Any]]], mesh: str | None,
                  services: Collection[str] = ()) -> list[dict[str, Any]]:
    """http_sd's answer from the catalog (service -> its `/v1/catalog/service/<name>` entries):
    one group per instance that exports metrics, skipping another mesh's registrations; of
    `services` only, when given (as consul_sd_configs' `services`). A path's query becomes
    Prometheus' `__param_` labels (the agent's `?format=prometheus`). Pure."""
    groups = []
    for service, entries in sorted(catalog.items()):
        if services and service not in services:
            continue
        for entry in sorted(entries, key=lambda e: e.get("ServiceID", "")):
            meta = entry.get("ServiceMeta") or {}
            port = meta.get(scrape_meta.PORT)
            if not port or (mesh and meta.get("mesh", mesh) != mesh):
                continue
            address = entry.get("ServiceAddress") or entry.get("Address")
            host = f"[{address}]" if ":" in address else address  # IPv6
            path, _, query = meta.get(scrape_meta.PATH, scrape_meta.DEFAULT_PATH).partition("?")
            labels = {"job": service, "__metrics_path__": path, "instance_id": entry.get("ServiceID", service),
                      **{f"__param_{k}": v for k, v in parse_qsl(query)}}
            labels.update({key: meta[key] for key in ("kind", "host") if meta.get(key)})
            if mesh:
                labels["mesh"] = mesh
            groups.append({"targets": [f"{host}:{port}"], "labels": labels})
    return groups


async def read_catalog(consul: str, token: str | None, services: Collection[str] = ()) -> dict[str, list[dict]]:
    """Every service's catalog entries (of `services` only, when given), as `token` may read them
    (raises unless Consul answers 200).
    A session of its own: the controller's carries the controller's token, which no caller borrows."""
    headers = {"X-Consul-Token": token} if token else {}
    async with aiohttp.ClientSession(headers=headers, timeout=READ_TIMEOUT) as session:

        async def get(path: str) -> Any:
            async with session.get(f"{consul}{path}") as response:
                if response.status != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status}: {(await response.text())[:200]}")
                return await response.json(content_type=None)

        names = sorted(n for n in await get("/v1/catalog/services") or {} if not services or n in services)
        entries = await asyncio.gather(*(get(f"/v1/catalog/service/{quote(name, safe='')}") for name in names))
    return dict(zip(names, (e or [] for e in entries)))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (Prometheus' `authorization`)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
