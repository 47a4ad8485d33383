"""Plan -> supervisord configuration: the daemon's own file and one program per instance. Pure."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath

from meshspec import __version__
from meshspec.plan import Instance, Plan
from meshspec.plan.layout import Layout
from meshspec.render.files import restart_digest
from meshspec.spec.placeholders import fields_of

MARK = "; managed by meshspec"


def _escape(text: str) -> str:
    # supervisord expands %(name)s in its values.
    return text.replace("%", "%%")


@dataclass(frozen=True)
class Program:
    name: str
    path: str
    text: str


def meshspec_version(plan: Plan) -> str:
    """meshspec's version and the build of it the plan's programs run: a program that runs
    meshspec (its own services, the checker) restarts when either changes."""
    return f"{__version__}.{plan.meshspec_build}" if plan.meshspec_build else __version__


def revision(plan: Plan, inst: Instance) -> str:
    """What restarts the program when it changes: meshspec's version (and its build, for a program
    that `{meshspec}` starts), and the files it reads at its start."""
    process = plan.service(inst.service).process
    runs_meshspec = process is not None and any("meshspec" in fields_of(arg) for arg in process.command)
    version = meshspec_version(plan) if runs_meshspec else __version__
    digest = restart_digest(plan, inst)
    return f"{version}+{digest}" if digest else version


@dataclass(frozen=True)
class Launch:
    """How an instance's process starts, whatever runs it (supervisord or a container)."""

    argv: list[str]
    env: dict[str, str]
    workdir: str


#: The command of meshspec's own services, which set OpenTelemetry up (runtime/tracing.py).
OWN_SERVICE = ["{meshspec}", "serve"]


def tracing_env(plan: Plan, inst: Instance) -> dict[str, str]:
    """OpenTelemetry's own variables, for meshspec's own services where the spec names a trace
    store. The ratio applies to traces a service starts itself; the edge's traceparent decides for
    every request through the proxy (spec.Tracing)."""
    process, tracing = plan.service(inst.service).process, plan.spec.tracing
    if tracing.store is None or process is None or process.command[:2] != OWN_SERVICE:
        return {}
    address, port = plan.reach(tracing.store, inst.host)
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://{address}:{port}/v1/traces",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(tracing.sampling),
            "OTEL_SERVICE_NAME": inst.service,
            "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={inst.id},meshspec.mesh={plan.spec.mesh.name}"}


def launch(plan: Plan, inst: Instance) -> Launch:
    """A program that runs as its own user gets the instance's directory, which the deploy gives
    that user, as its HOME unless the spec names one: supervisord passes root's on to every user,
    and caches, cookies and dotfiles go to HOME."""
    process = plan.service(inst.service).process
    render = partial(plan.render, inst)
    instance_dir = str(plan.layout.instance_dir(inst.id))
    workdir = render(process.workdir) if process.workdir else instance_dir
    env = {**tracing_env(plan, inst), **{k: render(v) for k, v in process.env.items()}}
    if process.user and "HOME" not in env:
        env["HOME"] = instance_dir
    return Launch([render(a) for a in process.command], dict(sorted(env.items())), workdir)


def program(plan: Plan, inst: Instance) -> Program:
    """One [program:<id>] section. Env goes through /usr/bin/env on the command line:
    supervisord's `environment=` cannot quote every value, its shlex-split command can."""
    process = plan.service(inst.service).process
    run = launch(plan, inst)
    env = [f"{k}={v}" for k, v in run.env.items()]
    argv = (["/usr/bin/env", *env] if env else []) + run.argv
    if process.reap:
        argv = [str(PurePosixPath(plan.meshspec_bin).with_name("meshspec-reaper")), "--", *argv]
    return section(plan.layout, inst.id, argv, run.workdir, revision(plan, inst), user=process.user,
                   stop_signal=process.stop_signal, stop_timeout_ms=process.stop_timeout)


def section(layout: Layout, name: str, argv: list[str], workdir: str, rev: str, *, user: str | None = None,
            stop_signal: str = "TERM", stop_timeout_ms: int = 10_000) -> Program:
    """A [program:<name>] section of this mesh's supervisord, logging to the mesh's logs dir."""
    lines = [
        f"{MARK}: {name}",
        f"[program:{name}]",
        f"command={_escape(shlex.join(argv))}",
        f"directory={_escape(workdir)}",
        # supervisord restarts a program on `update` only when its parsed settings change (not its
        # comments): the revision (meshspec's version and the digest of the files the program
        # reads) is one of them, so a new release or a changed config restarts the program.
        f'environment=MESHSPEC_REVISION="{rev}"',
        *([f"user={user}"] if user else []),
        "autostart=true",
        "autorestart=true",
        "startsecs=1",
        "startretries=5",
        f"stopsignal={stop_signal}",
        f"stopwaitsecs={max(1, stop_timeout_ms // 1000)}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_escape(str(layout.logs_dir / f'{name}.log'))}",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=2",
    ]
    return Program(name, str(layout.program_file(name)), "\n".join(lines) + "\n")


def supervisord_conf(layout: Layout) -> str:
    """The daemon of one mesh: its own socket, pid file and program directory."""
    d = layout.supervisor_dir
    return "\n".join([
        f"{MARK}",
        "[unix_http_server]",
        f"file={layout.supervisor_socket}",
        "chmod=0700",
        "[supervisord]",
        f"logfile={d / 'supervisord.log'}",
        f"pidfile={d / 'supervisord.pid'}",
        f"childlogdir={layout.logs_dir}",
        "logfile_maxbytes=10MB",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]",
        f"serverurl=unix://{layout.supervisor_socket}",
        "[include]",
        f"files = {layout.programs_dir}/*.conf",
        "",
    ])
