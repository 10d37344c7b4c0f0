"""The ``circuitlab`` command line: the click group and ``main``; one module per command family.

Nothing heavy is imported at module level: ``circuitlab --help`` must not import torch, and plugin
names are resolved lazily (``RegistryName``), so a broken plugin cannot break ``--help``.
Bad input raises ``CircuitlabError`` and becomes one stderr line and exit code 2. Settings come from
the job records in ``circuitlab.config`` (``options.setting``); the commands call ``circuitlab.jobs``
and the layers below it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import warnings

import click

from .. import __version__
from ..errors import CircuitlabError
from ..files import os_error_text
from ..interrupts import Interrupted, raising_signals
from ..log import logger, show_on_stderr
from . import options
from .backups import backups_cmd
from .bench import bench_cmd
from .interchange import interchange_cmd
from .interop import export_graph_cmd, import_oai_circuit_cmd, import_oai_cmd, import_replication_cmd
from .plugins import plugins_cmd
from .prune import prune_cmd, run_cmd
from .store import compare_cmd, record_cmd, top_cmd
from .tasks import tasks_cmd
from .train import train_cmd
from .view import view_cmd

#: Show warnings raised inside other packages (``--verbose`` or ``CIRCUITLAB_VERBOSE=1``).
show_library_warnings = False
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global show_library_warnings
    show_library_warnings = show_library_warnings or value
    return value


def _warnings_of_circuitlab(show):
    """stderr belongs to circuitlab: a warning raised inside another package (a library's
    DeprecationWarning at import, say) goes to the debug log, unless --verbose asks to see it; ``show``
    prints the others."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if show_library_warnings or str(filename).startswith(_PACKAGE):
            show(message, category, filename, lineno, file, line)
        else:
            logger.debug(f"{filename}:{lineno}: {category.__name__}: {message}")

    return show_warning


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="circuitlab")
@click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_verbose,
              help="Also show the warnings of the libraries circuitlab uses (hidden by default).")
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
                 bench_cmd, import_oai_cmd, import_oai_circuit_cmd, export_graph_cmd,
                 import_replication_cmd, view_cmd, backups_cmd, interchange_cmd):
    cli.add_command(_command)


def continue_command(args: list[str]) -> str:
    """The command that continues an interrupted one: the same, with --resume for train."""
    if args and args[0] == "train" and "--resume" not in args:
        args = [*args, "--resume"]
    return "circuitlab " + shlex.join(args)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes one stderr line and exit code 2, never a traceback.

    With --json, anything else printed to stdout while the command runs (a plugin's print, say) goes to
    stderr, so stdout holds exactly the one JSON document."""
    global show_library_warnings
    args = list(sys.argv[1:] if argv is None else argv)
    show_library_warnings = os.environ.get("CIRCUITLAB_VERBOSE", "") not in ("", "0")
    show_on_stderr()
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # zarr's pending reads after an error
    options.json_stream = sys.stdout
    redirect = contextlib.redirect_stdout(sys.stderr) if "--json" in args else contextlib.nullcontext()
    try:
        with raising_signals(), redirect, warnings.catch_warnings():
            warnings.showwarning = _warnings_of_circuitlab(warnings.showwarning)
            cli.main(args=args, prog_name="circuitlab", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "circuitlab"
        click.echo(f"error: {exc.format_message()} (see '{cmd} --help')", err=True)
        sys.exit(2)
    except Interrupted as exc:
        click.echo(f"{exc}; finished work is kept; continue with: {continue_command(args)}", err=True)
        sys.exit(exc.exit_code)
    except CircuitlabError as exc:
        if os.environ.get("CIRCUITLAB_RAISE_ERRORS"):
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, file-size limit, permissions met while writing
        if os.environ.get("CIRCUITLAB_RAISE_ERRORS"):
            raise
        where = f" {exc.filename!r}" if exc.filename else ""
        click.echo(f"error: cannot write{where}: {os_error_text(exc)}; free space, raise the limit or fix "
                   "permissions, then rerun", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished work is kept; continue with: {continue_command(args)}", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
