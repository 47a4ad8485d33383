"""`meshspec cluster up|down` (`make cluster`): three hosts in network namespaces, each with its
own sshd, hostname and /srv/meshspec, reached by pyinfra over SSH through the project's inventory
from the hosts file the cluster writes; and nothing left once it is down."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from meshspec.cluster import BRIDGE, FORWARDING, PREFIX, SSHD, address, namespaces
from meshspec.common.consul_token import token_in
from tests.cluster_support import arrivals, carrying
from tests.integration.meshrun import BIN, REPO

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not Path(SSHD).exists() or not shutil.which("ip"),
                                 reason="needs root, ip and Debian's openssh-server (.ci/run installs it)")]


def meshspec(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "meshspec"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


def left_behind(directory: Path) -> list[str]:
    """What of a cluster this machine still has: namespaces, the bridge, sshds, mounts, the directory."""
    found = namespaces()
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        found.append(BRIDGE)
    found += [f"process {p}" for p in subprocess.run(["pgrep", "-f", str(directory)], capture_output=True,
                                                      text=True).stdout.split()]
    found += [f"mount in {m.parent.name}" for m in Path("/proc").glob("[0-9]*/mountinfo")
              if _mentions(m, str(directory))]
    found += [f"iptables rule {line}" for table in ("nat", "filter")
              for line in subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
              if "meshspec-cluster" in line]
    return found + ([str(directory)] if directory.exists() else [])


@contextlib.contextmanager
def answering(urls: list[str]):
    """How many of the URLs answered 200, each 50 ms while the block runs."""
    counts, stop = [], threading.Event()

    def poll():
        with httpx.Client(trust_env=False, timeout=0.5) as client:
            while not stop.is_set():
                answered = 0
                for url in urls:
                    try:
                        answered += client.get(url).status_code == 200
                    except httpx.HTTPError:
                        pass
                counts.append(answered)
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield counts
    finally:
        stop.set()
        poller.join()


@contextlib.contextmanager
def forward_policy(policy: str):
    before = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout.split()[2]
    bridged = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    was = bridged.read_text() if bridged.exists() else None
    subprocess.run(["iptables", "-P", "FORWARD", policy], check=True)
    if was is not None:
        bridged.write_text("1\n")  # bridged frames through iptables, as a docker engine has them
    try:
        yield
    finally:
        subprocess.run(["iptables", "-P", "FORWARD", before], check=True)
        if was is not None:
            bridged.write_text(was)


@contextlib.contextmanager
def registered_by_hand(host: str, service: str, instance: str, port: int, directory: Path, token: str):
    """A web server on `host` that no deploy knows of, answering its ID, registered by hand with the
    registry (on h1) as an instance of `service`, with no check (passing, as Consul takes it); gone after."""
    directory.mkdir()
    (directory / "index.html").write_text(f"{instance}\n")
    server = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-{host}", "python3", "-m", "http.server", str(port),
                               "--bind", address(host), "--directory", str(directory)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = f"http://{address('h1')}:18500/v1/agent/service"
    headers = {"X-Consul-Token": token}
    try:
        httpx.put(f"{agent}/register", headers=headers, trust_env=False, json={
            "ID": instance, "Name": service, "Address": address(host), "Port": port}).raise_for_status()
        yield
    finally:
        httpx.put(f"{agent}/deregister/{instance}", headers=headers, trust_env=False).raise_for_status()
        server.terminate()
        server.wait(10)


def _mentions(path: Path, text: str) -> bool:
    try:
        return text in path.read_text()
    except OSError:  # the process ended meanwhile
        return False


def test_three_hosts_over_ssh_each_with_its_own_state_and_nothing_left_after(tmp_path):
    directory = tmp_path / "cluster"
    assert not namespaces(), f"a cluster ({PREFIX}-*) is up already"
    forwarding = FORWARDING.read_text()
    up = meshspec("cluster", "up", "--dir", str(directory))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"MESH_HOSTS_FILE={directory / 'hosts'}" in up.stdout
        env = {"MESH_HOSTS_FILE": str(directory / "hosts")}
        # pyinfra, through the project's inventory, on each host at once over SSH
        ran = subprocess.run([str(BIN / "pyinfra"), "-y", "inventory", "exec", "--",
                              "echo seen-by-$(hostname); touch /srv/meshspec/mine-$(hostname); ls /srv/meshspec"],
                             capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **env})
        printed = ran.stdout + ran.stderr  # pyinfra logs the commands' output to stderr
        assert ran.returncode == 0, printed
        for host in ("h1", "h2", "h3"):
            said = [line.split("] ", 1)[1] for line in printed.splitlines() if line.startswith(f"[{host}] ")]
            assert f"seen-by-{host}" in said, printed  # its own hostname (UTS namespace)
            assert [s for s in said if s.startswith("mine-")] == [f"mine-{host}"], printed  # its own state dir
        assert not list(Path("/srv/meshspec").glob("mine-*")), "a host wrote into this machine's /srv/meshspec"
        # each other, as a host's services reach the registry and the others' services, under the
        # FORWARD policy a running docker engine sets (DROP, bridged frames included)
        with forward_policy("DROP"):
            for source, target in (("h2", "h1"), ("h1", "h3")):
                reached = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-{source}", "timeout", "5", "bash", "-c",
                                          f"exec 3<>/dev/tcp/{address(target)}/22 && head -c 7 <&3"],
                                         capture_output=True, text=True, timeout=30)
                assert reached.stdout == "SSH-2.0", f"{source} -> {target}: {reached.stdout!r} {reached.stderr}"
        # the package registries, through this machine, as a deploy's installs need them
        reached = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-h2", "getent", "hosts", "pypi.org"],
                                 capture_output=True, text=True, timeout=30)
        assert reached.returncode == 0 and reached.stdout.strip(), reached.stderr
        # placement by the hosts file's groups
        listed = meshspec("validate", "-i", env=env)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "h1 (10.213.0.2) [groups: core]" in listed.stdout and "h3 (10.213.0.4) [groups: web]" in listed.stdout
    finally:
        down = meshspec("cluster", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not left_behind(directory)
    assert FORWARDING.read_text() == forwarding, "IP forwarding was not put back as it was"


def test_a_second_cluster_is_refused_while_one_is_up(tmp_path):
    directory = tmp_path / "cluster"
    directory.mkdir()  # as an existing cluster's directory
    refused = meshspec("cluster", "up", "--dir", str(directory))
    assert refused.returncode != 0 and "is up already" in refused.stdout + refused.stderr
    assert not namespaces()


def test_a_failing_step_is_one_line_and_leaves_nothing(tmp_path):
    """h2's link cannot be made (a link of its name is there): `up` names the step in one line and
    removes what it had made, h1's sshd and namespace among them."""
    directory = tmp_path / "cluster"
    forwarding = FORWARDING.read_text()
    subprocess.run(["ip", "link", "add", f"{PREFIX}-h2", "type", "bridge"], check=True)
    try:
        failed = meshspec("cluster", "up", "--dir", str(directory))
    finally:
        subprocess.run(["ip", "link", "del", f"{PREFIX}-h2"], check=True)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    said = failed.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"cluster up failed: `ip link add {PREFIX}-h2 type veth"), said
    assert "Traceback" not in failed.stdout + failed.stderr
    assert not left_behind(directory)
    assert FORWARDING.read_text() == forwarding


