"""The ``circuitlab`` command line: the click group and ``main``; one module per command family.

Nothing heavy is imported at module level: ``circuitlab --help`` must not import torch, and plugin
names are resolved lazily (``RegistryName``), so a broken plugin cannot break ``--help``.
Bad input raises ``CircuitlabError`` and becomes one stderr line and exit code 2. Settings come from
the job records in ``circuitlab.config`` (``options.setting``); the commands call ``circuitlab.jobs``
and the layers below it.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..errors import CircuitlabError
from ..log import show_on_stderr
from .interop import import_oai_cmd
from .plugins import plugins_cmd
from .prune import prune_cmd, run_cmd
from .store import compare_cmd, record_cmd, top_cmd
from .tasks import tasks_cmd
from .train import train_cmd
from .view import view_cmd


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


# Each command module imports torch only inside its command body.
for _command in (plugins_cmd, train_cmd, tasks_cmd, prune_cmd, run_cmd, record_cmd, compare_cmd, top_cmd,
                 import_oai_cmd, view_cmd):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes one stderr line and exit code 2, never a traceback."""
    show_on_stderr()
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
