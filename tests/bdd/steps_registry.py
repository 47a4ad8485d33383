"""Steps about what each program may do: the registry's tokens (who holds which, what Consul lets
each one do) and HAProxy's admin surfaces (who may open its runtime API, who may read its stats)."""

from __future__ import annotations

import json
import stat
import subprocess
import tempfile
from pathlib import Path

import consul
import httpx
import pytest
from pytest_bdd import parsers, then, when

from meshspec.common.consul_token import read_token
from meshspec.common.haproxy_shape import LOADED_SHAPE, read_shape
from meshspec.plan.layout import MASTER_SOCKET, STATS_CREDENTIALS
from meshspec.render.haproxy import proxy_paths
from meshspec.runtime.probes.owner import Listeners, holder
from meshspec.runtime.proxy.runtime_api import RuntimeApi, RuntimeApiError
from tests.support import wait_until


def _token(world, service: str) -> str:
    return read_token(world.target.plan.layout.service_token_file(service))


def _client(world, token: str | None):
    return world.target.mesh.registry.client(token, 5)


def _mesh_processes(world) -> dict[int, tuple[str, str]]:
    """{pid: (command line, environment)} of every process that runs under the mesh's state dir."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or a kernel thread
            continue
        if world.target.state_dir in cmdline or world.target.state_dir in environ:
            found[int(proc.name)] = (cmdline, environ)
    return found


@then("of the mesh's processes only the registry names the management token file")
def _(world):
    path = str(world.target.plan.layout.consul_token_file)
    naming = {pid: cmd for pid, (cmd, env) in _mesh_processes(world).items() if path in cmd or path in env}
    assert naming, f"no process names {path}: the registry does not start with the management token"
    others = {pid: cmd[:160] for pid, cmd in naming.items() if " agent " not in f"{cmd} "}
    assert not others, f"processes other than the registry name the management token file: {others}"


def _proxy_certificate(world) -> Path:
    return Path(proxy_paths(world.target.plan)["certificate"])


def _private_key_lines(path: Path) -> set[str]:
    """The base64 lines of the private key in a PEM file (its certificates are public)."""
    pem = path.read_text()
    start, end = pem.index("PRIVATE KEY-----"), pem.rindex("-----END")
    return {line for line in pem[start:end].splitlines()[1:] if len(line) >= 32}


def _secrets(world) -> set[str]:
    """Every secret the deploy made for the mesh, read from its files: the management token, each
    program's token, the stats page's password, the backing services' passwords, the consumers' API
    keys; and the private keys of the mesh CA and of the proxy's certificate (which the controller rotates)."""
    layout = world.target.plan.layout
    secrets = {read_token(layout.consul_token_file)} | {_token(world, s.name) for s in world.target.plan.spec.services}
    secrets |= _private_key_lines(Path(layout.connect_ca_key_file)) | _private_key_lines(_proxy_certificate(world))
    secrets |= {Path(layout.consumer_key_file(c.name)).read_text().strip() for c in world.target.plan.spec.consumers}
    secrets |= {_stats_credentials(world).read_text().strip().partition(":")[2]}
    secrets |= {Path(layout.probe_credentials_file(s.name)).read_text().strip().partition(":")[2]
                for s in world.target.plan.spec.services if s.credentials}
    assert None not in secrets and "" not in secrets and len(secrets) > len(world.target.plan.spec.services)
    return secrets


def _holding(paths: list[str], secrets: set[str]) -> list[str]:
    """Those of `paths` that hold any of `secrets` (grep -F, patterns from a 0600 file)."""
    with tempfile.NamedTemporaryFile("w", prefix="meshspec-secrets-") as patterns:
        patterns.write("\n".join(sorted(secrets)) + "\n")
        patterns.flush()
        found = subprocess.run(["xargs", "-0", "-r", "grep", "-lsF", "-f", patterns.name, "--"], input="\0".join(paths),
                               capture_output=True, text=True, timeout=300)
    return found.stdout.split()


