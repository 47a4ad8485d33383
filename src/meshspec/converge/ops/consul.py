"""Consul: the mesh's tokens, its registrations, and pruning what the spec no longer names.

The registry is reached from the controller with py-consul over HTTP, so these operations
read Consul's state when they run (after the agent has started) instead of through a shell
fact on the host, and apply changes with FunctionCommands.
"""

from __future__ import annotations

import hmac
import json
import shlex
import time
import uuid
from hashlib import sha256
from io import StringIO
from pathlib import PurePosixPath

import consul
from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from meshspec.common.consul_token import token_in
from meshspec.converge.facts.files import FileDigests, FileModes, FileOwners
from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.facts.snapshot import current
from meshspec.converge.ops.commands import UNREACHABLE, reported
from meshspec.converge.registry import Registry
from meshspec.render.acl import RegistryToken
from meshspec.render.registrations import differences, is_ours
from meshspec.render.secrets import SecretFile


def read_token(token: SharedFact | str) -> str | None:
    """The token from its file on the host: `token` is the file's path or a SharedFact of its FileContents."""
    return token_in(token.get() if isinstance(token, SharedFact) else current(FileContents, path=token))


@operation()
def token(path: str, value: str | None = None, owner: str | None = None):
    """
    Keep the mesh's Consul token in `path` (mode 0600, root's or `owner`'s).

    + path: the token file
    + value: a given token (a real Consul's); None: a random one, made once and kept
    + owner: the user of the registry's program, which reads it; None: root alone

    Example: ``consul.token(path="/srv/meshspec/consul/management-token", owner="meshspec-registry")``
    """
    kept, wanted_owner, parent = read_token(path), owner or "root", str(PurePosixPath(path).parent)
    parent_mode, file_owner = current(FileModes, paths=[parent]).get(parent), current(FileOwners, paths=[path]).get(path)
    if parent_mode != "711":  # nobody but root lists it; a program passes through to its own token file below it
        yield StringCommand("mkdir", "-p", shlex.quote(parent))
        yield StringCommand("chmod", "711", shlex.quote(parent))
    if kept and (value is None or kept == value):
        if file_owner != wanted_owner:
            yield StringCommand("chown", shlex.quote(wanted_owner), shlex.quote(path))
        elif parent_mode == "711":
            host.noop(f"{path} is kept, {wanted_owner}'s")
        return
    yield from files.put._inner(src=StringIO((value or str(uuid.uuid4())) + "\n"), dest=path, mode="600",
                                user=wanted_owner)


def derived_ids(management: str, name: str) -> tuple[str, str]:
    """(AccessorID, SecretID) of the program token `name`: UUIDs made by HMAC-SHA256 keyed with the
    management token. The deploy rewrites a lost file or token to the same value without keeping a
    second secret, and one token's secret tells nothing of another's or of the management token."""
    def one(label: str) -> str:
        return str(uuid.UUID(bytes=hmac.new(management.encode(), label.encode(), sha256).digest()[:16], version=4))
    return one(f"{name}/accessor"), one(f"{name}/secret")


@operation()
def secret_files(token: SharedFact, wanted: list[SecretFile]):
    """
    Keep each secret file of this host, mode 0600, root's or its reader's (the user of the program
    that reads it), in a directory only root may list (0700, or 0711 where a reader must pass).

    + token: the management token file's contents, read once per run
    + wanted: the host's secret files (render.secrets)
    """
    management = read_token(token)
    if management is None:  # only in a --dry run before the first deploy: "Consul token" makes it
        host.noop("the secret files follow the management token, which this run makes")
        return
    texts = {f.path: f.text(derived_ids(management, f.name)[1]) for f in wanted}
    owners = {f.path: f.owner or "root" for f in wanted}
    digests = current(FileDigests, paths=list(texts))
    current_owners = current(FileOwners, paths=list(texts))
    stale = [path for path, text in texts.items() if digests.get(path) != sha256(text.encode()).hexdigest()]
    moved = [path for path in texts if path not in stale and current_owners.get(path) != owners[path]]
    if not stale and not moved:
        host.noop(f"{len(wanted)} secret files are in place")
        return
    passed = {str(PurePosixPath(f.path).parent) for f in wanted if f.owner}
    for parent in sorted({str(PurePosixPath(path).parent) for path in [*stale, *moved]}):
        yield StringCommand("mkdir", "-p", shlex.quote(parent))
        yield StringCommand("chmod", "711" if parent in passed else "700", shlex.quote(parent))  # before any secret is in it
    for path in stale:
        yield StringCommand("sh", "-c", shlex.quote(f"umask 077 && : > {shlex.quote(path)}"))  # 0600 before it holds anything
        yield FileUploadCommand(StringIO(texts[path]), path)
        yield StringCommand("chmod", "600", shlex.quote(path))
    for path in [*stale, *moved]:  # last: an upload over SSH replaces the file
        yield StringCommand("chown", shlex.quote(owners[path]), shlex.quote(path))


def _put_policy(registry: Registry, management: str, policy_id: str | None, wanted: RegistryToken) -> None:
    policies = registry.client(management).acl.policy
    if policy_id:
        policies.update(policy_id, wanted.name, description=wanted.description, rules=wanted.rules)
    else:
        policies.create(wanted.name, description=wanted.description, rules=wanted.rules)