SPREAD = """\
# The registry on h1 (group core), a proxy and its controller on every host, a web server's three
# replicas one per host, and the notes they depend on, on h3 alone (h1's and h2's proxies tunnel it).
version: 1
mesh: {name: spread, replica_port_step: 100}
proxy: {service: mesh-proxy, controller: mesh-controller}
defaults:
  health: {interval: 1s, timeout: 1s}
services:
  - name: consul
    kind: core
    description: the embedded agent
    port: 18500
    placement: {hosts: [core]}
    process:
      command: ["{meshspec}", agent, --bind, "{address}", --port, "{port}", --data-dir, "{state_dir}",
                --token-file, "{consul.management_token_file}", --trust-domain, "{mesh.name}",
                --ca-cert, "{consul.ca_file}", --ca-key, "{consul.ca_key_file}"]
    health: {http: {path: /v1/status/leader}}
    routing: {enabled: false}
  - name: mesh-proxy
    kind: core
    description: HAProxy, one per host
    port: 18005
    ports: {stats: 18007, mtls: 18015, inbound: 18016}
    placement: {per_host: true}
    process:
      files: {"{state_dir}/haproxy.cfg": haproxy}
      command: [/usr/sbin/haproxy, -W, -db, -S, "{proxy.master}", -f, "{state_dir}/haproxy.cfg", -f, "{proxy.stats_users}"]
      system_users: [meshspec-proxy]
      stop_signal: USR1
    health: {http: {port: stats, path: '/stats;csv', contains: 'mesh,FRONTEND', credentials: "{proxy.stats_credentials}"}}
    routing: {enabled: false}
  - name: mesh-controller
    kind: core
    description: the controller of its host's proxy
    port: 18012
    placement: {per_host: true}
    depends_on: [consul, mesh-proxy]
    registry: {read: all}
    process:
      command: ["{meshspec}", controller, --consul, "{consul.addr}", --token-file, "{consul.token_file}",
                --listen, "{address}:{port}", --mesh, "{mesh.name}", --haproxy-runtime, "{proxy.runtime}",
                --haproxy-config, "{services.mesh-proxy.state_dir}/haproxy.cfg"]
      user: meshspec-proxy
    health: {http: {path: /health, contains: '"haproxy": true, "consul": true'}}
    routing: {enabled: false}
  - name: web
    kind: core
    description: Python's HTTP file server, serving its instance directory
    port: 18080
    replicas: 3
    depends_on: [notes]
    process:
      prepare: [[sh, -c, "echo {id} > index.html"]]
      command: [python3, -m, http.server, "{port}", --bind, "{address}", --directory, "{state_dir}"]
      stop_signal: INT
    health: {http: {path: /index.html, contains: "{id}"}}
  - name: notes
    kind: core
    description: Python's HTTP file server again, on h3 alone
    port: 18090
    placement: {hosts: [h3]}
    process:
      prepare: [[sh, -c, "echo {id} > index.html"]]
      command: [python3, -m, http.server, "{port}", --bind, "{address}", --directory, "{state_dir}"]
      stop_signal: INT
    health: {http: {path: /index.html, contains: "{id}"}}
    routing: {enabled: false}
"""
WEB_PORTS = [18080 + 100 * r for r in range(3)]  # replica_port_step