@then("no process of the mesh carries a secret in its command line or environment")
def _(world):
    secrets = _secrets(world)
    processes = _mesh_processes(world)
    # most instances run a process that names the state dir (its data dir, a config): finding few
    # means the search looked in the wrong place, and a clean result would prove nothing
    assert len(processes) >= len(world.target.plan.spec.services) // 2, f"only {len(processes)} processes of the mesh were found"
    leaks = {pid: cmd[:160] for pid, (cmd, env) in processes.items() if any(s in cmd or s in env for s in secrets)}
    assert not leaks, f"processes carry a secret in their command line or environment: {leaks}"


@then("no file under the mesh's state dir that is not 0600, and no container log, holds a secret")
def _(world):
    """The logs (supervisord's and each program's), rendered configs, databases of the services:
    every file of the state dir another user might read, whatever its mode says of its dir."""
    root = Path(world.target.state_dir)
    files = [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
             and stat.S_IMODE(p.stat().st_mode) != 0o600]
    assert len(files) > 100, f"only {len(files)} files under {root}"  # the logs alone are more
    logs = [str(p) for p in Path("/var/lib/docker/containers").glob("*/*-json.log")] \
        if Path("/var/lib/docker/containers").is_dir() else []
    leaks = _holding(files + logs, _secrets(world))
    assert not leaks, f"files others may read hold a secret: {leaks}"


@then("the registry's catalog, health, agent and KV answers hold no secret")
def _(world):
    c = world.target.consul()
    answers = [c.catalog.services(), c.catalog.nodes(), c.health.state("any"), c.agent.services(), c.agent.checks(),
               c.kv.get("", recurse=True)]
    answers += [c.catalog.service(name) for name in answers[0][1]]
    text = json.dumps(answers, default=str)
    assert len(answers[0][1]) >= len(world.target.plan.spec.services), "the catalog misses services"
    leaks = sorted(s[:8] + "..." for s in _secrets(world) if s in text)
    assert not leaks, f"the registry's answers hold secrets: {leaks}"


@then(parsers.parse('the token of "{service}" is refused the deregistration of "{other}" with 403'))
def _(world, service, other):
    victim = world.target.instances_of(other)[0].id
    with pytest.raises(consul.ACLPermissionDenied):
        _client(world, _token(world, service)).agent.service.deregister(victim)
    assert victim in _client(world, read_token(world.target.plan.layout.consul_token_file)).agent.services()


@then(parsers.parse('the token of "{service}" is refused a key write with 403'))
def _(world, service):
    with pytest.raises(consul.ACLPermissionDenied):
        _client(world, _token(world, service)).kv.put(f"meshspec-test/{service}", "x")


@then(parsers.parse('the token of "{service}" reads the passing instances of "{other}"'))
def _(world, service, other):
    _, nodes = _client(world, _token(world, service)).health.service(other, passing=True)
    assert sorted(n["Service"]["ID"] for n in nodes) == sorted(i.id for i in world.target.instances_of(other))


@then(parsers.parse('the token of "{service}" reads no instance of "{other}"'))
def _(world, service, other):
    _, nodes = _client(world, _token(world, service)).health.service(other)
    assert nodes == [], f"{service}'s token reads {len(nodes)} instance(s) of {other}, which it does not depend on"
    _, everything = _client(world, read_token(world.target.plan.layout.consul_token_file)).health.service(other)
    assert everything, f"{other} has no instance at all: the filtering was not tested"


@then(parsers.parse('the token of "{service}" reads every service of the plan'))
def _(world, service):
    _, services = _client(world, _token(world, service)).catalog.services()
    missing = {s.name for s in world.target.plan.spec.services} - set(services)
    assert not missing, f"{service}'s token does not read {sorted(missing)}"


@then("an anonymous read of Consul's catalog lists no service")
def _(world):
    _, services = _client(world, None).catalog.services()
    assert services == {}, f"the anonymous token reads {sorted(services)}"


# --- HAProxy's runtime API ---------------------------------------------------------------------------


def _proxy_master(world) -> int:
    return int(Path(proxy_paths(world.target.plan)["pidfile"]).read_text().split()[0])


@then(parsers.parse('the proxy\'s runtime API and master CLI are unix sockets of "{user}", mode 0600'))
def _(world, user):
    """The owner named as HAProxy's own root names it (the host's /etc/passwd, or its image's)."""
    plan = world.target.plan
    for path in (Path(plan.proxy_runtime), Path(plan.proxy_file(MASTER_SOCKET))):
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode), f"{path} is not a socket"
        owner = _name_of(info.st_uid, _proxy_master(world))
        assert (owner, stat.S_IMODE(info.st_mode)) == (user, 0o600), f"{path}: {owner}, mode {info.st_mode:o}"