def _put_token(registry: Registry, management: str, current: dict | None, wanted: RegistryToken) -> None:
    tokens = registry.client(management).acl.token
    accessor, secret = derived_ids(management, wanted.name)
    if current is not None and current.get("SecretID") == secret:
        tokens.update(accessor, description=wanted.description, policies_name=[wanted.name])
        return
    if current is not None:  # a secret cannot change (Consul keeps it for the token's life): a new token
        tokens.delete(accessor)
    tokens.create(accessor_id=accessor, secret_id=secret, description=wanted.description, policies_name=[wanted.name])


def _delete_token(registry: Registry, management: str, accessor: str) -> None:
    registry.client(management).acl.token.delete(accessor)


def _delete_policy(registry: Registry, management: str, policy_id: str) -> None:
    registry.client(management).acl.policy.delete(policy_id)


def _parsed(rules: str) -> dict | None:
    """Rules as py-consul wrote them (JSON); rules written in HCL by someone else are not ours."""
    try:
        return json.loads(rules)
    except ValueError:
        return None


def _token_as_wanted(current: dict | None, secret: str, wanted: RegistryToken) -> bool:
    grants = ("Roles", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies", "ExpirationTime")
    return (current is not None and current.get("SecretID") == secret and current.get("Description") == wanted.description
            and [p["Name"] for p in current.get("Policies") or []] == [wanted.name]
            and not any(current.get(g) for g in grants))


@operation()
def acl_tokens(registry: Registry, token: SharedFact, prefix: str, wanted: list[RegistryToken]):
    """
    Keep the programs' tokens in Consul: each linked to its own policy alone, holding its rules; and
    remove this mesh's tokens and policies that the spec no longer names.

    + registry: where Consul is
    + token: the management token file's contents, read once per run
    + prefix: how the descriptions of this mesh's tokens and policies begin
    + wanted: every program token of the mesh
    """
    management = read_token(token)
    client = registry.client(management)
    try:
        policies = {p["Name"]: p for p in client.acl.policy.list()}
        tokens = {t["AccessorID"]: t for t in client.acl.token.list()}
        rules = {p["Name"]: _parsed(client.acl.policy.read(p["ID"])["Rules"]) for p in policies.values()
                 if p["Name"] in {t.name for t in wanted}}
    except consul.ACLDisabled:
        host.noop(f"Consul at {registry.where} has its ACLs off: it lets every program do anything")
        return
    except UNREACHABLE:  # a --dry run before the agent exists
        policies, tokens, rules = {}, {}, {}
    changes = 0
    for want in wanted:
        accessor, secret = derived_ids(management, want.name) if management else ("", "")
        policy = policies.get(want.name)
        if rules.get(want.name) != want.rules or (policy or {}).get("Description") != want.description:
            changes += 1
            yield reported(_put_policy, registry, management, policy and policy["ID"], want)
        if not _token_as_wanted(tokens.get(accessor), secret, want):
            changes += 1
            yield reported(_put_token, registry, management, tokens.get(accessor), want)
    keep = {derived_ids(management, w.name)[0] for w in wanted} if management else set()
    for accessor in sorted(a for a, t in tokens.items() if (t.get("Description") or "").startswith(prefix) and a not in keep):
        changes += 1
        yield reported(_delete_token, registry, management, accessor)
    for policy in sorted((p for p in policies.values() if (p.get("Description") or "").startswith(prefix)
                          and p["Name"] not in {w.name for w in wanted}), key=lambda p: p["Name"]):
        changes += 1
        yield reported(_delete_policy, registry, management, policy["ID"])
    if not changes:
        host.noop(f"{len(wanted)} program tokens hold their policies in Consul")


def _sources(entry: dict) -> list[tuple[str, str, str]]:
    return sorted((s.get("Name", ""), s.get("Action", ""), s.get("Description", "")) for s in entry.get("Sources") or [])


def _put_intentions(registry: Registry, management: str, entry: dict) -> None:
    registry.client(management).config.set("service-intentions", entry["Name"], {"Sources": entry["Sources"]})


def _delete_intentions(registry: Registry, management: str, destination: str) -> None:
    registry.client(management).config.delete("service-intentions", destination)


@operation()
def intentions(registry: Registry, token: SharedFact, prefix: str, wanted: list[dict]):
    """
    Keep the mesh's intentions in Consul, one service-intentions config entry per destination
    (render.intentions), and remove this mesh's entries for destinations the spec no longer names.

    + registry: where Consul is
    + token: the management token file's contents, read once per run
    + prefix: how the descriptions of this mesh's intentions begin
    + wanted: the service-intentions entries
    """
    management = read_token(token)
    try:
        current = {e["Name"]: e for e in registry.client(management).config.list("service-intentions")}
    except UNREACHABLE:  # a --dry run before the agent exists
        current = {}
    changes = 0
    for entry in wanted:
        if entry["Name"] not in current or _sources(current[entry["Name"]]) != _sources(entry):
            changes += 1
            yield reported(_put_intentions, registry, management, entry)
    names = {e["Name"] for e in wanted}
    for name, entry in sorted(current.items()):
        ours = entry.get("Sources") and all((s.get("Description") or "").startswith(prefix) for s in entry["Sources"])
        if name not in names and ours:
            changes += 1
            yield reported(_delete_intentions, registry, management, name)
    if not changes:
        host.noop(f"{sum(len(e['Sources']) for e in wanted)} intentions on {len(wanted)} destinations are in Consul")


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
            raise OperationError(f"Consul at {registry.where} did not answer within {timeout:.0f}s")
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
        host.noop(f"Consul answers at {registry.where}")
    except UNREACHABLE:
        yield reported(_wait_answering, registry, read_token(token), timeout)


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
        yield reported(_register, registry, token_value, body)


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
        yield reported(_deregister, registry, token_value, sid)