def test_a_mesh_spread_over_three_hosts_deploys_verifies_and_goes(tmp_path):
    """The deploy over SSH, each host in parallel; verify reading each host over SSH (its
    supervisord, its instances' probes run there); the teardown; nothing left on any host."""
    directory, spec = tmp_path / "cluster", tmp_path / "spread.yaml"
    spec.write_text(SPREAD)
    up = meshspec("cluster", "up", "--dir", str(directory))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env = {"MESH_HOSTS_FILE": str(directory / "hosts"), "MESH_SPEC": str(spec)}
        deployed = meshspec("deploy", env=env, timeout=600)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        # the management token only where the registry runs: the others' secrets derive from it there
        assert (directory / "h1/srv/consul/management-token").exists()
        assert not list(directory.glob("h[23]/srv/consul/management-token"))
        # What verify says to another host's service with a secret goes inside SSH: the management
        # token never arrives at h1 from elsewhere, nor a route's request at a host's proxy; and it
        # connects to no instance's port from another machine (h3's are connected to on h3).
        token = token_in((directory / "h1/srv/consul/management-token").read_text())
        with carrying("h1", {"token": token, "route": "GET /svc/web/"}) as h1, \
                carrying("h2", {"route": "GET /svc/web/"}) as h2, arrivals("h3", {"web": WEB_PORTS[2], "notes": 18090}) as h3:
            verified = meshspec("verify", "--json", env=env)
            plain = {"h1": h1(), "h2": h2(), "h3": h3()}
        run = json.loads(verified.stdout)
        assert plain == {"h1": {"token": 0, "route": 0}, "h2": {"route": 0}, "h3": {"web": 0, "notes": 0}}, plain
        assert verified.returncode == 0, [c["reason"] for c in run["checks"] if c["status"] != "passed"]
        checks = {(c["subject"], c["check"]): c for c in run["checks"]}
        for instance, host in (("web-h1-0", "h1"), ("web-h2-1", "h2"), ("web-h3-2", "h3")):
            held = checks[(instance, "healthy")]["reason"]
            assert f"answered HTTP 200 OK with '{instance}'" in held and f"of program {instance}" in held, held
            assert checks[(instance, "running")]["status"] == "passed"  # its host's supervisord, read over SSH
        assert checks[("mesh", "counts")]["reason"] == "11 planned, 11 running, 11 registered, 11 passing"
        # Every host's proxy routes to every replica; one on another host is reached through that
        # host's proxy over mTLS: no packet from another host reaches a web replica's own port.
        with arrivals("h1", {"web": WEB_PORTS[0], "inbound": 18016}) as h1, \
                arrivals("h3", {"web": WEB_PORTS[2], "inbound": 18016}) as h3, \
                httpx.Client(trust_env=False, timeout=5) as client:
            answered = collections.Counter(client.get(f"http://{address('h2')}:18005/svc/web/index.html").text.strip()
                                           for _ in range(30))
            assert set(answered) == {"web-h1-0", "web-h2-1", "web-h3-2"}, answered
            assert h1()["web"] == h3()["web"] == 0 and h1()["inbound"] > 0 and h3()["inbound"] > 0, (h1(), h3())
        # Instances no deploy knows of, registered by hand on h2, of web (routed) and of notes (which
        # h1's proxy tunnels to h3): h1's proxy reaches both, through h2's inbound listener, which
        # names them in the inbound map h2's controller keeps; h1's controller adds the one to its
        # web backend, the other to its notes tunnel. Before that map h2's listener refused them;
        # before the controller followed the tunnels, h1's tunnel knew notes-h3-0 alone.
        with registered_by_hand("h2", "web", "web-by-hand", 18950, tmp_path / "web-by-hand", token), \
                registered_by_hand("h2", "notes", "notes-by-hand", 18960, tmp_path / "notes-by-hand", token), \
                arrivals("h2", {"web": 18950, "notes": 18960}) as h2, httpx.Client(trust_env=False, timeout=5) as client:
            for by_hand, url in (("web-by-hand", f"http://{address('h1')}:18005/svc/web/index.html"),
                                 ("notes-by-hand", f"http://{address('h1')}:18090/index.html")):
                answers, start = [], time.monotonic()
                while by_hand not in {text for _, text in answers} and time.monotonic() < start + 20:
                    got = client.get(url)
                    answers.append((got.status_code, got.text.strip()))
                    time.sleep(0.1)
                print(f"{by_hand}: answered through h1 after {time.monotonic() - start:.1f} s, {len(answers)} calls")
                assert by_hand in {text for _, text in answers} and {code for code, _ in answers} == {200}, \
                    collections.Counter(answers)
            assert h2() == {"web": 0, "notes": 0}, h2()
        # A release that restarts every replica, host by host: two of the three answer throughout.
        # The deploy reaches each host's agent through that host's SSH connection (h2's and h3's
        # is their own address, which their proxy tunnels to h1): no packet from the deploying
        # machine, nor from another host, reaches the registry's own port while it registers and
        # waits for the checks.
        spec.write_text(SPREAD.replace("      stop_signal: INT\n", "      stop_signal: INT\n      env: {RELEASE: '2'}\n"))
        replicas = [f"http://10.213.0.{2 + r}:{18080 + 100 * r}/index.html" for r in range(3)]  # replica_port_step
        with answering(replicas) as counts, arrivals("h1", {"registry": 18500}) as registry:
            rolled = meshspec("deploy", "--rolling", env=env, timeout=600)
            direct = registry()["registry"]
        assert rolled.returncode == 0, rolled.stdout[-3000:] + rolled.stderr[-3000:]
        assert direct == 0, f"{direct} packets reached the registry's port from elsewhere than h1"
        assert min(counts) >= 2 and 2 in counts, collections.Counter(counts)  # each replica down once, never two at a time
        assert [line for line in rolled.stdout.splitlines() if line.startswith("==> rolling")] == [
            f"==> rolling deploy: h{n} ({n} of 3)" for n in (1, 2, 3)]
        down = meshspec("deploy", "deploys/teardown.py", env=env, timeout=300)
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
        # Each port is found free on its own host: no connect of verify's reaches h3 from elsewhere.
        with arrivals("h3", {"web": WEB_PORTS[2], "notes": 18090}) as h3:
            gone = meshspec("verify", "--gone", "--json", env=env)
            connects = h3()
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert connects == {"web": 0, "notes": 0}, connects
        free = {c["subject"]: c["reason"] for c in json.loads(gone.stdout)["checks"] if c["check"] == "port-free"}
        assert free["web-h3-2"].endswith(", on h3") and "nothing listens" in free["web-h3-2"], free
    finally:
        meshspec("cluster", "down", "--dir", str(directory))
    assert not left_behind(directory)
