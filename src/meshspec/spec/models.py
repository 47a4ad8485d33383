"""The spec as pydantic models: strict types, unknown keys are errors.

Routing and health timing given on a service override the mesh `defaults`, which
override the built-in defaults below; `effective_*` in `meshspec.spec.resolve` merges them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshspec.common import scrape_meta
from meshspec.spec.types import (
    AptPackage,
    Duration,
    HostRef,
    MetaKey,
    MetaValue,
    NpmPin,
    PathPrefix,
    PipPin,
    Port,
    PortName,
    ServiceName,
    UserName,
)

Kind = Literal["mcp", "core", "database", "ai", "monitoring"]
KINDS: tuple[str, ...] = Kind.__args__


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def exactly_one(model: BaseModel, fields: tuple[str, ...], what: str) -> None:
    chosen = [f for f in fields if getattr(model, f) is not None]
    if len(chosen) != 1:
        found = f" (found {', '.join(chosen)})" if chosen else ""
        raise ValueError(f"{what} needs exactly one of {', '.join(fields)}{found}")


# --- how a service runs -------------------------------------------------------------

class Install(Strict):
    apt: list[AptPackage] = []
    pip: list[PipPin] = []
    npm: list[NpmPin] = []
    # Commands that complete the install (a package's own setup step), run in it after pip and
    # npm; part of the install's recipe, so they run where it is built (host or image). Only
    # {install_dir} may be used.
    after: list[list[str]] = []


# Configuration files meshspec renders from the plan (see meshspec.render.files).
ConfigName = Literal["haproxy", "prometheus", "prometheus-rules", "alertmanager"]
CONFIG_NAMES: tuple[str, ...] = ConfigName.__args__


class PrepareStep(Strict):
    """A prepare command that reads a secret file on its standard input, through a pipe that root
    opens: the command runs as the service's user, who need not be able to open the file (in the
    docker runtime the file is root's), and the secret is never in its argv."""

    run: list[str] = Field(min_length=1)
    stdin: str


class Process(Strict):
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    workdir: str | None = None
    user: UserName | None = None  # the program runs as this user (made by the deploy when missing)
    # Users the program needs beside its own (the task runner runs its tasks as one): the deploy
    # makes each that is missing, on the host or in the service's image, with no login and no home.
    system_users: list[UserName] = []
    install: Install = Install()
    # Idempotent commands the deploy runs before the first start (e.g. initdb when absent): an
    # argv, or {run: argv, stdin: secret file}.
    prepare: list[list[str] | PrepareStep] = []
    # Run under meshspec-reaper: descendants that leave the program's process group (mcp-proxy
    # starts its server in a session of its own) are ended when the program stops.
    reap: bool = False
    # {path (placeholders allowed): config}: written before the program starts, restarting it when they change.
    files: dict[str, ConfigName] = {}
    stop_signal: Literal["TERM", "HUP", "INT", "QUIT", "KILL", "USR1", "USR2"] = "TERM"  # supervisord's set
    stop_timeout: Duration = 10_000

    def prepare_argvs(self) -> list[tuple[list[str], str | None]]:
        """Each prepare command as (argv, the file it reads on stdin or None)."""
        return [(p.run, p.stdin) if isinstance(p, PrepareStep) else (p, None) for p in self.prepare]


class Build(Strict):
    context: str
    dockerfile: str = "Dockerfile"


class Container(Strict):
    """How the docker runtime runs the service. Without image or build, meshspec builds the image
    from the service's process install (meshspec.render.images)."""

    image: str | None = None
    build: Build | None = None
    command: list[str] | None = None
    cpus: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, ge=16)
    # "host": share the host's process IDs, for a process that reads another container's by pid
    # (mesh-controller reads the command line of the HAProxy master named in its pidfile).
    pid: Literal["container", "host"] = "container"

    @model_validator(mode="after")
    def _image_or_build(self) -> Container:
        if self.image is not None and self.build is not None:
            raise ValueError("container takes image or build, not both")
        return self