@then(parsers.parse('"{user}" reads HAProxy\'s servers through its runtime API and its processes through its master CLI'))
def _(world, user):
    plan = world.target.plan
    ask = ("import socket, sys\n"
           "for path, command in ((sys.argv[1], b'show servers state\\n'), (sys.argv[2], b'show proc\\n')):\n"
           "    s = socket.socket(socket.AF_UNIX); s.connect(path); s.sendall(command); s.shutdown(socket.SHUT_WR)\n"
           "    print(b''.join(iter(lambda: s.recv(65536), b'')).decode())\n")
    tried = subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-c", ask, plan.proxy_runtime,
                            plan.proxy_file(MASTER_SOCKET)], capture_output=True, text=True, timeout=30)
    assert tried.returncode == 0, tried.stderr
    assert "# be_id be_name srv_id" in tried.stdout and f"{_proxy_master(world)}" in tried.stdout, tried.stdout[:500]


@then("an unprivileged user cannot open the proxy's runtime API")
def _(world):
    connect = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({world.target.plan.proxy_runtime!r})"
    tried = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", connect],
                           capture_output=True, text=True, timeout=30)
    assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried.stderr


@then("the proxy's runtime API answers root")
def _(world):
    assert "Name: HAProxy" in world.target.runtime_api.send("show info")


# --- HAProxy's stats page ----------------------------------------------------------------------------


def _stats(world, auth: tuple[str, str] | None) -> httpx.Response:
    proxy = world.target.plan.instances_of(world.target.plan.spec.proxy.service)[0]
    url = f"http://{proxy.address}:{proxy.ports[world.target.plan.spec.proxy.stats_port_name]}/stats;csv"
    return httpx.get(url, auth=auth, trust_env=False, timeout=10)


def _stats_credentials(world) -> Path:
    return Path(world.target.plan.proxy_file(STATS_CREDENTIALS))


@then("the proxy's stats page answers 401 without credentials")
def _(world):
    answer = _stats(world, None)
    assert answer.status_code == 401 and "mesh,FRONTEND" not in answer.text, answer.status_code


@then("the proxy's stats page answers 401 to a wrong password")
def _(world):
    assert _stats(world, ("meshspec", "not-the-password")).status_code == 401


@then("the proxy's stats page lists the mesh's frontend with the deploy's credentials")
def _(world):
    user, _, password = _stats_credentials(world).read_text().strip().partition(":")
    answer = _stats(world, (user, password))
    assert answer.status_code == 200 and "mesh,FRONTEND" in answer.text, answer.text[:200]


@then("the stats credentials are root's, mode 0600, in a directory only root may list")
def _(world):
    path = _stats_credentials(world)
    file, directory = path.stat(), path.parent.stat()
    assert (file.st_uid, stat.S_IMODE(file.st_mode)) == (0, 0o600), f"{path}: uid {file.st_uid}, mode {file.st_mode:o}"
    # 0700, or 0711 where the controller's user passes to the userlist beside it (process runtime)
    assert directory.st_uid == 0 and stat.S_IMODE(directory.st_mode) in (0o700, 0o711), \
        f"{path.parent}: uid {directory.st_uid}, mode {directory.st_mode:o}"


@then("an unprivileged user cannot read the stats credentials")
def _(world):
    tried = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(_stats_credentials(world))],
                           capture_output=True, text=True, timeout=30)
    assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried.stderr


# --- who the programs run as ---------------------------------------------------------------------------


def _user_of(pid: int) -> str | None:
    """Who `pid` runs as (its real uid), named as the process's own root sees it: the host's
    /etc/passwd, or its container image's."""
    with open(f"/proc/{pid}/status") as status:
        uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
    return _name_of(uid, pid)


def _name_of(uid: int, pid: int) -> str:
    """The name of `uid` in the /etc/passwd of process `pid`'s root."""
    with open(f"/proc/{pid}/root/etc/passwd") as passwd:
        names = {int(fields[2]): fields[0] for fields in (line.split(":") for line in passwd if line.count(":") >= 6)}
    return names.get(uid, f"uid {uid}")


