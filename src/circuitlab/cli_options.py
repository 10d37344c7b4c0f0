"""Shared pieces of the command line: lazy registry-name parameters and JSON output.

Kept apart from ``cli.py`` so that every subcommand module can import them without a cycle.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .errors import CircuitlabError


class RegistryName(click.ParamType):
    """A registered plugin name of one kind, checked lazily with did-you-mean suggestions."""

    def __init__(self, kind: str):
        self.kind = kind
        self.name = f"{kind} name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from . import plugins

        try:
            plugins.get(self.kind, value)
        except CircuitlabError as exc:
            self.fail(str(exc), param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from . import plugins

        return [CompletionItem(n) for n in plugins.get_registry().names(self.kind) if n.startswith(incomplete)]


def emit_json(obj: Any) -> None:
    """The only thing a ``--json`` command prints on stdout."""
    click.echo(json.dumps(obj, indent=2))


json_option = click.option("json_", "--json", is_flag=True, help="Print one JSON document on stdout.")
