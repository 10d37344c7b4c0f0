"""``circuitlab tasks``: list the task suites' tasks, or evaluate a trained model on every task."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import click

from ..config import PruneConfig
from .options import emit_json, json_option, setting

#: The main job's threshold (``PruneConfig.min_accuracy``): ``tasks --model`` gives each task's verdict at it.
SOLVED_AT = PruneConfig().min_accuracy

LOSS_CONVENTION = ("per-prompt binary cross-entropy over the two candidate tokens at the last position, "
                   "averaged over both prompts of every pair (the paper's stored two-sided values are 2x)")


def _pair_record(pair: Any) -> dict:
    rec = {"prompt_a": pair.prompt_a, "prompt_b": pair.prompt_b, "token_a": pair.token_a, "token_b": pair.token_b}
    if pair.source_a or pair.source_b:
        rec.update(source_a=pair.source_a, source_b=pair.source_b)
    return rec


def _tail(prompt: str, width: int = 56) -> str:
    """The end of a prompt, where the task is decided, as one readable line."""
    text = prompt if len(prompt) <= width else "..." + prompt[-width:]
    return repr(text)[1:-1]


def list_tasks(tasks: list, context: Any) -> list[dict]:
    """One record per task: description, an example pair and whether the project tokenizer can score it."""
    from ..errors import PluginError
    from ..tasks import check_tokens, load_pairs

    rows = []
    for task in tasks:
        try:
            example = load_pairs(task, "train", 1, context)
            check = check_tokens(task, context.tokenizer) if context.tokenizer is not None else None
        except PluginError as exc:  # one broken task of a plugin suite: say so on its row, list the others
            click.echo(f"circuitlab: {exc}", err=True)
            rows.append({"suite": task.suite, "task": task.name, "description": task.description, "example": None,
                         "usable": False, "problem": str(exc)})
            continue
        rows.append({"suite": task.suite, "task": task.name, "description": task.description,
                     "example": _pair_record(example[0]) if example else None,
                     "usable": None if check is None else check.usable,
                     "problem": None if check is None else check.problem})
    return rows


def evaluate_tasks(tasks: list, model: Any, tokenizer: Any, context: Any, n: int | None,
                   source: str = "the corpus' held-out files") -> list[dict]:
    """Every task's test pairs through the full model: loss, accuracy and token usability."""
    from ..errors import PluginError
    from ..tasks import check_tokens, evaluate, load_pairs

    rows = []
    for task in tasks:
        click.echo(f"evaluating {task.qualname} ...", err=True)
        try:
            pairs = load_pairs(task, "test", n, context)
        except PluginError as exc:
            click.echo(f"circuitlab: {exc}", err=True)
            rows.append({"suite": task.suite, "task": task.name, "usable": False, "problem": str(exc),
                         "n_dropped": 0, "loss": None, "accuracy": None, "n_pairs": 0})
            continue
        check = check_tokens(pairs, tokenizer)
        if not pairs:
            check = attrs.evolve(check, problem=f"no test pairs: its source ({source}) has no candidates")
        row = {"suite": task.suite, "task": task.name, "usable": check.usable, "problem": check.problem,
               "n_dropped": check.n_dropped}
        if check.usable:
            row.update(evaluate(model, tokenizer, list(check.pairs)))
        else:
            row.update(loss=None, accuracy=None, n_pairs=0)
        rows.append(row)
    return rows


def _print_listing(rows: list[dict]) -> None:
    for row in rows:
        flag = "" if row["usable"] in (True, None) else f"  [UNUSABLE: {row['problem']}]"
        click.echo(f"{row['suite']}:{row['task']}  {row['description']}{flag}")
        ex = row["example"]
        if ex is None:
            click.echo("    (no pairs: the source has no candidates)")
            continue
        for side in ("a", "b"):
            src = f"   [{ex['source_' + side]}]" if ex.get("source_" + side) else ""
            click.echo(f"    {side.upper()}: {_tail(ex['prompt_' + side]):<62} -> {ex['token_' + side]!r}{src}")


