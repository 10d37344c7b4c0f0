"""``circuitlab prune`` and ``circuitlab run``: prune task circuits out of a trained model.

``prune`` works on an existing run folder; ``run`` is the main job: it trains a model (or reuses one
cached by config hash), prunes every task the full model solves, and prints a table plus the
geometric means of edges and nodes. Progress goes to stderr; ``--json`` prints one JSON document
on stdout. Both write ``circuits/<suite>.<task>.json`` and ``summary.json`` under ``--out``. Every pruning
setting is a field of ``circuitlab.config.PruneConfig``, with its default and check defined there.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import click

from ..config import ABLATIONS, MASK_DTYPES, PruneConfig, TrainConfig
from .options import RegistryName, emit_json, json_option, options, setting


def _one_tasks_spec(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
    """``--tasks`` given twice used to keep only the last value, silently; now it is an error."""
    if len(value) > 1:
        raise click.BadParameter(f"given {len(value)} times ({', '.join(repr(v) for v in value)}); pass it once: "
                                 "a comma-separated list, e.g. mined:mined_quote,python:else_elif", ctx=ctx, param=param)
    return value[0] if value else None


def prune_options(min_accuracy: float):
    """The options shared by ``prune`` and ``run`` (``--min-accuracy`` defaults differ)."""
    return options(
        click.option("--pruner", type=RegistryName("pruner"), required=True,
                     help="Pruner: heaviside (the paper's), hardconcrete, sigmoid, or a plugin's (NAME or DIST:NAME)."),
        click.option("--objective", type=RegistryName("objective"), default=PruneConfig().objective,
                     show_default=True, help="Pruning objective: binary_ce (the paper's), kl, logit_diff, or a plugin's (NAME "
                                                  "or DIST:NAME)."),
        click.option("--tasks", "tasks", multiple=True, callback=_one_tasks_spec, metavar="SUITE[:TASK],...",
                     help="Tasks to prune: a comma-separated list of SUITE, SUITE:TASK and DIST:SUITE[:TASK] "
                          "(e.g. mined:mined_quote,python:else_elif,if_equals). [default: every task of every suite]"),
        setting(PruneConfig, "target_loss", help="Task loss (binary CE per prompt) the circuit must reach on the "
                                                 "train pairs."),
        setting(PruneConfig, "ablation", type=click.Choice(ABLATIONS),
                help="What a pruned node is replaced by: its mean over corpus tokens, zero, or its mean over "
                     "the task's own train prompts."),
        setting(PruneConfig, "freeze_norm",
                help="Fix the final RMSNorm scale to the unpruned model's (the LayerNorm-cheat control of Drori 2026)."),
        setting(PruneConfig, "nonsense",
                help="Control: prune the nonsense version of each task (the same prompts, the two answers "
                     "relabelled by a rule unrelated to the task); the accuracy gate still uses the real pairs."),
        setting(PruneConfig, "calibrate",
                help="Fit a scale and shift of the logit difference per candidate circuit (paper A.5)."),
        setting(PruneConfig, "min_accuracy", default=min_accuracy,
                help="Accuracy threshold: a task is solved when the 95% interval of its full-model test accuracy "
                     "lies above it, borderline when the interval contains it (pruned and flagged), and "
                     "skipped when the interval lies below it."),
        setting(PruneConfig, "seed", help="Seed of the mask search."),
        setting(PruneConfig, "seeds", help="Prune each task with this many seeds (--seed, --seed + 1, ...): the "
                                           "circuit JSON gains 'seeds' (per-node keep frequency, core, union, "
                                           "sizes, pairwise Jaccard); the circuit is --seed's."),
        setting(PruneConfig, "core_share", help="With --seeds: the core is the nodes kept by at least this share "
                                                "of the seeds."),
        setting(PruneConfig, "steps", help="Mask optimisation steps. [default: the pruner's]"),
        setting(PruneConfig, "lr", help="Mask learning rate. [default: the pruner's]"),
        setting(PruneConfig, "penalty_coef", help="Coefficient of the mask penalty (kept-node count). "
                                                  "[default: the pruner's]"),
        setting(PruneConfig, "n_train", help="Train pairs per task (mask search and bisection)."),
        setting(PruneConfig, "n_test", help="Held-out test pairs per task (reported loss, accuracy, validations)."),
        setting(PruneConfig, "device", help="Torch device, e.g. cpu or cuda."),
        setting(PruneConfig, "threads", help="CPU threads for pruning (its passes are small: one thread is "
                                             "fastest on a busy machine)."),
        setting(PruneConfig, "mask_dtype", type=click.Choice(MASK_DTYPES),
                help="Number format of the mask training's matrix products: bfloat16 (several times faster on a "
                     "CPU with native bfloat16 and on CUDA) or float32. The bisection, the reported losses and "
                     "the validations run in float32 either way."),
        setting(PruneConfig, "jobs", help="Worker processes pruning tasks side by side, each with --threads "
                                          "threads; circuits are the same for any value. [default: one per core]"),
        setting(PruneConfig, "mine_from", metavar="DIR",
                help="Cut the mined tasks from every .py file under DIR instead of the held-out files of the "
                     "model's corpus (positions split into train and test by a hash). [default: held-out corpus]"),
        setting(PruneConfig, "eval_on", metavar="DIR",
                help="After pruning, score each mined task's circuit (and the full model) on the same task cut "
                     "from DIR: does the circuit transfer? Recorded as 'transfer' in the circuit's JSON."),
        click.option("--store", "store", default=None, metavar="PATH",
                     help="Also add every circuit to this activation store."),
        click.option("--overwrite", is_flag=True,
                     help="With --store: replace this method's earlier results for the same tasks."),
        json_option,
    )


def guard_outputs(out, store, config: PruneConfig, *inputs) -> None:
    """``--out`` and ``--store`` through the one output guard, before any work."""
    from ..outputs import guard_output

    inputs = (*inputs, config.mine_from, config.eval_on)
    guard_output(out, "pruned", inputs=inputs)
    if store is not None:
        guard_output(store, "store", flag="--store", inputs=inputs)


def prune_config(settings: dict) -> PruneConfig:
    """The PruneConfig of a command's parameters (every parameter named like a PruneConfig field)."""
    return PruneConfig(**{f.name: settings[f.name] for f in attrs.fields(PruneConfig) if f.name in settings})


