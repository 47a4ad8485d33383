"""`{placeholders}` in commands, env and paths: the names a service may use, and rendering.

Ports live only in the spec; commands name them through placeholders such as `{port}`
or `{services.redis.port}`, so the port offset and replicas apply everywhere.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping

from meshspec.common import nonce
from meshspec.spec.models import HttpProbe, HttpStep, MeshSpec, Service

INSTANCE_NAMES = ("name", "replica", "id", "address", "port", "state_dir", "install_dir")
PROXY_NAMES = ("proxy.url", "proxy.runtime", "proxy.master", "proxy.stats_users", "proxy.stats_credentials")
MTLS_URL = "proxy.mtls_url"
# meshspec: the project's own executable; checker.metrics_dir: where the host's checker writes its
# metrics for node-exporter's textfile collector
CHECKER_METRICS_DIR = "checker.metrics_dir"
MESH_NAMES = ("mesh.name", "consul.addr", "consul.token_file", *PROXY_NAMES, "meshspec", CHECKER_METRICS_DIR)
# The management token's file: the registry's own (the embedded agent starts with it), nobody else's;
# every other service reads its own token, `{consul.token_file}`. So are the mesh CA's files, which its
# Connect CA signs with.
REGISTRY_NAMES = ("consul.management_token_file", "consul.ca_file", "consul.ca_key_file")
PEER_FIELDS = ("address", "port", "url", "state_dir")
# A service with credentials: its own file (in its form) and its account; a dependent's copy of the
# password and the account (Credentials).
CREDENTIALS_NAMES = ("credentials.file", "credentials.user")
PEER_CREDENTIALS_FIELDS = ("password_file", "user")


def fields_of(text: str) -> list[str]:
    """The placeholder names used in `text` ('{{' escapes a brace)."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as err:  # an unmatched brace
        raise ValueError(f"bad placeholder syntax in {text!r}: {err}") from None


def valid_names(spec: MeshSpec, service: Service) -> set[str]:
    names = set(INSTANCE_NAMES) | set(MESH_NAMES)
    if service.name == spec.consul.service:
        names |= set(REGISTRY_NAMES)
    if spec.proxy.service is None:
        names -= set(PROXY_NAMES)
    elif any(s.name == spec.proxy.service and spec.proxy.mtls_port_name in s.ports for s in spec.services):
        names.add(MTLS_URL)  # the proxy's mTLS listener, where it has one
    names |= {f"ports.{p}" for p in service.ports}
    if service.credentials:
        names |= set(CREDENTIALS_NAMES)
    peers = {s.name: s for s in spec.services if s.name in service.depends_on}
    for dep, peer in peers.items():
        names |= {f"services.{dep}.{f}" for f in PEER_FIELDS}
        names |= {f"services.{dep}.ports.{p}" for p in peer.ports}
        if peer.credentials:
            names |= {f"services.{dep}.{f}" for f in PEER_CREDENTIALS_FIELDS}
    return names


INSTALL_NAMES = ("install_dir",)  # an install is shared by the service's instances: nothing per instance


def install_texts(service: Service) -> Iterable[tuple[tuple, str]]:
    """(path within the service, text) of the install's `after` commands, which know only INSTALL_NAMES."""
    if service.process:
        for i, cmd in enumerate(service.process.install.after):
            yield from ((("process", "install", "after", i, j), t) for j, t in enumerate(cmd))


PROBE_NAMES = (nonce.NAME,)  # a probe's texts also know the nonce each of its runs fills in


def probe_texts(service: Service) -> Iterable[tuple[tuple, str]]:
    """(path within the service, text) of the HTTP probe's texts: its request and expected text, and
    those of its steps; they know the instance's names and PROBE_NAMES."""
    probe = service.health.http
    if probe is None:
        return
    here = ("health", "http")

    def request(at: tuple, r: HttpProbe | HttpStep) -> Iterable[tuple[tuple, str]]:
        yield at + ("path",), r.path
        yield from ((at + ("headers", k), v) for k, v in r.headers.items())
        yield from ((at + (name,), text) for name in ("body", "contains") if (text := getattr(r, name)) is not None)

    yield from request(here, probe)
    if probe.credentials is not None:
        yield here + ("credentials",), probe.credentials
    for which in ("before", "after"):
        for i, step in enumerate(getattr(probe, which)):
            yield from request(here + (which, i), step)


def templated_texts(service: Service) -> Iterable[tuple[tuple, str]]:
    """(path within the service, text) of every string that may hold placeholders."""
    if service.process:
        p = service.process
        yield from ((("process", "command", i), t) for i, t in enumerate(p.command))
        yield from ((("process", "env", k), v) for k, v in p.env.items())
        if p.workdir:
            yield ("process", "workdir"), p.workdir
        yield from ((("process", "files", path), path) for path in p.files)
        for i, (argv, stdin) in enumerate(p.prepare_argvs()):
            at = ("process", "prepare", i) + (("run",) if stdin is not None else ())
            yield from (((*at, j), t) for j, t in enumerate(argv))
            if stdin is not None:
                yield ("process", "prepare", i, "stdin"), stdin
    if service.container and service.container.command:
        yield from ((("container", "command", i), t) for i, t in enumerate(service.container.command))
    if service.health.command:
        yield from ((("health", "command", i), t) for i, t in enumerate(service.health.command))


def render(text: str, values: Mapping[str, object]) -> str:
    """Substitute placeholders; every name must be in `values` (validation guarantees it)."""
    return "".join(lit + (str(values[f]) if f is not None else "") for lit, f, _, _ in string.Formatter().parse(text))