def _print_evaluation(rows: list[dict]) -> None:
    width = max(len(f"{r['suite']}:{r['task']}") for r in rows) if rows else 10
    click.echo(f"{'task':<{width}}  {'pairs':>5}  {'loss':>6}  {'acc':>5}  {'acc A/B':>9}  "
               f"{'95% interval':>13}  verdict at {SOLVED_AT:g}")
    for r in rows:
        name = f"{r['suite']}:{r['task']}"
        if not r["usable"]:
            click.echo(f"{name:<{width}}  unusable: {r['problem']}")
            continue
        click.echo(f"{name:<{width}}  {r['n_pairs']:>5}  {r['loss']:>6.3f}  {r['accuracy']:>5.2f}  "
                   f"{r['accuracy_a']:>4.2f}/{r['accuracy_b']:<4.2f}  "
                   f"{r['accuracy_low']:>6.3f}-{r['accuracy_high']:.3f}  {r['verdict']}")
    click.echo(f"loss: {LOSS_CONVENTION}; test pairs; accuracy interval: 95% Wilson over the pairs' prompts",
               err=True)


def _with_verdicts(rows: list[dict]) -> list[dict]:
    """Each usable row's solved / borderline / unsolved verdict at the main job's threshold."""
    from ..tasks import verdict

    for r in rows:
        if r.get("usable") and r.get("accuracy_low") is not None:
            r["verdict"] = verdict(r["accuracy_low"], r["accuracy_high"], SOLVED_AT)
    return rows


def compare_mined(spec: str | None, info: Any, n: int | None, mine_from: str) -> dict:
    """The mined tasks' test figures on the held-out corpus (in distribution) and on ``mine_from``."""
    from ..tasks import mined_tasks, resolve_tasks, task_context_for_run
    from ..train.runs import load_model

    inside, outside = task_context_for_run(info), task_context_for_run(info, mine_from)
    out_tasks = mined_tasks(resolve_tasks(spec, outside), outside, splits=("test",))  # bad DIR: one line
    in_tasks = [t for t in resolve_tasks(spec, inside) if t.depends_on_corpus]
    model, tokenizer, info = load_model(info.path, need_tokenizer=True)
    source = outside.mine_from
    held_out = {(r["suite"], r["task"]): r for r in evaluate_tasks(in_tasks, model, tokenizer, inside, n)}
    figures = ("usable", "problem", "n_dropped", "loss", "accuracy", "accuracy_a", "accuracy_b", "pair_loss",
               "n_pairs", "accuracy_low", "accuracy_high")
    rows = []
    for r in evaluate_tasks(out_tasks, model, tokenizer, outside, n, source=source.folder):
        other = held_out.get((r["suite"], r["task"]), {})
        rows.append({"suite": r["suite"], "task": r["task"],
                     "in_distribution": {k: other.get(k) for k in figures},
                     "out_of_distribution": {k: r.get(k) for k in figures}})
    return {"model": str(info.path), "split": "test", "loss_convention": LOSS_CONVENTION,
            "in_distribution": {"source": "held-out (validation) files of the model's training corpus",
                                "corpus": info.train.corpus or "stdlib", "corpus_hash": inside.corpus_hash},
            "out_of_distribution": {"source": "--mine-from", **source.provenance()},
            "tasks": rows, "count": len(rows)}


