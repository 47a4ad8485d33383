"""Plan -> one container per instance, for the docker runtime: pure.

A container runs exactly what the process runtime's program runs (meshspec.render.programs.launch), on
the host's network (loopback only, same addresses and ports as the plan), under docker-init, with
the instance's state (and its dependencies' state) bind-mounted at the same paths. Its labels say
whose it is; `meshspec.spec-hash` is the digest of everything else, so a deploy replaces a
container only when what it would run changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshspec.common.digest import digest
from meshspec.plan import Instance, Plan
from meshspec.render.programs import Launch, launch, revision
from meshspec.render.secrets import CA_KEY_FILE, credentials_paths, held_keys, reads_secret, runtime_placeholders
from meshspec.spec.placeholders import CHECKER_METRICS_DIR

DOCKER_SOCKET = "/var/run/docker.sock"
LABEL = "meshspec"  # label prefix: meshspec.managed-by, meshspec.state-dir, ...
STATE_LABEL = f"{LABEL}.state-dir"
HASH_LABEL = f"{LABEL}.spec-hash"
INSTANCE_LABEL = f"{LABEL}.instance"
STOP_TIMEOUT_LABEL = f"{LABEL}.stop-timeout"  # seconds; read when a container no longer in the spec is stopped


def container_name(plan: Plan, inst: Instance) -> str:
    """`<mesh>-<instance id>-<state dir digest>`: two meshes with different state dirs never collide."""
    return f"{plan.spec.mesh.name}-{inst.id}-{digest(str(plan.layout.root))[:6]}"


def ownership(plan: Plan) -> dict[str, str]:
    """The labels every container of this mesh (on this state dir) carries: what teardown and prune select."""
    return {f"{LABEL}.managed-by": "meshspec", f"{LABEL}.mesh": plan.spec.mesh.name, STATE_LABEL: str(plan.layout.root)}


def same_paths(volumes: dict[str, str]) -> dict[str, dict]:
    """{host path: rw|ro} as the Docker SDK's volumes, each mounted at its own path."""
    return {path: {"bind": path, "mode": mode} for path, mode in volumes.items()}


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str] | None  # None: the image's own
    environment: dict[str, str]
    working_dir: str
    user: str | None
    volumes: dict[str, str]  # host path -> "rw" | "ro", mounted at the same path
    labels: dict[str, str]
    pid_host: bool
    nano_cpus: int | None
    mem_limit: int | None  # bytes
    stop_signal: str
    stop_timeout: int  # seconds

    @property
    def spec_hash(self) -> str:
        return self.labels[HASH_LABEL]

    def run_kwargs(self) -> dict:
        """Arguments of the Docker SDK's `containers.run` / `create`."""
        optional = {"user": self.user, "nano_cpus": self.nano_cpus, "mem_limit": self.mem_limit}
        return {
            "image": self.image,
            "command": self.command,
            "name": self.name,
            "environment": self.environment,
            "working_dir": self.working_dir,
            "volumes": same_paths(self.volumes),
            "labels": self.labels,
            "network_mode": "host",
            "init": True,  # docker-init reaps and forwards signals; a server as PID 1 would not
            "restart_policy": {"Name": "unless-stopped"},
            "stop_signal": f"SIG{self.stop_signal}",
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
            **({"pid_mode": "host"} if self.pid_host else {}),
            **{k: v for k, v in optional.items() if v is not None},
        }


def volumes(plan: Plan, inst: Instance) -> dict[str, str]:
    """The instance's own state, its dependencies' (sockets, rendered files), its service's Consul
    token, credentials and held consumer keys and no other (and the checker's metrics, to a program
    that names them); the registry also gets the management token and the
    engine's socket, to run docker checks, and the mesh CA."""
    layout, service = plan.layout, plan.service(inst.service)
    mounts = {str(layout.instance_dir(inst.id)): "rw"}
    mounts |= {str(layout.instance_dir(plan.instances_of(dep)[0].id)): "rw" for dep in service.depends_on}
    mounts[str(layout.service_token_file(inst.service))] = "ro"
    mounts |= {path: "ro" for path in [*credentials_paths(plan, inst.service), *held_keys(plan, inst.service)]}
    if service.process and any(f"{{{CHECKER_METRICS_DIR}}}" in text
                               for text in [*service.process.command, *service.process.env.values()]):
        mounts[str(layout.checker_metrics_dir)] = "ro"  # the host's checker writes there (node-exporter reads)
    if inst.service == plan.spec.consul.service:
        mounts[str(layout.consul_token_file)] = "ro"
        mounts[DOCKER_SOCKET] = "rw"
        mounts |= {str(path): "ro" for path in (layout.connect_ca_file, layout.connect_ca_key_file)
                   if reads_secret(plan, inst.service, CA_KEY_FILE)}
    return mounts


def container_user(plan: Plan, service: str) -> str | None:
    """The process's user, but root for a program that reads a secret file: the container mounts
    the host's file, root's (its user's id in the image is not the host's), so the container is
    its only fence there."""
    process = plan.service(service).process
    if process is None or held_keys(plan, service) or \
            any(reads_secret(plan, service, p) for p in runtime_placeholders(plan, service)):
        return None
    return process.user


def container_spec(plan: Plan, inst: Instance, image: str) -> ContainerSpec:
    """With a process, the container runs its launch (container.command overrides the argv); a
    container-only service runs its image's own command unless container.command is given."""
    service = plan.service(inst.service)
    process, box = service.process, service.container
    run = launch(plan, inst) if process else Launch([], {}, str(plan.layout.instance_dir(inst.id)))
    command = [plan.render(inst, a) for a in box.command] if box and box.command else run.argv
    stop_signal, stop_timeout = (process.stop_signal, process.stop_timeout) if process else ("TERM", 10_000)
    body = {
        "name": container_name(plan, inst),
        "image": image,
        "command": command or None,
        # the revision carries the digest of the files the process reads, as for supervisord
        "environment": {**run.env, "MESHSPEC_REVISION": revision(plan, inst)},
        "working_dir": run.workdir,
        "user": container_user(plan, inst.service),
        "volumes": volumes(plan, inst),
        "pid_host": bool(box and box.pid == "host"),
        "nano_cpus": int(box.cpus * 1e9) if box and box.cpus else None,
        "mem_limit": box.memory_mb * 2**20 if box and box.memory_mb else None,
        "stop_signal": stop_signal,
        "stop_timeout": max(1, stop_timeout // 1000),
    }
    labels = {**ownership(plan), INSTANCE_LABEL: inst.id, f"{LABEL}.service": inst.service,
              STOP_TIMEOUT_LABEL: str(body["stop_timeout"])}
    labels[HASH_LABEL] = digest({**body, "labels": labels})
    return ContainerSpec(labels=labels, **body)
