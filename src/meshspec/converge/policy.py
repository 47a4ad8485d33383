"""What each runtime supports: the one place a deploy refuses a spec it cannot converge."""

from __future__ import annotations

from meshspec.plan import LOCAL, Plan, Runtime


def refusal(plan: Plan, runtime: Runtime, host_names: list[str]) -> str | None:
    """Why `plan` cannot be deployed with `runtime` to `host_names`, or None."""
    services = plan.spec.services
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
