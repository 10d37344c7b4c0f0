"""The ``circuitlab`` command line.

Nothing heavy is imported at module level: ``circuitlab --help`` must not import torch, and plugin
names are resolved lazily (``RegistryName``), so a broken plugin cannot break ``--help``.
Bad input raises ``CircuitlabError`` and becomes one stderr line and exit code 2.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from . import __version__
from .cli_options import RegistryName, emit_json, json_option  # noqa: F401  (re-exported for subcommands)
from .errors import CircuitlabError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="circuitlab")
def cli() -> None:
    """Train weight-sparse GPT-2 models, prune them to task circuits, and compare methods.

    \b
    Typical use:
      circuitlab run --sparsity topk --pruner hardconcrete   # train, then prune every solved task
      circuitlab plugins                                     # what is installed
    Progress goes to stderr; --json output goes to stdout.
    """


@cli.command("plugins")
@json_option
def plugins_cmd(json_: bool) -> None:
    """List plugins (distribution, version) and the names each registered, per kind."""
    from . import plugins

    reg = plugins.get_registry()
    by_plugin: dict[str, dict[str, Any]] = {}
    for kind in plugins.KINDS:
        for entry in reg.entries[kind].values():
            rec = by_plugin.setdefault(entry.plugin, {"plugin": entry.plugin, "dist": entry.dist,
                                                      "version": entry.version,
                                                      "registered": {k: [] for k in plugins.KINDS}})
            rec["registered"][kind].append({"name": entry.name, "summary": entry.summary})
    failed = [{"plugin": f.plugin, "dist": f.dist, "version": f.version, "error": f.error} for f in reg.pm.failures]
    if json_:
        emit_json({"plugins": list(by_plugin.values()), "failed": failed,
                   "names": {k: reg.names(k) for k in plugins.KINDS}})
        return
    for rec in by_plugin.values():
        click.echo(f"{rec['plugin']}  ({rec['dist']} {rec['version']})")
        for kind, items in rec["registered"].items():
            for item in items:
                click.echo(f"  {plugins.KIND_LABELS[kind]:<22} {item['name']:<16} {item['summary']}")
    for f in failed:
        click.echo(f"{f['plugin']}  ({f['dist']} {f['version']})  FAILED TO LOAD: {f['error']}")


# Subcommands live in their own modules; each imports torch only inside its command body.
from .cli_prune import prune_cmd, run_cmd  # noqa: E402
from .cli_store import compare_cmd, record_cmd, top_cmd  # noqa: E402
from .cli_tasks import tasks_cmd  # noqa: E402
from .cli_train import train_cmd  # noqa: E402

for _command in (train_cmd, tasks_cmd, prune_cmd, run_cmd, record_cmd, compare_cmd, top_cmd):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes one stderr line and exit code 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="circuitlab", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "circuitlab"
        click.echo(f"error: {exc.format_message()} (see '{cmd} --help')", err=True)
        sys.exit(2)
    except CircuitlabError as exc:
        if os.environ.get("CIRCUITLAB_RAISE_ERRORS"):
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
