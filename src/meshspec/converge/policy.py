"""What each runtime supports: the one place a deploy refuses a spec it cannot converge."""

from __future__ import annotations

from meshspec.plan import LOCAL, Plan, Runtime

# HAProxy 2.6 refuses a longer `stats socket` path (sun_path, less its own suffix for the reload)
MAX_RUNTIME_SOCKET = 97


def refusal(plan: Plan, runtime: Runtime, host_names: list[str]) -> str | None:
    """Why `plan` cannot be deployed with `runtime` to `host_names`, or None."""
    services = plan.spec.services
    if plan.spec.proxy.service is not None and len(plan.proxy_runtime) > MAX_RUNTIME_SOCKET:
        return (f"HAProxy's runtime socket {plan.proxy_runtime} is longer than the {MAX_RUNTIME_SOCKET} characters "
                f"HAProxy accepts: choose a shorter MESH_STATE_DIR, or give {plan.spec.proxy.service} a `runtime` "
                "port (a TCP runtime API anyone on the host can use)")
    if runtime.in_containers:
        if any(name != LOCAL for name in host_names):
            return ("MESH_RUNTIME=docker deploys to @local only: meshspec drives this machine's Docker engine "
                    "through the Docker SDK")
        built = [s.name for s in services if s.container and s.container.build]
        if built:
            return (f"{', '.join(built)}: container.build is not supported yet; give container.image (from "
                    "your registry) or a process install to build from")
        return None
    container_only = [s.name for s in services if s.process is None]
    if container_only:
        return f"{', '.join(container_only)}: no process, only a container: deploy with MESH_RUNTIME=docker"
    return None