def _print_comparison(doc: dict) -> None:
    rows = doc["tasks"]
    width = max([len(f"{r['suite']}:{r['task']}") for r in rows] + [4])

    def cells(f: dict) -> str:
        if not f["usable"]:
            return f"{'unusable':>32}"
        return (f"{f['n_pairs']:>6}  {f['loss']:>6.3f}  {f['accuracy']:>4.2f} "
                f"[{f['accuracy_low']:.2f}-{f['accuracy_high']:.2f}]")

    click.echo(f"{'':<{width}}  {'held-out corpus':>32}    {'--mine-from':>32}")
    acc = "acc [95% interval]"
    click.echo(f"{'task':<{width}}  {'pairs':>6}  {'loss':>6}  {acc:>18}    {'pairs':>6}  {'loss':>6}  {acc:>18}")
    for r in rows:
        click.echo(f"{r['suite'] + ':' + r['task']:<{width}}  {cells(r['in_distribution'])}    "
                   f"{cells(r['out_of_distribution'])}")
    for side in ("in_distribution", "out_of_distribution"):
        for r in rows:
            if not r[side]["usable"]:
                click.echo(f"unusable: {r['suite']}:{r['task']} ({side.replace('_', ' ')}): {r[side]['problem']}")
    ind, ood = doc["in_distribution"], doc["out_of_distribution"]
    click.echo(f"held-out corpus: {ind['corpus']} (hash {str(ind['corpus_hash'])[:12]}); --mine-from: "
               f"{ood['folder']} ({ood['n_files']} files, hash {ood['folder_hash'][:12]})")
    click.echo(f"loss: {LOSS_CONVENTION}; test pairs", err=True)


@click.command("tasks")
@click.option("--suite", "spec", default=None, metavar="NAME",
              help="A task suite (python, mined, or a plugin's), or a list like prune's --tasks "
                   "(mined:mined_quote,python:else_elif). [default: all suites]")
@click.option("--model", "model_dir", default=None, metavar="DIR",
              help="A run folder written by 'circuitlab train': evaluate the full model on every task.")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Test pairs per task to evaluate with --model. [default: the whole standard test set, 128]")
@setting(PruneConfig, "mine_from", metavar="DIR",
         help="Cut the mined tasks from every .py file under DIR. With --model: their figures on the held-out "
              "corpus and on DIR, side by side.")
@json_option
def tasks_cmd(spec: str | None, model_dir: str | None, n: int | None, mine_from: str | None, json_: bool) -> None:
    """List the tasks (description and an example pair), or evaluate a model on them.

    \b
    Without --model: every task of the chosen suites, with an example pair and whether its contrast
    strings are single tokens of the default (stdlib) tokenizer.
    With --model: loss and accuracy of the full model on each task's held-out test pairs.
    With --mine-from DIR: the mined tasks only, cut from DIR (with --model: next to the held-out figures).
    The loss is the per-prompt binary CE over the two candidate tokens (the paper's values are 2x).
    """
    from ..tasks import default_task_context, mined_tasks, resolve_tasks, task_context_for_run

    if model_dir is None:
        context = default_task_context(mine_from)
        tasks = resolve_tasks(spec, context)
        rows = list_tasks(tasks if mine_from is None else mined_tasks(tasks, context, splits=("train",)), context)
        source = {"mine_from": context.mine_from.provenance()} if context.mine_from else {}
        if json_:
            emit_json({"tasks": rows, "count": len(rows), **source})
        else:
            _print_listing(rows)
            if source:
                m = source["mine_from"]
                click.echo(f"mined from {m['folder']} ({m['n_files']} files, content hash {m['folder_hash'][:12]})")
        return

    from ..train.runs import load_model, read_run

    info = read_run(model_dir)  # a folder that is not a run fails here, before torch is imported
    if mine_from is not None:
        doc = compare_mined(spec, info, n, mine_from)
        if json_:
            emit_json(doc)
        else:
            _print_comparison(doc)
        return
    context = task_context_for_run(info)
    tasks = resolve_tasks(spec, context)
    model, tokenizer, info = load_model(info.path, need_tokenizer=True)
    rows = _with_verdicts(evaluate_tasks(tasks, model, tokenizer, context, n))
    if json_:
        emit_json({"model": str(info.path), "split": "test", "loss_convention": LOSS_CONVENTION,
                   "tasks": rows, "count": len(rows), "threshold": SOLVED_AT,
                   "solved": [f"{r['suite']}:{r['task']}" for r in rows if r.get("verdict") == "solved"],
                   "borderline": [f"{r['suite']}:{r['task']}" for r in rows if r.get("verdict") == "borderline"]})
    else:
        _print_evaluation(rows)
    sys.stdout.flush()
