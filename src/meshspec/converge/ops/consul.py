"""Consul: the mesh's token, its registrations, and pruning what the spec no longer names.

The registry is reached from the controller with py-consul over HTTP, so these operations
read Consul's state when they run (after the agent has started) instead of through a shell
fact on the host, and apply changes with FunctionCommands.
"""

from __future__ import annotations

import time
import uuid
from io import StringIO
from pathlib import PurePosixPath

import consul
import requests
from pyinfra import host
from pyinfra.api import FunctionCommand, OperationError, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from meshspec.common.consul_token import token_in
from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.registry import Registry
from meshspec.render.registrations import differences, is_ours

UNREACHABLE = (requests.exceptions.RequestException, consul.ConsulException)


def read_token(token: SharedFact | str) -> str | None:
    """The token from its file on the host: `token` is the file's path or a SharedFact of its FileContents."""
    return token_in(token.get() if isinstance(token, SharedFact) else host.get_fact(FileContents, path=token))


@operation()
def token(path: str, value: str | None = None):
    """
    Keep the mesh's Consul token in `path` (mode 0600).

    + path: the token file
    + value: a given token (a real Consul's); None: a random one, made once and kept

    Example: ``consul.token(path="/srv/meshspec/consul/management-token")``
    """
    current = read_token(path)
    if current and (value is None or current == value):
        host.noop("the Consul token is in place")
        return
    yield from files.directory._inner(path=str(PurePosixPath(path).parent), mode="700")
    yield from files.put._inner(src=StringIO((value or str(uuid.uuid4())) + "\n"), dest=path, mode="600")


def _wait_answering(registry: Registry, token_value: str | None, timeout: float) -> None:
    client = registry.client(token_value, timeout=2)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.status.leader():
                return
        except UNREACHABLE:
            pass
        if time.monotonic() > deadline:
            raise OperationError(f"Consul at {registry.addr} did not answer within {timeout:.0f}s")
        time.sleep(0.1)


@operation()
def answering(registry: Registry, token: SharedFact, timeout: float = 30):
    """
    Wait until Consul answers (the embedded agent has just been started).

    + registry: where Consul is
    + token: the token file's contents, read once per run
    + timeout: seconds to wait
    """
    try:
        registry.client(read_token(token), timeout=2).status.leader()
        host.noop(f"Consul answers at {registry.addr}")
    except UNREACHABLE:
        yield FunctionCommand(_wait_answering, (registry, read_token(token), timeout), {})


def _services(registry: Registry, token_value: str | None) -> tuple[dict[str, dict], dict[str, dict]]:
    """The agent's services and checks, or none when it is unreachable (a --dry run before it exists)."""
    try:
        agent = registry.client(token_value).agent
        return agent.services(), agent.checks()
    except UNREACHABLE:
        return {}, {}


def _register(registry: Registry, token_value: str | None, body: dict) -> None:
    registry.client(token_value).agent.service.register(
        name=body["Name"], service_id=body["ID"], address=body["Address"], port=body["Port"],
        tags=body["Tags"], meta=body["Meta"], check=body["Check"], replace_existing_checks=True,
    )


def _deregister(registry: Registry, token_value: str | None, service_id: str) -> None:
    registry.client(token_value).agent.service.deregister(service_id)


@operation()
def services(registry: Registry, token: SharedFact, wanted: list[dict]):
    """
    Register every instance with its check; re-register those that differ from the spec.

    + registry: where Consul is
    + token: the token file's contents, read once per run
    + wanted: registrations (Consul's JSON) of this host's instances
    """
    token_value = read_token(token)
    current, checks = _services(registry, token_value)
    # Compared whole, the check included: a check swapped behind meshspec's back is repaired too.
    stale = [w for w in wanted if differences(current.get(w["ID"]), checks, w)]
    if not stale:
        host.noop(f"{len(wanted)} registrations are as declared")
        return
    for body in stale:
        yield FunctionCommand(_register, (registry, token_value, body), {})


@operation()
def prune(registry: Registry, token: SharedFact, mesh: str, host_label: str, keep: list[str]):
    """
    Deregister this mesh's registrations of this host that the spec no longer names.

    Only registrations meshspec made (Meta managed-by and mesh) are touched.

    + registry: where Consul is
    + token: the token file's contents, read once per run
    + mesh: the mesh's name
    + host_label: this host's label in instance IDs
    + keep: the IDs to keep
    """
    token_value = read_token(token)
    current, _ = _services(registry, token_value)
    gone = sorted(
        sid for sid, s in current.items()
        if is_ours(s, mesh) and (s.get("Meta") or {}).get("host") == host_label and sid not in keep
    )
    if not gone:
        host.noop("no registration left over")
        return
    for sid in gone:
        yield FunctionCommand(_deregister, (registry, token_value, sid), {})
