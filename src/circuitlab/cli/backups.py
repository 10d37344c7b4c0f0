"""``circuitlab backups``: how many times can a task's circuit be knocked out and found again?"""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ABLATIONS, PruneConfig
from .options import RegistryName, emit_json, json_option, options, setting


def _fig(x, fmt: str = ".4f") -> str:
    return "n/a" if x is None else format(x, fmt)


def print_backups(summary: dict) -> None:
    rows = summary["rounds"]
    w = max([len(str(r["excluded"])) for r in rows] + [13])
    click.echo(f"{'round':>5}  {'reached':>7}  {'nodes min-median-max':>20}  {'test loss':>9}  {'core':>4}  "
               f"{'jaccard':>7}  {'then excluded':<{w}}  {'kept by':>7}  {'seconds':>7}")
    for r in rows:
        sizes = "-" if r["size_min"] is None else f"{r['size_min']}-{r['size_median']:g}-{r['size_max']}"
        freq = "" if r["excluded_frequency"] is None else f"{r['excluded_frequency']:.0%}"
        click.echo(f"{r['round']:>5}  {'yes' if r['reached'] else 'NO':>7}  {sizes:>20}  {_fig(r['loss_mean']):>9}  "
                   f"{r['core']:>4}  {_fig(r['jaccard_mean'], '.2f'):>7}  {str(r['excluded'] or '-'):<{w}}  "
                   f"{freq:>7}  {r['seconds']:>7.1f}")
    if summary["depth"] is not None:
        click.echo(f"backup depth: {summary['depth']} (the task fails once {summary['depth']} node(s) are excluded)")
    else:
        click.echo(f"backup depth: at least {summary['depth_at_least']} ({summary['stop']})")
    misses = summary.get("model_misses_round")
    if misses is not None:
        click.echo(f"the whole model, with the nodes excluded before round {misses} ablated, misses the target on the "
                   f"test pairs from round {misses} (test loss {summary['rounds'][misses]['full_model_loss']:.4f})")
    else:
        click.echo("the whole model, with the excluded nodes ablated, meets the target on the test pairs in every round")
    click.echo(f"{summary['seconds_per_round']:.1f} s per round; results in {summary['out']} (backups.json, backups.png)")


@click.command("backups")
@click.option("--model", "model_dir", required=True, metavar="DIR", help="A run folder written by 'circuitlab train'.")
@click.option("--task", "tasks", required=True, metavar="SUITE:task", help="The task, e.g. python:single_double_quote.")
@options(
    click.option("--pruner", type=RegistryName("pruner"), default=PruneConfig().pruner, show_default=True,
                 help="Mask parameterization."),
    click.option("--objective", type=RegistryName("objective"), default=PruneConfig().objective, show_default=True,
                 help="Pruning objective."),
    setting(PruneConfig, "seeds", default=8, help="Pruning seeds per round (--seed, --seed + 1, ...)."),
    click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True,
                 help="At most this many rounds (round 0 excludes nothing)."),
    setting(PruneConfig, "target_loss", help="Task loss the circuit must reach on the train pairs."),
    setting(PruneConfig, "seed", help="The first pruning seed."),
    setting(PruneConfig, "core_share", help="Nodes kept by at least this share of seeds form a round's core."),
    setting(PruneConfig, "ablation", type=click.Choice(ABLATIONS), help="What a pruned node is replaced by."),
    setting(PruneConfig, "min_accuracy", default=0.0, help="Refuse a task whose full-model accuracy interval lies "
                                                          "below this."),
    setting(PruneConfig, "steps", help="Mask optimisation steps. [default: the pruner's]"),
    setting(PruneConfig, "lr", help="Mask learning rate. [default: the pruner's]"),
    setting(PruneConfig, "penalty_coef", help="Coefficient of the mask penalty. [default: the pruner's]"),
    setting(PruneConfig, "n_train", help="Train pairs (mask search and bisection)."),
    setting(PruneConfig, "n_test", help="Held-out test pairs (reported losses)."),
    setting(PruneConfig, "device", help="Torch device, e.g. cpu or cuda."),
    setting(PruneConfig, "threads", help="CPU threads per pruning process."),
    setting(PruneConfig, "jobs", help="Worker processes pruning seeds side by side. [default: one per core]"),
)
@click.option("--out", default=None, metavar="DIR",
              help="Where round-NNN.json, backups.json and backups.png go. [default: DIR/backups/PRUNER-OBJECTIVE/TASK]")
@json_option
def backups_cmd(model_dir, rounds, out, json_, **settings):
    """Backup circuits: prune with --seeds seeds, ablate the node most seeds keep from then on, repeat.

    Stops when the target cannot be reached any more (the backup depth: nodes excluded at that point),
    or after --rounds rounds. A killed run continues after its last finished round when started again
    with the same flags. Prints one row per round; --json prints backups.json.
    """
    from ..outputs import guard_output
    from ..prune.backups import backup_circuits
    from ..train.runs import read_run
    from .prune import prune_config

    config = prune_config(settings)
    info = read_run(model_dir)
    if out is None:
        stem = config.tasks.replace(":", "-").replace("/", "_")
        out = info.path / "backups" / f"{config.pruner}-{config.objective}" / stem
    guard_output(out, "backups", inputs=(model_dir, config.mine_from))
    summary = backup_circuits(info.path, config, rounds, Path(out))
    if json_:
        emit_json(summary)
    else:
        print_backups(summary)