# --- health -------------------------------------------------------------------------

#: What a probe's answer must contain: what only the service doing its job answers (its dependency
#: reached, its metric up, the object a `before` step stored), never a constant any server could
#: send. Printable and on one line.
Contains = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]  # MCP tool names' characters


class HttpStep(Strict):
    """A request a probe sends before (or after) its own: the object it stores, then reads back,
    or a first page whose answer must also hold what `contains` names."""

    path: str = Field(pattern=r"^/")
    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    headers: dict[str, str] = {}
    body: str | None = None
    contains: Contains | None = None


class HttpProbe(Strict):
    path: str = Field(pattern=r"^/")
    # A port named under the service's `ports`: the probe's requests go there, not to its main
    # port (HAProxy's stats listener, which lists its data plane). Who answered is still the main
    # port's listener.
    port: str | None = None
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    contains: Contains | None = None
    # A round trip: `before` stores an object that carries `{nonce}` (new for every run of the
    # probe), the probe's own request reads it back (`contains` names the nonce), `after` removes
    # it. Every step must answer 2xx.
    before: list[HttpStep] = []
    after: list[HttpStep] = []
    # The service stores asynchronously (queues, then inserts): read again every 0.1 s until the
    # answer holds `contains`, within the probe's timeout.
    eventually: bool = False
    # Its requests carry the service's own Consul token (X-Consul-Token), which whoever runs the probe
    # reads from the service's token file as it runs, so the secret is in no checks file or
    # registration: the registry's reads are default-deny.
    consul_token: bool = False
    # A file holding `user:password` (curl -u's form), sent as HTTP Basic credentials; whoever runs
    # the probe reads it as it runs, so the secret is in no checks file (HAProxy's stats page:
    # `{proxy.stats_credentials}`).
    credentials: str | None = None

    @property
    def first_page(self) -> HttpStep | HttpProbe:
        """The first page the probe reads: its first GET step before its own request, else its own
        request. What a liveness read of the service asks (HAProxy's own check, verify's route
        through the proxy): it stores nothing, so it may run any number of times, with any nonce."""
        return next((step for step in self.before if step.method == "GET"), self)


class McpProbe(Strict):
    """An MCP handshake: initialize + tools/list, at least `min_tools` tools."""

    path: str = Field(default="/mcp", pattern=r"^/")
    min_tools: int = Field(default=1, ge=0)


class TcpProbe(Strict):
    pass


class PostgresProbe(Strict):
    """A PostgreSQL session (startup, authentication) and one query answered with one row."""

    user: str = "postgres"
    database: str = "postgres"
    query: str = "SELECT 1"


class MysqlProbe(Strict):
    """A MySQL/MariaDB session (handshake, authentication) and one query answered with one row."""

    user: str = "root"
    query: str = "SELECT 1"


class RedisProbe(Strict):
    """A RESP PING answered PONG, after AUTH as `user` when there is a password (the service's
    `credentials`, or `password`)."""

    user: str = "default"
    password: str | None = None


class AmqpProbe(Strict):
    """An AMQP 0-9-1 connection opened (protocol header, Start/Tune/Open) on `vhost`, then closed.
    RabbitMQ's guest account answers on loopback only, which is where the checker runs. As for every
    protocol probe, a service with `credentials` is probed with them instead of `user`/`password`."""

    user: str = "guest"
    password: str = "guest"
    vhost: str = "/"


class HealthTiming(Strict):
    interval: Duration = 5_000
    timeout: Duration = 2_000
    success_before_passing: int = Field(default=0, ge=0)
    failures_before_critical: int = Field(default=0, ge=0)
    deregister_critical_after: Duration | None = None


PROBES = ("http", "mcp", "tcp", "postgres", "mysql", "redis", "amqp", "command")


