"""The mesh's resources, one small class each, with predicate properties over one backend call.

In pytest-testinfra's style: ``Port("127.0.0.1", port).is_listening``,
``McpServer(url).completes_handshake``, ``Registration(services, expected, checks).matches``. When a
predicate is false, ``reason`` says why in one line. Shared reads (supervisord's program states,
Consul's services and checks) are read once into a snapshot and handed to the classes.
"""

from __future__ import annotations

import re
import socket
import ssl
import tempfile
import xmlrpc.client
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx
from cryptography import x509

from meshspec.render.registrations import differences
from meshspec.runtime.probes.mcp import McpResult, probe_mcp
from meshspec.runtime.supervisor_rpc import supervisor_rpc


def one_line(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- supervisord -------------------------------------------------------------------------------

#: A Docker container's cgroup, as the cgroupfs driver (`/docker/<id>`) or systemd's
#: (`docker-<id>.scope`) names it in /proc/PID/cgroup.
CONTAINER_CGROUP = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})\b")


def in_container(cgroup: str) -> str | None:
    """The id of the Docker container a /proc/PID/cgroup text places its process in, or None."""
    found = CONTAINER_CGROUP.search(cgroup)
    return found.group(1) if found else None


def processes_in_containers(proc: Path = Path("/proc")) -> dict[int, str]:
    """{pid: container id} of every process the kernel places in a Docker container: what runs
    in containers, read without the engine (which may not answer)."""
    found = {}
    for entry in proc.glob("[0-9]*/cgroup"):
        try:
            container = in_container(entry.read_text())
        except OSError:  # the process ended while we read
            continue
        if container:
            found[int(entry.parent.name)] = container
    return found



@dataclass(frozen=True)
class Supervisor:
    """What runs the instances said about them: {name: (state, pid)}, read in one call: supervisord's
    programs (XML-RPC), or the docker runtime's containers by instance (`read_containers`)."""

    socket: str
    states: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    error: str | None = None  # why supervisord could not be read
    kind: str = "program"  # or "container"

    @classmethod
    def read_containers(cls, owner: dict[str, str], timeout: float = 2.0) -> Supervisor:
        """The mesh's containers as {instance id: (RUNNING | EXITED | ..., pid)}."""
        # Imported here: the Docker SDK (and pyinfra behind the engine module) cost a process-runtime
        # verify 0.14 s of its start.
        from docker.errors import DockerException

        from meshspec.converge.engine import containers_labelled

        try:
            found = containers_labelled(owner, timeout=max(1, int(timeout)))
        except DockerException as err:
            return cls("docker", error=f"the Docker engine does not answer: {one_line(err)}", kind="container")
        states = {c["instance"]: (c["status"].upper(), c["pid"]) for c in found.values()}
        return cls("docker", states, kind="container")

    @classmethod
    def read(cls, socket_path: str, timeout: float = 2.0) -> Supervisor:
        try:
            infos = supervisor_rpc(socket_path, timeout).getAllProcessInfo()
        except (OSError, xmlrpc.client.Error) as err:
            return cls(socket_path, error=f"supervisord at {socket_path} does not answer: {one_line(err) or type(err).__name__}")
        return cls.from_infos(socket_path, infos)

    @classmethod
    def from_infos(cls, where: str, infos: list[dict]) -> Supervisor:
        """From supervisord's getAllProcessInfo, read here or on another host (verify.remote)."""
        states = {}
        for info in infos:
            name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
            states[name] = (info["statename"], info.get("pid") or None)
        return cls(where, states)


class Program:
    """One supervisord program: ``Program(supervisor, "web-local-0").is_running``."""

    def __init__(self, supervisor: Supervisor, name: str) -> None:
        self.supervisor, self.name = supervisor, name

    @property
    def state(self) -> str | None:
        found = self.supervisor.states.get(self.name)
        return found[0] if found else None

    @property
    def pid(self) -> int | None:
        found = self.supervisor.states.get(self.name)
        return found[1] if found else None

    @property
    def is_running(self) -> bool:
        return self.state == "RUNNING"

    @property
    def reason(self) -> str:
        if self.supervisor.error:
            return self.supervisor.error
        kind = self.supervisor.kind
        if self.state is None:
            return f"{kind} {self.name} is not known to {'supervisord' if kind == 'program' else 'Docker'}"
        if self.is_running:
            return f"{kind} {self.name} is RUNNING (pid {self.pid})"
        return f"{kind} {self.name} is {self.state}"


