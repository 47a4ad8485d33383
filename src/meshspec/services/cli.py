"""`meshspec serve <name>`: the project's own services, as the spec's commands start them.

Each service's module is imported only when it runs (the MCP SDK alone takes a second).
"""

from __future__ import annotations

import typer

from meshspec.lazycli import lazy_group

SERVICES = {
    "backend-api": "meshspec.services.backend_api:backend_api_command",
    "task-worker": "meshspec.services.task_worker:task_worker_command",
    "frontend": "meshspec.services.frontend:frontend_command",
    "mcp-http": "meshspec.services.mcp_http:mcp_http_command",
    "mcp-task-runner": "meshspec.services.mcp_task_runner:mcp_task_runner_command",
    "mcp-gateway": "meshspec.services.mcp_gateway:mcp_gateway_command",
    "embeddings": "meshspec.services.embeddings:embeddings_command",
    "semantic-search": "meshspec.services.semantic_search:semantic_search_command",
}
serve_app = typer.Typer(cls=lazy_group(SERVICES), no_args_is_help=True, add_completion=False,
                        help="Run one of meshspec's own services.")


@serve_app.callback()
def serve_group() -> None:
    """Run one of meshspec's own services (each imports only its own module)."""