class Health(Strict):
    http: HttpProbe | None = None
    mcp: McpProbe | None = None
    tcp: TcpProbe | None = None
    postgres: PostgresProbe | None = None
    mysql: MysqlProbe | None = None
    redis: RedisProbe | None = None
    amqp: AmqpProbe | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    interval: Duration | None = None
    timeout: Duration | None = None
    success_before_passing: int | None = Field(default=None, ge=0)
    failures_before_critical: int | None = Field(default=None, ge=0)
    deregister_critical_after: Duration | None = None

    @model_validator(mode="after")
    def _one_probe(self) -> Health:
        exactly_one(self, PROBES, "health")
        return self

    @property
    def probe(self) -> str:
        return next(p for p in PROBES if getattr(self, p) is not None)


# --- routing ------------------------------------------------------------------------

LbPolicy = Literal["round_robin", "least_conn", "weighted", "hash"]
RetryOn = Literal[
    "conn-failure", "empty-response", "junk-response", "response-timeout", "0rtt-rejected",
    "all-retryable-errors", 404, 408, 425, 500, 501, 502, 503, 504,
]


class HashOn(Strict):
    header: str | None = None
    cookie: str | None = None
    source: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> HashOn:
        exactly_one(self, ("header", "cookie", "source"), "hash_on")
        return self


class LoadBalancing(Strict):
    policy: LbPolicy = "round_robin"
    hash_on: HashOn | None = None
    weights: list[int] | None = None  # one per replica, for policy 'weighted'


class Timeouts(Strict):
    connect: Duration = 2_000
    # How long the proxy waits for a server's answer: a request that outlives it is retried on
    # another server (retry_on: response-timeout; never a POST or PATCH), so a hung server costs
    # each request it holds this long, until the circuit breaker's `errors` of them in a row take
    # it out (the controller's outlier ejection: HAProxy's breaker does not count retried ones).
    request: Duration = 30_000
    # Requests under these path prefixes (the service's own path, the longest prefix wins) wait
    # this long instead: the few slow calls of a service whose others answer fast (as Consul's
    # service-router Destination.RequestTimeout per PathPrefix).
    paths: dict[PathPrefix, Duration] = {}


class Retries(Strict):
    attempts: int = Field(default=2, ge=0, le=10)
    retry_on: list[RetryOn] = ["conn-failure", "empty-response", "response-timeout"]


class CircuitBreaker(Strict):
    enabled: bool = True
    # Failures in a row that open it: answers of 5xx or none (HAProxy's `observe layer7`), and
    # requests retried away from the server (the controller's outlier ejection, outliers.py).
    errors: int = Field(default=5, ge=1)
    cooldown: Duration = 10_000


class Slo(Strict):
    """What the proxy's alerts hold a service to (render/monitoring.py): the share of its answers
    through the proxy that may be 5xx, and how long 99% of them may take, from the request received
    to the answer's headers sent (mesh-controller counts the answers over it: runtime/proxy/request_log.py)."""

    error_ratio: float = Field(default=0.01, gt=0, le=1)
    latency: Duration = 1_500


class Routing(Strict):
    enabled: bool = True
    mode: Literal["http", "tcp"] = "http"
    path_prefix: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._~/-]*$")  # default /svc/<name>
    lb: LoadBalancing = LoadBalancing()
    affinity: Literal["none", "mcp_session", "source"] = "none"
    timeouts: Timeouts = Timeouts()
    retries: Retries = Retries()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    # Requests per second the proxy lets through to the service from all callers together, averaged
    # over proxy.rate_limits.window (0: no limit); and per MCP tool of the service (read from each
    # tools/call's body). Over a limit: 429 with Retry-After.
    rate_limit: int = Field(default=5_000, ge=0)
    tool_rate_limits: dict[ToolName, Annotated[int, Field(ge=0)]] = {}
    slo: Slo = Slo()


# --- the service and the mesh -------------------------------------------------------

