"""`meshspec serve <name>`: the project's own services, as the spec's commands start them."""

from __future__ import annotations

import typer

from meshspec.services.backend_api import backend_api_command
from meshspec.services.embeddings import embeddings_command
from meshspec.services.frontend import frontend_command
from meshspec.services.mcp_gateway import mcp_gateway_command
from meshspec.services.mcp_http import mcp_http_command
from meshspec.services.mcp_task_runner import mcp_task_runner_command
from meshspec.services.semantic_search import semantic_search_command
from meshspec.services.task_worker import task_worker_command

serve_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Run one of meshspec's own services.")
serve_app.command("backend-api")(backend_api_command)
serve_app.command("task-worker")(task_worker_command)
serve_app.command("frontend")(frontend_command)
serve_app.command("mcp-http")(mcp_http_command)
serve_app.command("mcp-task-runner")(mcp_task_runner_command)
serve_app.command("mcp-gateway")(mcp_gateway_command)
serve_app.command("embeddings")(embeddings_command)
serve_app.command("semantic-search")(semantic_search_command)
