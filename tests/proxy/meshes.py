"""Test meshes for the proxy: a spec (as data) with a proxy service and the routed services a test
needs, turned into a Plan on ports the caller chose (free ones in integration tests)."""

from __future__ import annotations

import socket
from pathlib import Path

from meshspec.plan import Plan, make_plan
from meshspec.plan.hosts import Host
from meshspec.spec.models import MeshSpec

LOCAL = Host("@local", "127.0.0.1")




_HANDED_OUT: set[int] = set()


def free_block(n: int, start: int = 21000, stop: int = 29000) -> int:
    """The first port of n consecutive free 127.0.0.1 ports (replica r listens on base + r), never one
    this process handed out before (nothing listens on those yet)."""
    base = start
    while base + n < stop:
        socks = []
        try:
            if _HANDED_OUT & set(range(base, base + n)):
                raise OSError("handed out")
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            _HANDED_OUT.update(range(base, base + n))
            return base
        except OSError:
            base += n + 7
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def service(name: str, port: int, replicas: int = 1, routing: dict | None = None, health: dict | None = None,
            kind: str = "core") -> dict:
    return {"name": name, "kind": kind, "description": f"test service {name}", "port": port,
            "replicas": replicas, "health": health or {"http": {"path": "/health"}}, "routing": routing or {}}


def make_mesh(services: list[dict], proxy_ports: tuple[int, int, int], state_dir: Path | str,
              consul: str = "127.0.0.1:1", defaults: dict | None = None, mtls: int | None = None,
              **top: list[dict]) -> Plan:
    """`mtls`: the port of the proxy's mTLS listener (none without); `top`: further top-level keys of
    the spec (intentions, consumers)."""
    main, stats, runtime = proxy_ports
    proxy = {"name": "mesh-proxy", "kind": "core", "description": "HAProxy", "port": main,
             "ports": {"stats": stats, "runtime": runtime, **({"mtls": mtls} if mtls else {})},
             "health": {"http": {"path": "/healthz"}},
             "routing": {"enabled": False}}
    spec = MeshSpec.model_validate({
        "version": 1,
        "mesh": {"name": "testmesh", "domain": "mesh", "replica_port_step": 1},
        "defaults": defaults or {},
        "services": [proxy, *services],
        **top,
    })
    return make_plan(spec, [LOCAL], 0, str(state_dir), external_consul=consul)
