"""``check_suite``: a task suite against ``protocols.TaskSuite`` and the rules for tasks and pairs.

The suite is built from a ``TaskContext`` (default: the one ``circuitlab tasks`` uses, the stdlib's
held-out files and the project tokenizer) through the same checks circuitlab applies when it lists
or prunes tasks. Then, per task: ``generate`` returns the same pairs for the same seed and a larger
``n`` extends the list; the standard sets hold ``n_train`` train and ``n_test`` test pairs (a suite
must produce enough distinct pairs: test pairs sharing a prompt with a train pair are dropped) with
no prompt in both; and the contrast strings are single tokens of the tokenizer, the token it really
produces after each prompt.
"""

from __future__ import annotations

from typing import Any

from ..plugins import Entry, calls
from ..tasks.types import N_TEST, N_TRAIN, SEED_TRAIN, Task, TaskContext
from .report import CheckFailed, CheckReport, Checks, entry_for


def build_suite(entry: Entry, context: TaskContext) -> list[Task]:
    """The suite's tasks, checked exactly as ``circuitlab.tasks.suite_tasks`` checks a registered suite."""
    from ..tasks.suites import check_suite_tasks, checked_task

    built = calls.build(entry, "factory(context)", context)
    if not callable(getattr(built, "tasks", None)):
        raise calls.violation(entry, f"factory(context) returned a {type(built).__name__} without tasks(); "
                                     "see protocols.TaskSuite")
    with calls.calling(entry, "tasks()"):
        tasks = list(built.tasks())
    if not tasks:
        raise CheckFailed("tasks() returned no tasks")
    check_suite_tasks(entry, tasks)
    return [checked_task(entry, t) for t in tasks]


def _check_generate(task: Task) -> str:
    small = task.make_pairs(8, SEED_TRAIN, "train")
    again = task.make_pairs(8, SEED_TRAIN, "train")
    if small != again:
        raise CheckFailed(f"generate(8, {SEED_TRAIN}) gave different pairs on a second call; seed every random draw")
    if len(small) > 8:
        raise CheckFailed(f"generate(8, ...) returned {len(small)} pairs; at most n")
    larger = task.make_pairs(16, SEED_TRAIN, "train")
    if larger[: len(small)] != small:
        raise CheckFailed("generate(16, seed) does not start with the pairs of generate(8, seed); a larger n should "
                          "extend the list, so that smaller sets are prefixes of larger ones")
    return ""


def _check_sets(task: Task, n_train: int, n_test: int) -> str:
    from ..tasks.tasksets import standard_pairs

    train, test = standard_pairs(task, n_train, n_test)
    if len(train) < n_train or len(test) < n_test:
        raise CheckFailed(f"the standard sets hold {len(train)} train and {len(test)} test pairs, not {n_train} and "
                          f"{n_test}; generate must give at least {n_train + n_test} distinct pairs (test pairs that "
                          "share a prompt with a train pair are dropped)")
    shared = {q for p in train for q in (p.prompt_a, p.prompt_b)} & {q for p in test for q in (p.prompt_a, p.prompt_b)}
    if shared:
        raise CheckFailed(f"{len(shared)} prompts are in both the train and the test set")
    return f"{len(train)} train / {len(test)} test pairs"


def _check_tokens(task: Task, tokenizer: Any) -> str:
    from ..tasks.tokens import check_tokens

    check = check_tokens(task, tokenizer)
    if not check.usable:
        raise CheckFailed(f"unusable with the tokenizer: {check.problem}")
    n = len(check.pairs) + check.n_dropped
    return f"{check.n_dropped} of {n} pairs dropped by the boundary check" if check.n_dropped else ""


def check_suite(factory: Any, *, context: TaskContext | None = None, n_train: int = N_TRAIN, n_test: int = N_TEST,
                name: str | None = None, entry: Entry | None = None, raise_on_failure: bool = True) -> CheckReport:
    """Check a task-suite factory (what the plugin registers) and every task it lists.

    ``context`` defaults to ``circuitlab.tasks.default_task_context()`` (stdlib held-out files and the
    project tokenizer; pass your model's context to check against its tokenizer). ``n_train`` and
    ``n_test`` are the standard set sizes a task must fill. Returns the report; raises
    ``PluginCheckError`` listing the failures unless ``raise_on_failure=False``.
    """
    from ..tasks.suites import default_task_context

    entry = entry_for("suite", factory, name, entry)
    context = context if context is not None else default_task_context()
    checks = Checks(entry)
    tasks = checks.run("builds; tasks() lists Task records with unique slug names",
                       lambda: build_suite(entry, context))
    for task in tasks or []:
        checks.run(f"{task.name}: generate is seeded and extends with n", lambda t=task: _check_generate(t))
        checks.run(f"{task.name}: standard sets are full and disjoint", lambda t=task: _check_sets(t, n_train, n_test),
                   needs=(f"{task.name}: generate is seeded and extends with n",))
        if context.tokenizer is not None:
            checks.run(f"{task.name}: contrast strings are single tokens", lambda t=task: _check_tokens(t, context.tokenizer),
                       needs=(f"{task.name}: generate is seeded and extends with n",))
    return checks.finish(raise_on_failure)