# Meta keys meshspec writes on every registration; a spec may not set them.
RESERVED_META = ("managed-by", "mesh", "spec-hash", "kind", "runtime", "host", "version", "depends-on",
                 scrape_meta.PORT, scrape_meta.PATH)


class Metrics(Strict):
    """Where the service exports Prometheus metrics."""

    path: str = Field(default="/metrics", pattern=r"^/")
    port: PortName | None = None  # one of the service's named ports; None: its main port


class RegistryAccess(Strict):
    """What the service's own Consul token may do. It always writes the service's registration and
    checks, and reads the nodes; it reads the services the service depends on, or every service
    (`read: all`) for one that lists the registry (an API over it, the proxy's controller); with
    `agent: read`, the agents' own endpoints too (their metrics, for a monitor)."""

    read: Literal["depends_on", "all"] = "depends_on"
    agent: Literal["none", "read"] = "none"


PASSWORD = "{password}"  # where a credentials form puts the password


class Credentials(Strict):
    """An account of the service's whose password the deploy makes for the mesh (derived from the
    management token, like the program tokens: never stored twice, one tells nothing of another).
    The password reaches programs only as 0600 files of their users': the service's own,
    `{credentials.file}`, in `form`; a dependent's, `{services.<name>.password_file}`, in
    `copy_form`; the probe's (root's), `user:password`. A protocol probe of the service logs in with it."""

    user: UserName
    # The text of the service's own file, {password} in place of the password: the form its server
    # reads (an init SQL, a config line); {address}: the address of the host the file is on. By
    # default the password alone on one line.
    form: str = Field(default=PASSWORD + "\n", min_length=1)
    # The text of a dependent's copy: the form its client reads (a JSON map of URIs to passwords);
    # {address} and {port}: the service's, as the dependent's {services.<name>.address} and .port.
    copy_form: str = Field(default=PASSWORD + "\n", min_length=1)

    @field_validator("form", "copy_form")
    @classmethod
    def _holds_password(cls, form: str) -> str:
        if PASSWORD not in form:
            raise ValueError(f"must hold {PASSWORD}, where the password goes")
        return form


class Placement(Strict):
    """Which of the inventory's hosts run the service (by name or group; none named: every host,
    in the inventory's order), and whether its replicas spread over them (replica r on the r-th
    of them, round) or all run on the first."""

    hosts: list[HostRef] = []
    spread: bool = True
    # One instance on each host it selects, all at the service's own ports (as Nomad's system jobs):
    # what every host needs for itself, such as its proxy. Its replicas must be 1.
    per_host: bool = False


class Service(Strict):
    name: ServiceName
    kind: Kind
    description: str = Field(min_length=1)
    port: Port
    ports: dict[PortName, Port] = {}  # further named ports, e.g. a stats listener
    replicas: int = Field(default=1, ge=1, le=16)
    placement: Placement = Placement()
    process: Process | None = None
    container: Container | None = None
    health: Health
    tags: list[str] = []
    meta: dict[MetaKey, MetaValue] = Field(default={}, max_length=64)
    depends_on: list[ServiceName] = []
    routing: Routing = Routing()
    metrics: Metrics | None = None
    registry: RegistryAccess = RegistryAccess()
    credentials: Credentials | None = None


