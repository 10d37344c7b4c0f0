"""``circuitlab bench``: the sparse-vs-dense circuit benchmark (docs/bench.md).

``circuitlab bench SPEC --out DIR`` runs a spec on Dask (resumable); ``circuitlab bench report DIR``
writes the figures and tables; ``circuitlab bench export-mib DIR`` writes node and edge scores in the
MIB circuit track's submission layout. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import click

from .options import emit_json, json_option


class _BenchGroup(click.Group):
    """``bench SPEC ...`` runs a spec; ``bench report|export-mib DIR`` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("bench", cls=_BenchGroup, invoke_without_command=False, no_args_is_help=True)
def bench_cmd() -> None:
    """Benchmark sparse against dense circuits at matched pretraining loss (docs/bench.md).

    \b
      circuitlab bench benchmarks/quick.toml --out out/quick [--workers N] [--dry-run]
      circuitlab bench report out/quick          # PNG figures and report.md
      circuitlab bench export-mib out/quick      # scores in MIB's submission layout
    """


@bench_cmd.command("run")
@click.argument("spec", metavar="SPEC")
@click.option("--out", required=True, metavar="DIR", help="Bench folder: models/, cells/, stores/, results.csv.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local Dask worker processes (one thread each). [default: CPU cores / bench.threads]")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Attach to a running Dask scheduler instead of starting a local cluster.")
@click.option("--dry-run", is_flag=True, help="List the models and cells with estimated times; run nothing.")
@click.option("--assume-solved", type=click.IntRange(min=0), default=None, metavar="N",
              help="With --dry-run: models not evaluated yet solve N tasks. [default: every task, an upper bound]")
@json_option
def run_cmd(spec, out, workers, scheduler, dry_run, assume_solved, json_):
    """Run a benchmark spec: train or reuse every model, prune every solved (model, task) cell.

    Resumable: rerun the same command after an interruption and only unfinished cells run. Progress
    goes to stderr; results to DIR/results.csv (one row per cell) and each model's zarr store.
    """
    from ..bench.runner import default_workers, run_bench
    from ..bench.spec import load_spec

    spec_obj = load_spec(spec)
    n = workers or default_workers(spec_obj)
    if dry_run:
        from ..bench.estimate import dry_run as plan

        doc = plan(spec_obj, out, n, assume_solved)
        emit_json(doc) if json_ else _print_plan(doc)
        return
    summary = run_bench(spec_obj, out, workers=n, scheduler=scheduler)
    if json_:
        emit_json(summary)
    else:
        click.echo(f"{summary['cells']} cells ({summary['done']} pruned, {summary['skipped']} skipped; "
                   f"{summary['computed_now']} computed now, {summary['reused']} from earlier runs) over "
                   f"{summary['models']} models in {summary['seconds']:.0f}s; results: {summary['results']}")


def _print_plan(doc: dict) -> None:
    for c in doc["step_costs"]:
        click.echo(f"measured: d_model {c['shape']['d_model']} x {c['shape']['n_layer']} layers ({c['sparsity']}): "
                   f"train step {c['train_step'] * 1e3:.0f} ms, mask step {c['mask_step'] * 1e3:.0f} ms, "
                   f"train-set pass {c['train_pass'] * 1e3:.0f} ms")
    for m in doc["models"]:
        click.echo(f"model {m['model_id']:<40} {m['state']:<9} {m['seconds']:8.0f}s")
    for c in doc["cells"]:
        click.echo(f"cell  {c['cell_id']:<70} {c['state']:<7} {c['seconds']:8.1f}s")
    bound = " (upper bound: cells of unevaluated models assume every task solved)" if doc["upper_bound"] else ""
    if doc["assume_solved"] is not None:
        bound = f" (models not evaluated yet assumed to solve {doc['assume_solved']} tasks)"
    click.echo(f"{len(doc['models'])} models, {len(doc['cells'])} cells; estimated {doc['total_seconds'] / 60:.1f} "
               f"CPU-minutes, {doc['wall_seconds'] / 60:.1f} minutes wall on {doc['workers']} workers{bound}")


@bench_cmd.command("report")
@click.argument("out", metavar="DIR")
@click.option("--bootstrap", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples for the matched-loss intervals.")
@json_option
def report_cmd(out, bootstrap, json_):
    """Write DIR/report.md and PNG figures (Pareto plots, faithfulness curves) from DIR/results.csv."""
    from ..bench.report import write_report

    doc = write_report(out, n_boot=bootstrap)
    if json_:
        emit_json(doc)
    else:
        click.echo(doc["matched_summary"])  # per-task and pooled ratios with the interval's unit
        click.echo(f"wrote {doc['markdown']} and {len(doc['figures'])} figures")


@bench_cmd.command("export-mib")
@click.argument("out", metavar="DIR")
@click.option("--to", "target", default=None, metavar="DIR", help="Where to write. [default: DIR/mib]")
@json_option
def export_mib_cmd(out, target, json_):
    """Write every circuit's node and edge scores in the MIB circuit track's submission layout."""
    from ..bench.mib import export_mib

    doc = export_mib(out, target)
    if json_:
        emit_json(doc)
    else:
        click.echo(f"wrote {len(doc['files'])} importance files under {doc['root']}")
