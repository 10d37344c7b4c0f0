"""``circuitlab tasks``: list the task suites' tasks, or evaluate a trained model on every task."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import click

from .options import emit_json, json_option

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


def evaluate_tasks(tasks: list, model: Any, tokenizer: Any, context: Any, n: int | None) -> list[dict]:
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
            check = attrs.evolve(check, problem="no test pairs: its source (the corpus' held-out files) has "
                                                "no candidates")
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
    click.echo(f"{'task':<{width}}  {'pairs':>5}  {'loss':>6}  {'acc':>5}  {'acc A/B':>9}")
    for r in rows:
        name = f"{r['suite']}:{r['task']}"
        if not r["usable"]:
            click.echo(f"{name:<{width}}  unusable: {r['problem']}")
            continue
        click.echo(f"{name:<{width}}  {r['n_pairs']:>5}  {r['loss']:>6.3f}  {r['accuracy']:>5.2f}  "
                   f"{r['accuracy_a']:>4.2f}/{r['accuracy_b']:<4.2f}")
    click.echo(f"loss: {LOSS_CONVENTION}; test pairs", err=True)


@click.command("tasks")
@click.option("--suite", "spec", default=None, metavar="NAME",
              help="A task suite (python, mined, or a plugin's), or SUITE:task,task. [default: all suites]")
@click.option("--model", "model_dir", default=None, metavar="DIR",
              help="A run folder written by 'circuitlab train': evaluate the full model on every task.")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Test pairs per task to evaluate with --model. [default: the whole standard test set, 128]")
@json_option
def tasks_cmd(spec: str | None, model_dir: str | None, n: int | None, json_: bool) -> None:
    """List the tasks (description and an example pair), or evaluate a model on them.

    \b
    Without --model: every task of the chosen suites, with an example pair and whether its contrast
    strings are single tokens of the default (stdlib) tokenizer.
    With --model: loss and accuracy of the full model on each task's held-out test pairs.
    The loss is the per-prompt binary CE over the two candidate tokens (the paper's values are 2x).
    """
    from ..tasks import default_task_context, resolve_tasks, task_context_for_run

    if model_dir is None:
        context = default_task_context()
        rows = list_tasks(resolve_tasks(spec, context), context)
        if json_:
            emit_json({"tasks": rows, "count": len(rows)})
        else:
            _print_listing(rows)
        return

    from ..train.runs import load_model, read_run

    info = read_run(model_dir)  # a folder that is not a run fails here, before torch is imported
    context = task_context_for_run(info)
    tasks = resolve_tasks(spec, context)
    model, tokenizer, info = load_model(info.path)
    rows = evaluate_tasks(tasks, model, tokenizer, context, n)
    if json_:
        emit_json({"model": str(info.path), "split": "test", "loss_convention": LOSS_CONVENTION,
                   "tasks": rows, "count": len(rows),
                   "solved": [f"{r['suite']}:{r['task']}" for r in rows if r["usable"] and r["accuracy"] >= 0.9]})
    else:
        _print_evaluation(rows)
    sys.stdout.flush()