def _key(row: dict) -> str:
    """A summary row's task as its key, ``suite:task``."""
    return f"{row['suite']}:{row['task']}" if row.get("suite") else row["task"]


def print_table(summary: dict) -> None:
    """The human-readable result: one row per circuit, skipped tasks, and the geometric means."""
    rows = summary["tasks"]
    width = max([len(_key(r)) for r in rows] + [len(_key(s)) for s in summary["skipped"]] + [4])
    click.echo(f"{'task':<{width}}  {'nodes':>6}  {'edges':>7}  {'loss':>7}  {'reached':>7}  {'seconds':>7}  "
               f"{'full-model accuracy (95% interval)':<36}")
    for r in rows:
        reached = "yes" if r["reached"] else "NO"
        click.echo(f"{_key(r):<{width}}  {r['nodes']:>6}  {r['edges']:>7}  {r['loss']:>7.4f}  "
                   f"{reached:>7}  {r['seconds']:>7.1f}  {_accuracy_cell(r, summary['min_accuracy'])}")
    for r in rows:
        if not r["reached"]:
            click.echo(f"not reached: {_key(r)}: even the full model's loss is {r['full_model_loss']:.4f} "
                       f"(target {r['target_loss']:g}); its row is the full model")
    print_transfer(rows)
    print_trust(rows)
    for s in summary["skipped"]:
        acc = "n/a" if s.get("accuracy") is None else f"{s['accuracy']:.3f}"
        click.echo(f"skipped: {_key(s)} (accuracy {acc}): {s['reason']}")
    if summary.get("n_borderline"):
        click.echo(f"borderline: {summary['n_borderline']} task(s) whose accuracy interval contains "
                   f"{summary['min_accuracy']:g}: pruned and flagged; another machine's model may not solve them")
    ge, gn = summary["geomean_edges"], summary["geomean_nodes"]
    if ge is None:
        click.echo("geomean edges: n/a (no circuit reached the target)")
    else:
        click.echo(f"geomean edges: {ge:.1f}   geomean nodes: {gn:.1f}   "
                   f"(over {summary['n_reached']} circuits that reached target {summary['target_loss']:g})")
        ges, gns = summary.get("geomean_edges_solved"), summary.get("geomean_nodes_solved")
        if summary.get("n_borderline") and ges is not None:
            click.echo(f"solved only: geomean edges {ges:.1f}   geomean nodes {gns:.1f}   "
                       f"(over {summary['n_solved']} solved tasks)")


