"""Shared pieces of the command line: options derived from the config records, registry names, JSON output.

``setting(Record, "field", "--flag", help=...)`` is a click option whose default and value check come
from the attrs field of the job record (``circuitlab.config``), so each default and each check is
written once, on the record.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import click

from ..errors import CircuitlabError

_TYPES = {"int": int, "float": float, "str": str}


def _click_type(attribute: attrs.Attribute) -> Any:
    """The click type of a field annotated ``int``, ``float | None``, ``str``... (annotations are strings)."""
    base = str(attribute.type).split("|")[0].strip()
    return _TYPES.get(base, str)


def setting(record: type, field: str, *decls: str, default: Any = attrs.NOTHING, **kwargs: Any):
    """A click option for ``record.field``: the record's default and validator, the field's type.

    Pass ``default=None`` for settings whose default depends on something else (a preset, a plugin);
    ``None`` skips the check, and the record or the plugin fills the value in later.
    """
    attribute = attrs.fields_dict(record)[field]
    if default is attrs.NOTHING:
        default = attribute.default
    decls = decls or ("--" + field.replace("_", "-"),)

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and attribute.validator is not None:
            try:
                attribute.validator(None, attribute, value)
            except CircuitlabError as exc:
                raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        return value

    if str(attribute.type) == "bool":
        return click.option(*decls, is_flag=True, default=bool(default), **kwargs)
    kwargs.setdefault("show_default", default is not None)
    kwargs.setdefault("type", _click_type(attribute))
    return click.option(*decls, default=default, callback=check, **kwargs)


def options(*opts):
    """Apply several click options as one decorator (shared option groups)."""

    def deco(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


class RegistryName(click.ParamType):
    """A registered plugin name of one kind, checked lazily with did-you-mean suggestions."""

    def __init__(self, kind: str):
        self.kind = kind
        self.name = f"{kind} name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from .. import plugins

        try:
            plugins.get(self.kind, value)
        except CircuitlabError as exc:
            self.fail(str(exc), param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from .. import plugins

        return [CompletionItem(n) for n in plugins.get_registry().names(self.kind) if n.startswith(incomplete)]


#: Where ``emit_json`` writes: the real stdout, kept by ``cli.main`` while stdout goes to stderr.
json_stream: Any = None


def emit_json(obj: Any) -> None:
    """The only thing a ``--json`` command prints on stdout."""
    click.echo(json.dumps(obj, indent=2), file=json_stream)


json_option = click.option("json_", "--json", is_flag=True, help="Print one JSON document on stdout.")
