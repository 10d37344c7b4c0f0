"""``circuitlab prune`` and ``circuitlab run``: prune task circuits out of a trained model.

``prune`` works on an existing run folder; ``run`` is the main job: it trains a model (or reuses one
cached by config hash), prunes every task the full model solves, and prints a table plus the
geometric means of edges and nodes. Progress goes to stderr; ``--json`` prints one JSON document
on stdout. Both write ``circuits/<task>.json`` and ``summary.json`` under ``--out``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import click

from .cli import RegistryName, emit_json, json_option
from .prune.pipeline import DEFAULT_N_TEST, DEFAULT_N_TRAIN, check_store_available


def _positive_float(ctx, param, value):
    if value is None:
        return value
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive number, got {value!r}", ctx=ctx, param=param)
    return value


def _unit_float(ctx, param, value):
    if value is None:
        return value
    if not (0.0 <= value <= 1.0):
        raise click.BadParameter(f"must be in [0, 1], got {value!r}", ctx=ctx, param=param)
    return value


def _positive_int(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value!r}", ctx=ctx, param=param)
    return value


def _nonneg_float(ctx, param, value):
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"must be >= 0, got {value!r}", ctx=ctx, param=param)
    return value


def prune_options(min_accuracy: float):
    """The options shared by ``prune`` and ``run`` (``--min-accuracy`` defaults differ)."""
    opts = [
        click.option("--pruner", type=RegistryName("pruner"), required=True,
                     help="Mask parameterization: heaviside (the paper's), hardconcrete, sigmoid, or a plugin's."),
        click.option("--objective", type=RegistryName("objective"), default="binary_ce", show_default=True,
                     help="Pruning objective: binary_ce (the paper's), kl, logit_diff, or a plugin's."),
        click.option("--tasks", "tasks_spec", default=None, metavar="SUITE|SUITE:task,task",
                     help="Tasks to prune. [default: every task of every suite]"),
        click.option("--target-loss", type=float, default=0.15, show_default=True, callback=_positive_float,
                     help="Task loss (binary CE per prompt) the circuit must reach on the train pairs."),
        click.option("--ablation", type=click.Choice(["mean", "zero"]), default="mean", show_default=True,
                     help="What a pruned node is replaced by: its mean over corpus tokens, or zero."),
        click.option("--freeze-norm", is_flag=True,
                     help="Fix the final RMSNorm scale to the unpruned model's (paper-spec §6.2 control)."),
        click.option("--calibrate", is_flag=True,
                     help="Fit a scale and shift of the logit difference per candidate circuit (paper A.5)."),
        click.option("--min-accuracy", type=float, default=min_accuracy, show_default=True, callback=_unit_float,
                     help="Prune only tasks whose full-model test accuracy is at least this; list the others as skipped."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the mask search."),
        click.option("--steps", type=int, default=None, callback=_positive_int,
                     help="Mask optimisation steps. [default: the pruner's]"),
        click.option("--lr", type=float, default=None, callback=_positive_float,
                     help="Mask learning rate. [default: the pruner's]"),
        click.option("--penalty-coef", type=float, default=None, callback=_nonneg_float,
                     help="Coefficient of the mask penalty (kept-node count). [default: the pruner's]"),
        click.option("--n-train", type=int, default=DEFAULT_N_TRAIN, show_default=True, callback=_positive_int,
                     help="Train pairs per task (mask search and bisection)."),
        click.option("--n-test", type=int, default=DEFAULT_N_TEST, show_default=True, callback=_positive_int,
                     help="Held-out test pairs per task (reported loss, accuracy, validations)."),
        click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda."),
        click.option("--threads", type=int, default=1, show_default=True, callback=_positive_int,
                     help="CPU threads for pruning (its passes are small: one thread is fastest on a busy machine)."),
        click.option("--store", "store_path", default=None, metavar="PATH",
                     help="Also add every circuit to this activation store."),
        json_option,
    ]

    def deco(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


def print_table(summary: dict) -> None:
    """The human-readable result: one row per circuit, skipped tasks, and the geometric means."""
    rows = summary["tasks"]
    width = max([len(r["task"]) for r in rows] + [len(s["task"]) for s in summary["skipped"]] + [4])
    click.echo(f"{'task':<{width}}  {'nodes':>6}  {'edges':>7}  {'loss':>7}  {'reached':>7}  {'seconds':>7}")
    for r in rows:
        reached = "yes" if r["reached"] else "NO"
        click.echo(f"{r['task']:<{width}}  {r['nodes']:>6}  {r['edges']:>7}  {r['loss']:>7.4f}  "
                   f"{reached:>7}  {r['seconds']:>7.1f}")
    for r in rows:
        if not r["reached"]:
            click.echo(f"not reached: {r['task']}: even the full model's loss is {r['full_model_loss']:.4f} "
                       f"(target {r['target_loss']:g}); its row is the full model")
    for s in summary["skipped"]:
        acc = "n/a" if s.get("accuracy") is None else f"{s['accuracy']:.3f}"
        click.echo(f"skipped: {s['task']} (accuracy {acc}): {s['reason']}")
    ge, gn = summary["geomean_edges"], summary["geomean_nodes"]
    if ge is None:
        click.echo("geomean edges: n/a (no circuit reached the target)")
    else:
        click.echo(f"geomean edges: {ge:.1f}   geomean nodes: {gn:.1f}   "
                   f"(over {summary['n_reached']} circuits that reached target {summary['target_loss']:g})")


@click.command("prune")
@click.option("--model", "model_dir", required=True, metavar="DIR", help="A run folder written by 'circuitlab train'.")
@prune_options(min_accuracy=0.0)
@click.option("--out", default=None, metavar="DIR",
              help="Where circuits/<task>.json and summary.json go. [default: DIR/pruned/PRUNER-OBJECTIVE]")
def prune_cmd(model_dir, pruner, objective, tasks_spec, target_loss, ablation, freeze_norm, calibrate,
              min_accuracy, seed, steps, lr, penalty_coef, n_train, n_test, device, threads, store_path, json_, out):
    """Prune a trained model to the smallest node circuit per task that reaches --target-loss.

    Optimises node masks on each task's train pairs, ranks nodes by mask score, bisects the node
    count to the smallest circuit whose train loss reaches the target, and reports its held-out test
    loss, edges and validations (sufficiency, necessity, a random circuit of the same size).
    """
    from .prune.pipeline import prune_model
    from .runs import read_run

    info = read_run(model_dir)
    if out is None:
        out = info.path / "pruned" / f"{pruner}-{objective}"
    summary = prune_model(model_dir, pruner=pruner, objective=objective, tasks_spec=tasks_spec,
                          target_loss=target_loss, ablation=ablation, freeze_norm=freeze_norm, calibrate=calibrate,
                          min_accuracy=min_accuracy, seed=seed, steps=steps, lr=lr, penalty_coef=penalty_coef,
                          n_train=n_train, n_test=n_test, device=device, out=out, store_path=store_path, threads=threads)
    if json_:
        emit_json(summary)
    else:
        print_table(summary)


@click.command("run")
@click.option("--sparsity", type=RegistryName("sparsity"), required=True,
              help="Sparsity schedule of the model: dense, topk (the paper's), or a plugin's.")
@prune_options(min_accuracy=0.9)
@click.option("--preset", default="small", show_default=True, help="Model size and training budget: tiny, small or ref.")
@click.option("--density", type=float, default=None, help="Target fraction of nonzero weights per matrix. [default: 0.0625]")
@click.option("--train-seed", type=int, default=0, show_default=True, help="Seed of model training.")
@click.option("--out", default=None, metavar="DIR",
              help="Where circuits, summary.json and the model reference go. [default: runs/run-PRESET-SPARSITY-PRUNER]")
def run_cmd(sparsity, pruner, objective, tasks_spec, target_loss, ablation, freeze_norm, calibrate, min_accuracy,
            seed, steps, lr, penalty_coef, n_train, n_test, device, threads, store_path, json_, preset, density, train_seed,
            out):
    """The main job: train a model (or reuse one cached by config hash), then prune every task it solves.

    Tasks whose full-model test accuracy is below --min-accuracy are listed as skipped: under mean
    ablation a model near chance still yields a "circuit", and that circuit explains nothing.
    Prints a table (task, nodes, edges, loss, reached, seconds) and the geometric means of edges and nodes.
    """
    from .cli_train import build_train_config
    from .config import get_preset, to_dict
    from .prune.pipeline import ensure_model, prune_model

    t0 = time.perf_counter()
    check_store_available(store_path)
    train_config = build_train_config(sparsity, density, preset, None, None, train_seed)
    model_config = get_preset(preset).model
    if out is None:
        out = Path("runs") / f"run-{preset}-{sparsity}-{pruner}"
    path, reused = ensure_model(train_config, model_config)
    train_seconds = time.perf_counter() - t0
    summary = prune_model(path, pruner=pruner, objective=objective, tasks_spec=tasks_spec, target_loss=target_loss,
                          ablation=ablation, freeze_norm=freeze_norm, calibrate=calibrate, min_accuracy=min_accuracy,
                          seed=seed, steps=steps, lr=lr, penalty_coef=penalty_coef, n_train=n_train, n_test=n_test,
                          device=device, out=out, store_path=store_path, threads=threads,
                          extra_provenance={"train_config": to_dict(train_config)})
    summary["model_reused"] = reused
    summary["train_seconds"] = train_seconds
    summary["total_seconds"] = time.perf_counter() - t0
    from .files import write_json

    write_json(Path(out) / "summary.json", summary)
    if json_:
        emit_json(summary)
    else:
        print_table(summary)
        click.echo(f"model: {path} ({'reused' if reused else 'trained'}); results in {out}; "
                   f"total {summary['total_seconds']:.0f}s")