def _accuracy_cell(row: dict, threshold: float) -> str:
    """'0.953 [0.92-0.97] solved': the full model's test accuracy, its interval and the verdict."""
    acc, low, high = row.get("task_accuracy"), row.get("accuracy_low"), row.get("accuracy_high")
    if acc is None or low is None:
        return ""
    label = (row.get("verdict") or "") if threshold > 0 else "(no gate: --min-accuracy 0)"
    return f"{acc:.3f} [{low:.3f}-{high:.3f}] {label}"


def _loss_acc(loss: float | None, accuracy: float | None) -> str:
    return "n/a" if loss is None else f"{loss:.3f} / {accuracy:.2f}"


def _fig(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def print_trust(rows: list[dict]) -> None:
    """Interchange figures (circuit against random node sets of its size) and, with --seeds, the seed
    distribution of each circuit."""
    rows = [r for r in rows if r.get("interchange_accuracy") is not None or r.get("seeds")]
    if not rows:
        return
    w = max(len(r["task"]) for r in rows + [{"task": "interchange"}])
    click.echo(f"{'interchange':<{w}}  {'accuracy':>8}  {'shift':>7}  {'random acc.':>11}  {'random shift':>12}"
               f"  {'seeds':>5}  {'core':>5}  {'union':>5}  {'sizes':>11}  {'jaccard':>7}")
    for r in rows:
        s = r.get("seeds") or {}
        sizes = f"{s['size_min']}-{s['size_max']}" if s else ""
        click.echo(f"{r['task']:<{w}}  {_fig(r.get('interchange_accuracy')):>8}  "
                   f"{_fig(r.get('interchange_shift')):>7}  {_fig(r.get('random_interchange_accuracy')):>11}  "
                   f"{_fig(r.get('random_interchange_shift')):>12}  {s.get('n', 1):>5}  {s.get('core', ''):>5}  "
                   f"{s.get('union', ''):>5}  {sizes:>11}  {_fig(s.get('jaccard_mean')) if s else '':>7}")


def print_transfer(rows: list[dict]) -> None:
    """The ``--eval-on`` figures next to the held-out ones: does each circuit keep its accuracy there?"""
    moved = [r for r in rows if r.get("transfer")]
    if not moved:
        return
    w = max(len(r["task"]) for r in moved + [{"task": "transfer"}])
    click.echo(f"{'transfer':<{w}}  {'test pairs: circuit':>22}  {'full model':>12}  {'pairs':>5}  "
               f"{'--eval-on: circuit':>18}  {'full model':>12}   (loss / accuracy)")
    for r in moved:
        t = r["transfer"]
        click.echo(f"{r['task']:<{w}}  {_loss_acc(r['loss'], r['accuracy']):>22}  "
                   f"{_loss_acc(r['full_model_loss'], r['full_model_accuracy']):>12}  {t['n_pairs']:>5}  "
                   f"{_loss_acc(t['loss'], t['accuracy']):>18}  "
                   f"{_loss_acc(t['full_model_loss'], t['full_model_accuracy']):>12}")
    click.echo(f"--eval-on: {moved[0]['transfer']['folder']} (content hash {moved[0]['transfer']['folder_hash'][:12]})")


@click.command("prune")
@click.option("--model", "model_dir", required=True, metavar="DIR", help="A run folder written by 'circuitlab train'.")
@prune_options(min_accuracy=0.0)
@click.option("--out", default=None, metavar="DIR",
              help="Where circuits/<suite>.<task>.json and summary.json go. [default: DIR/pruned/PRUNER-OBJECTIVE]")
@click.option("--checkpoints", is_flag=True,
              help="Prune the tasks at every checkpoint kept by 'train --keep-checkpoints' and at the final model; "
                   "prints one row per task and checkpoint, writes track.json and track.png.")
def prune_cmd(model_dir, store, overwrite, json_, out, checkpoints, **settings):
    """Prune a trained model to the smallest node circuit per task that reaches --target-loss.

    Optimises node masks on each task's train pairs, ranks nodes by mask score, bisects the node
    count to the smallest circuit whose train loss reaches the target, and reports its held-out test
    loss, edges and validations (sufficiency, necessity, a random circuit of the same size), and its
    interchange figures (patching its nodes from the pair's other prompt).
    """
    from ..jobs import prune_job
    from ..train.runs import read_run

    config = prune_config(settings)
    info = read_run(model_dir)
    if checkpoints:
        return _track(info, config, store, out, json_)
    if out is None:
        out = info.path / "pruned" / f"{config.pruner}-{config.objective}".replace(":", ".")  # DIST:NAME names
    guard_outputs(out, store, config, model_dir)
    summary = prune_job(info.path, config, out, store=store, overwrite=overwrite)
    if json_:
        emit_json(summary)
    else:
        print_table(summary)


def _track(info, config: PruneConfig, store, out, json_) -> None:
    from ..errors import CircuitlabError
    from ..outputs import guard_output
    from ..prune.track import track_circuits

    if store is not None:
        raise CircuitlabError("--store and --checkpoints exclude each other; add the final model's circuits to a "
                              "store with a plain 'circuitlab prune --store'")
    if out is None:
        out = info.path / "track" / f"{config.pruner}-{config.objective}".replace(":", ".")
    guard_output(out, "track", inputs=(info.path, config.mine_from))
    doc = track_circuits(info.path, config, out)
    if json_:
        emit_json(doc)
        return
    w = max([len(r["task"]) for r in doc["rows"]] + [4])
    click.echo(f"{'task':<{w}}  {'step':>6}  {'val loss':>8}  {'full acc.':>9}  {'nodes':>6}  {'loss':>7}  "
               f"{'reached':>7}  {'jaccard w/ final':>16}")
    for r in doc["rows"]:
        reached = "" if r["reached"] is None else ("yes" if r["reached"] else "NO")
        click.echo(f"{r['task']:<{w}}  {r['step']:>6}  {_fig(r['val_loss'], '.4f'):>8}  "
                   f"{_fig(r['full_model_accuracy'], '.3f'):>9}  {r['nodes'] if r['nodes'] is not None else '-':>6}  "
                   f"{_fig(r['loss'], '.4f'):>7}  {reached:>7}  {_fig(r['jaccard_final']):>16}")
    click.echo(f"results in {doc['out']} (track.json, track.png, one folder per checkpoint)")


@click.command("run")
@click.option("--sparsity", type=RegistryName("sparsity"), required=True,
              help="Sparsity schedule of the model: dense, topk (the paper's), gmp, or a plugin's "
                   "('circuitlab plugins' lists them).")
@prune_options(min_accuracy=PruneConfig().min_accuracy)
@setting(TrainConfig, "preset", help="Model size and training budget: tiny, small or ref.")
@setting(TrainConfig, "density", help="Target fraction of nonzero weights per matrix.")
@setting(TrainConfig, "seed", "--train-seed", "train_seed", help="Seed of model training.")
@click.option("--out", default=None, metavar="DIR",
              help="Where circuits, summary.json and the model reference go. [default: runs/run-PRESET-SPARSITY-PRUNER]")
def run_cmd(sparsity, preset, density, train_seed, store, overwrite, json_, out, **settings):
    """The main job: train a model (or reuse one cached by config hash), then prune every task it solves.

    Tasks whose full-model test accuracy is clearly below --min-accuracy (the whole 95% interval) are
    listed as skipped: under mean ablation a model near chance still yields a "circuit", and that
    circuit explains nothing. Tasks whose interval contains the threshold are pruned and flagged
    borderline, since a model trained on another CPU may land on either side.
    Prints a table (task, nodes, edges, loss, reached, seconds) and the geometric means of edges and nodes.
    """
    from ..jobs import run_job

    config = prune_config(settings)
    train_config = TrainConfig.for_preset(preset, sparsity=sparsity, density=density, seed=train_seed)
    if out is None:
        out = Path("runs") / f"run-{preset}-{sparsity}-{config.pruner}"
    guard_outputs(out, store, config)
    summary = run_job(train_config, config, out, store=store, overwrite=overwrite)
    if json_:
        emit_json(summary)
    else:
        print_table(summary)
        path = summary["model"]
        click.echo(f"model: {path} ({'reused' if summary['model_reused'] else 'trained'}); results in {out}; "
                   f"total {summary['total_seconds']:.0f}s")