# --- network endpoints -------------------------------------------------------------------------


class Port:
    """A TCP listener: ``Port("127.0.0.1", port).is_listening`` (one connect)."""

    def __init__(self, address: str, port: int, timeout: float = 1.0) -> None:
        self.address, self.port, self.timeout = address, port, timeout

    @cached_property
    def _error(self) -> str | None:
        try:
            with socket.create_connection((self.address, self.port), timeout=self.timeout):
                return None
        except TimeoutError:
            return f"timed out after {self.timeout:g} s"
        except OSError as err:
            return one_line(err.strerror or err).lower()

    @property
    def is_listening(self) -> bool:
        return self._error is None

    @property
    def reason(self) -> str:
        where = f"{self.address}:{self.port}"
        return f"{where} accepts connections" if self.is_listening else f"nothing listens at {where} ({self._error})"


class HttpEndpoint:
    """An HTTP endpoint: ``HttpEndpoint(url).answers_2xx`` (one request)."""

    def __init__(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 body: str | None = None, timeout: float = 2.0) -> None:
        self.url, self.method, self.headers, self.body, self.timeout = url, method, headers or {}, body, timeout

    @cached_property
    def _answer(self) -> tuple[int | None, str | None]:
        try:
            # Plain http needs no TLS context (building one costs ~20 ms of CPU per client).
            verify = True if self.url.startswith("https:") else False
            with httpx.Client(trust_env=False, timeout=self.timeout, verify=verify) as client:
                response = client.request(self.method, self.url, headers=self.headers, content=self.body)
            return response.status_code, None
        except httpx.TimeoutException:
            return None, f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as err:
            return None, one_line(err) or type(err).__name__

    @property
    def status(self) -> int | None:
        return self._answer[0]

    @property
    def answers_2xx(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def reason(self) -> str:
        status, error = self._answer
        if error is not None:
            return f"{self.method} {self.url} failed: {error}"
        return f"{self.method} {self.url} answered HTTP {status}"


@dataclass(frozen=True)
class TlsExchange:
    """One request over TLS: the status line HAProxy answered, the certificate it showed, or the error."""

    status: int | None = None
    server_uris: tuple[str, ...] = ()
    error: str | None = None


class MtlsListener:
    """A listener that requires client certificates: ``MtlsListener(...).admits_the_mesh`` (a request
    with a certificate of the mesh CA is answered), ``.refuses_strangers`` (one without is not)."""

    def __init__(self, address: str, port: int, roots_pem: str, leaf: tuple[str, str], path: str = "/healthz",
                 timeout: float = 2.0) -> None:
        self.address, self.port, self.roots_pem, self.leaf = address, port, roots_pem, leaf
        self.path, self.timeout = path, timeout

    def _exchange(self, with_certificate: bool) -> TlsExchange:
        # The proxy is known by its certificate's SPIFFE URI, not a host name: the chain to the mesh
        # CA is checked here, the URI by the caller.
        context = ssl.create_default_context(cadata=self.roots_pem)
        context.check_hostname = False
        try:
            if with_certificate:
                with tempfile.TemporaryDirectory() as keys:  # 0700: load_cert_chain reads files only
                    cert, key = Path(keys, "leaf.crt"), Path(keys, "leaf.key")
                    cert.write_text(self.leaf[0])
                    key.touch(mode=0o600)
                    key.write_text(self.leaf[1])
                    context.load_cert_chain(cert, key)
            with socket.create_connection((self.address, self.port), timeout=self.timeout) as raw, \
                    context.wrap_socket(raw) as tls:
                peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                uris = tuple(peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                             .get_values_for_type(x509.UniformResourceIdentifier))
                tls.sendall(f"GET {self.path} HTTP/1.1\r\nHost: mesh\r\nConnection: close\r\n\r\n".encode())
                first = tls.recv(64).split(b"\r\n", 1)[0].split()  # TLS 1.3: a refusal arrives here
            status = int(first[1]) if len(first) > 1 and first[1].isdigit() else None
            return TlsExchange(status, uris, None if status else f"no HTTP status line: {first!r}")
        except (OSError, ValueError, x509.ExtensionNotFound) as err:
            return TlsExchange(error=one_line(err) or type(err).__name__)

    @cached_property
    def with_certificate(self) -> TlsExchange:
        return self._exchange(True)

    @cached_property
    def without_certificate(self) -> TlsExchange:
        return self._exchange(False)

    @property
    def admits_the_mesh(self) -> bool:
        return self.with_certificate.status == 200

    @property
    def refuses_strangers(self) -> bool:
        return self.without_certificate.status is None

    @property
    def reason(self) -> str:
        where = f"{self.address}:{self.port}"
        mesh, stranger = self.with_certificate, self.without_certificate
        admitted = (f"with a mesh certificate GET {self.path} answered {mesh.status} by {', '.join(mesh.server_uris) or '?'}"
                    if mesh.status else f"with a mesh certificate: {mesh.error}")
        refused = (f"without one: refused ({stranger.error})" if stranger.status is None
                   else f"without one: answered HTTP {stranger.status}")
        return f"{where}: {admitted}; {refused}"


class McpServer:
    """An MCP server over Streamable HTTP: ``McpServer(url).completes_handshake`` (one probe session;
    ``list_tools=False``: the handshake alone, which names the server)."""

    def __init__(self, url: str, timeout: float = 5.0, min_tools: int = 1, list_tools: bool = True,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.timeout, self.min_tools, self.list_tools = url, timeout, min_tools, list_tools
        self.headers = headers

    @cached_property
    def result(self) -> McpResult:
        return probe_mcp(self.url, timeout=self.timeout, min_tools=self.min_tools, list_tools=self.list_tools,
                         headers=self.headers)

    @property
    def completes_handshake(self) -> bool:
        """initialize answered (and tools/list, with at least ``min_tools`` tools, when listed)."""
        return self.result.ok

    @property
    def tool_count(self) -> int | None:
        return self.result.tool_count

    @property
    def server_name(self) -> str | None:
        return self.result.server_name

    @property
    def reason(self) -> str:
        return self.result.reason


# --- the registry ------------------------------------------------------------------------------


class Registration:
    """One instance's registration: ``Registration(services, expected, checks).matches``.

    ``services`` and ``checks`` are Consul's agent/services and agent/checks answers; ``expected``
    the body the deploy registers (meshspec.render.registrations.registration), spec-hash and
    check included.
    """

    def __init__(self, services: dict[str, dict], expected: dict, checks: dict[str, dict]) -> None:
        self.expected = expected
        self.registered = services.get(expected["ID"])
        self.checks = checks

    @property
    def differences(self) -> list[str]:
        return differences(self.registered, self.checks, self.expected)

    @property
    def matches(self) -> bool:
        return not self.differences

    @property
    def is_registered(self) -> bool:
        return self.registered is not None

    @property
    def address_moved(self) -> bool:
        """Registered, but at another address or port than declared."""
        r = self.registered or {}
        return self.is_registered and (r.get("Address"), r.get("Port")) != (self.expected["Address"], self.expected["Port"])

    @property
    def address_answers(self) -> bool:
        """Something listens where the registration points."""
        r = self.registered or {}
        return self.is_registered and Port(r.get("Address") or "", int(r.get("Port") or 0)).is_listening

    @property
    def reason(self) -> str:
        sid = self.expected["ID"]
        if not self.is_registered:
            return f"{sid} is not registered in Consul"
        if self.matches:
            return f"{sid} registered as declared (spec-hash {self.expected['Meta']['spec-hash']})"
        if self.address_moved:
            r = self.registered
            where = f"{r.get('Address')}:{r.get('Port')}"
            declared = f"{self.expected['Address']}:{self.expected['Port']}"
            others = [d for d in self.differences if not d.startswith(("address ", "port "))]
            dead = "" if self.address_answers else " where nothing listens"
            return one_line(f"{sid} registered at {where}{dead}, declared {declared}"
                            + (f"; {'; '.join(others)}" if others else ""), 400)
        return one_line(f"{sid} registered with {'; '.join(self.differences)}", 400)


class Registrations:
    """The whole registry against the plan: ``Registrations(services, ids).has_no_unexpected``."""

    def __init__(self, services: dict[str, dict], planned_ids: list[str]) -> None:
        self.services, self.planned = services, set(planned_ids)

    @property
    def unexpected(self) -> list[str]:
        return sorted(sid for sid in self.services if sid not in self.planned)

    @property
    def has_no_unexpected(self) -> bool:
        return not self.unexpected

    @property
    def reason(self) -> str:
        if self.has_no_unexpected:
            return f"{len(self.services)} registrations, all declared"
        described = []
        for sid in self.unexpected:
            s = self.services[sid]
            described.append(f"{sid} (service {s.get('Service')} at {s.get('Address')}:{s.get('Port')})")
        return one_line(f"unexpected registration{'s' if len(described) > 1 else ''} not in the spec: "
                        + ", ".join(described), 400)


class Check:
    """A Consul check: ``Check(checks, "service:web-local-0").is_passing``."""

    def __init__(self, checks: dict[str, dict], check_id: str) -> None:
        self.check_id = check_id
        self.found = checks.get(check_id)

    @property
    def status(self) -> str | None:
        return self.found.get("Status") if self.found else None

    @property
    def is_passing(self) -> bool:
        return self.status == "passing"

    @property
    def reason(self) -> str:
        if self.found is None:
            return f"check {self.check_id} is not registered"
        output = one_line(self.found.get("Output") or "", 160)
        return f"check {self.check_id} is {self.status}" + (f": {output}" if output else "")


# --- the data plane ----------------------------------------------------------------------------


class Route:
    """A service reached through the mesh proxy: ``Route(proxy_url, "backend-api", "/health").reaches``.

    http services: ``<proxy>/svc/<name><path>`` (the service's path prefix) answers 2xx;
    MCP services (``mcp=True``): ``<proxy>/mcp/<name>`` completes the MCP handshake, and
    ``server_name`` is who answered it (the tools are the instance's own probe's to list: through
    the proxy they cost the most and show nothing more about the route).
    """

    def __init__(self, proxy_url: str, service: str, path: str = "/", *, prefix: str | None = None,
                 mcp: bool = False, timeout: float = 5.0, headers: dict[str, str] | None = None,
                 shown: str | None = None) -> None:
        self.proxy_url, self.service, self.path = proxy_url.rstrip("/"), service, path
        self.prefix = (prefix or f"/svc/{service}").rstrip("/")
        self.mcp, self.timeout, self.headers = mcp, timeout, headers or {}
        self.shown = shown  # how reasons name the proxy, when `proxy_url` is a forward's local end

    @property
    def url(self) -> str:
        if self.mcp:
            return f"{self.proxy_url}/mcp/{self.service}"
        return f"{self.proxy_url}{self.prefix}{self.path}"

    @property
    def shown_url(self) -> str:
        return self.url.replace(self.proxy_url, self.shown, 1) if self.shown else self.url

    @cached_property
    def _through(self) -> McpServer | HttpEndpoint:
        if self.mcp:
            server = McpServer(self.url, timeout=self.timeout, list_tools=False, headers=self.headers)
        else:
            server = HttpEndpoint(self.url, headers=self.headers, timeout=self.timeout)
        return server

    @property
    def server_name(self) -> str | None:
        return self._through.server_name if isinstance(self._through, McpServer) else None

    @property
    def http_status(self) -> int | None:
        return self._through.status if isinstance(self._through, HttpEndpoint) else None

    @property
    def reaches(self) -> bool:
        through = self._through
        return through.completes_handshake if isinstance(through, McpServer) else through.answers_2xx

    @property
    def reason(self) -> str:
        forward = " (through an SSH forward)" if self.shown else ""
        return f"via proxy {self.shown_url}{forward}: {self._through.reason}"
