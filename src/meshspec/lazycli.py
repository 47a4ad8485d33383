"""Typer groups whose subcommands are imported only when they run.

`meshspec verify` must not pay for importing the MCP SDK, aiohttp or pyinfra, and each
service started by supervisord only needs its own module.
"""

from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup


def _load(target: str, name: str) -> click.Command:
    module, attr = target.split(":")
    found = getattr(importlib.import_module(module), attr)
    if isinstance(found, typer.Typer):
        command = typer.main.get_command(found)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(found)
        command = typer.main.get_command(single)
    command.name = name
    return command


def lazy_group(commands: dict[str, str]) -> type[TyperGroup]:
    """A TyperGroup class serving `commands` ({name: "module:attribute"}) beside the ones defined in place."""

    class LazyGroup(TyperGroup):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return sorted({*super().list_commands(ctx), *commands})

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            if name in commands:
                return _load(commands[name], name)
            return super().get_command(ctx, name)

    return LazyGroup