class MeshSettings(Strict):
    name: ServiceName
    domain: str = Field(default="mesh", pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    # Replica r of a service listens on port + r * replica_port_step.
    replica_port_step: int = Field(default=1000, ge=1)

    def port_of(self, base: int, replica: int, offset: int) -> int:
        return base + replica * self.replica_port_step + offset


class ConsulSettings(Strict):
    service: ServiceName = "consul"
    datacenter: ServiceName = "dc1"


class RateLimits(Strict):
    """Each caller's limit at the proxy, in requests per second averaged over `window` (0: none): a
    caller is a consumer at the edge (consumers may have their own), a service by its certificate on
    the mTLS listener, else a client address. Over it: 429 with Retry-After."""

    window: Duration = 10_000
    client: int = Field(default=1_000, ge=0)


class ProxySettings(Strict):
    service: ServiceName | None = "mesh-proxy"  # null: a mesh without a data plane
    # The service whose program drives HAProxy (runtime API, reloads through the master CLI): HAProxy
    # gives both sockets to its program's user, so it needs no root. null: they are root's.
    controller: ServiceName | None = None
    stats_port_name: PortName = "stats"
    # The proxy's port by this name, where it has one, is the service-facing listener: TLS that
    # requires a client certificate of the mesh CA (the registry's Connect CA).
    mtls_port_name: PortName = "mtls"
    # The proxy's port by this name, where it has one, takes the calls other hosts' proxies make to
    # this host's instances: TLS both ways with the mesh CA's certificates (a proxy's alone), the
    # instance named by the TLS server name. With several hosts, no request leaves a host in plaintext.
    inbound_port_name: PortName = "inbound"
    # The proxy's port by this name, where it has one, is an HTTP proxy for this host's programs
    # alone (on loopback): Prometheus scrapes through it, and a target on another host is reached
    # through that host's proxy's inbound listener, over the same mTLS.
    egress_port_name: PortName = "egress"
    # The consumer whose key meshspec's own tools (verify, the acceptance suites, the load tests)
    # present at the edge, where the spec declares consumers.
    operator: ServiceName | None = "operator"
    rate_limits: RateLimits = RateLimits()


WILDCARD = "*"


class Intention(Strict):
    """Consul's intention: whether `source` may call `destination` (service names, or * for any).
    Where several match a call, the most specific wins. The deploy adds an allow for each service's
    `depends_on` and a deny of * to *, each unless the spec states that pair itself.

    With `tool`, it decides the MCP `tools/call` of that tool of `destination` (an MCP server) alone,
    for callers the service-level intentions already let in; its source may also be a consumer (a
    caller at the edge). The proxy reads the tool from the JSON-RPC body."""

    source: ServiceName | Literal["*"]
    destination: ServiceName | Literal["*"]
    action: Literal["allow", "deny"]
    tool: ToolName | None = None
    description: str = Field(default="", max_length=200)


class Consumer(Strict):
    """A caller from outside the mesh (a user's script, the load tests, an IDE's MCP client). Where the
    spec declares any, the proxy's edge listener answers only requests with a consumer's API key
    (`X-API-Key`), which the deploy derives and keeps in a 0600 file; anything else gets 401."""

    name: ServiceName
    description: str = Field(default="", max_length=200)
    rate_limit: int | None = Field(default=None, ge=0)  # its own per-caller limit (None: proxy.rate_limits.client)
    # A service of the mesh whose program calls the edge as this consumer (Alertmanager's webhook, which
    # can send only an Authorization header: the edge also takes the key as a Bearer token). The key's
    # file is then that program's user's (0600), and the configuration rendered for it names the file.
    held_by: ServiceName | None = None


class Defaults(Strict):
    health: HealthTiming = HealthTiming()
    routing: Routing = Routing()


class Tracing(Strict):
    """Traces across the mesh: meshspec's own services send their spans (OpenTelemetry, OTLP over
    HTTP) to `store`, and the proxy's edge marks `sampling` of the requests it starts a trace for as
    sampled, which every service downstream follows (a caller's own traceparent decides for itself)."""

    store: ServiceName | None = None  # takes OTLP over HTTP at /v1/traces on its main port; None: no spans
    sampling: float = Field(default=1.0, ge=0, le=1)


class MeshSpec(Strict):
    version: Literal[1]
    mesh: MeshSettings
    consul: ConsulSettings = ConsulSettings()
    proxy: ProxySettings = ProxySettings()
    defaults: Defaults = Defaults()
    services: list[Service] = Field(min_length=1)
    intentions: list[Intention] = []
    consumers: list[Consumer] = []
    tracing: Tracing = Tracing()