@then(parsers.parse('the process that listens for "{service}" runs as "{user}", not as root'))
def _(world, service, user):
    inst = world.target.plan.instances_of(service)[0]
    pid = holder(Listeners().inodes(inst.address, inst.port, fresh=True))
    assert pid, f"nothing listens at {inst.address}:{inst.port}"
    assert _user_of(pid) == user, f"pid {pid} of {service} runs as {_user_of(pid)}"


@then(parsers.parse('of the mesh\'s secret files "{user}" can read only "{files}"'))
def _(world, user, files):
    """Tried as `user` itself (runuser), on every file of the mesh's secrets: the tokens, the mesh
    CA, the stats page's credentials, the proxy's certificate and key, the backing services'
    passwords ("nothing": none of them)."""
    root = Path(world.target.plan.layout.root)
    secrets = sorted(str(p) for p in [*(root / "consul").rglob("*"), *Path(_stats_credentials(world)).parent.glob("*"),
                                      *_proxy_certificate(world).parent.glob("*"), *(root / "secrets").rglob("*"),
                                      *Path(proxy_paths(world.target.plan)["consumers"]).parent.glob("*")]
                     if p.is_file())
    assert len(secrets) > 40, secrets  # every service's token, the checker's, the management token, the stats files
    tried = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", 'for f; do cat -- "$f" >/dev/null 2>&1 && echo "$f"; done',
                            "sh", *secrets], capture_output=True, text=True, timeout=60)
    readable = [str(Path(line).relative_to(root)) for line in tried.stdout.split()]
    wanted = [] if files == "nothing" else sorted(f.strip() for f in files.split(","))
    assert readable == wanted, f"{user} can read {readable}"


@then(parsers.parse('HAProxy\'s master runs as root and every worker of it as "{user}"'))
def _(world, user):
    master = _proxy_master(world)
    workers = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    assert _user_of(master) == "root" and workers, f"master {master} runs as {_user_of(master)}; workers {workers}"
    assert {pid: _user_of(pid) for pid in workers} == {pid: user for pid in workers}


# --- reloads without root ----------------------------------------------------------------------------


def _master_reloads(world) -> int:
    """The master's reload count, from its CLI (`show proc`: `<pid> master <reloads> [failed: n] ...`);
    -1 while the master re-executes itself (its CLI is bound again)."""
    try:
        reply = RuntimeApi(world.target.plan.proxy_file(MASTER_SOCKET)).send("show proc")
    except RuntimeApiError:
        return -1
    return int(next(line.split()[2] for line in reply.splitlines() if " master " in f" {line} "))


def _reloaded(world, before: int, loaded: str) -> None:
    """Until the master counts one more reload and the controller wrote the shape HAProxy loaded."""
    shape_file = Path(proxy_paths(world.target.plan)["state_file"]).with_name(LOADED_SHAPE)
    wait_until(lambda: _master_reloads(world) == before + 1 and shape_file.read_text().strip() == loaded, 30,
               what=f"reload {before + 1} of HAProxy's master, to shape {loaded}")


@when("haproxy.cfg's shape changes, then changes back")
def _(world):
    """Only the shape line's hash differs: the config HAProxy loads stays valid and the same, and
    the controller must reload for each change, through the master CLI, as its own user."""
    config = Path(proxy_paths(world.target.plan)["config"])
    text = config.read_text()
    original = read_shape(text)["hash"]
    changed = f"{original}-bdd"
    world.reloads_before = _master_reloads(world)
    try:
        config.write_text(text.replace(f'"hash":"{original}"', f'"hash":"{changed}"', 1))
        _reloaded(world, world.reloads_before, changed)
    finally:
        config.write_text(text)
    _reloaded(world, world.reloads_before + 1, original)


@then("the controller reloaded HAProxy twice, and reports both HAProxy and Consul reachable")
def _(world):
    assert _master_reloads(world) == world.reloads_before + 2
    controller = world.target.plan.instances_of("mesh-controller")[0]
    health = httpx.get(f"http://{controller.address}:{controller.port}/health", trust_env=False, timeout=10)
    assert '"haproxy": true, "consul": true' in health.text, health.text
