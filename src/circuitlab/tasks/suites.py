"""Task suites from the plugin registry, and the context (held-out corpus files, tokenizer) they get."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import attrs

from .. import plugins
from ..errors import CircuitlabError, PluginError, UnknownNameError
from ..log import logger, note_once
from ..plugins import calls
from .types import PromptPair, Task, TaskContext

#: Task names: typed in ``--tasks SUITE:task,task`` and used as file names.
TASK_NAME = re.compile(r"[a-z][a-z0-9_]*")

if TYPE_CHECKING:
    from ..train.runs import RunInfo


def default_task_context() -> TaskContext:
    """Held-out files of the default corpus (the stdlib) and its tokenizer."""
    return _context_for_corpus(None)


@functools.lru_cache(maxsize=4)
def _context_for_corpus(corpus_dir: str | None, tokenizer_path: str | None = None) -> TaskContext:
    from ..data.corpus import load_corpus
    from ..data.tokenizer import load_or_train_tokenizer, load_tokenizer

    corpus = load_corpus(corpus_dir)
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else load_or_train_tokenizer(corpus)
    return TaskContext(heldout_files=tuple((f.relpath, f.text) for f in corpus.split("val")),
                       corpus_hash=corpus.hash, tokenizer=tok)


def task_context_for_run(info: RunInfo) -> TaskContext:
    """The held-out (validation-split) files of the corpus the run was trained on, and its tokenizer.

    When that corpus folder is gone, the context has the tokenizer but no held-out files (templated
    tasks still work; mined tasks have no pairs), and a note goes to stderr.
    """
    from ..data.tokenizer import load_tokenizer
    from ..train.runs import require_tokenizer

    tok_path = require_tokenizer(info)  # never a tokenizer of our own: the model's ids would mean other text
    tokenizer = load_tokenizer(tok_path)  # a broken tokenizer is its own error, before the corpus is read
    try:
        return _context_for_corpus(info.train.corpus, str(tok_path) if tokenizer is not None else None)
    except CircuitlabError as exc:
        note_once(f"circuitlab: no held-out files for tasks mined from the corpus: {exc}")
        return TaskContext(tokenizer=tokenizer)


def suite_names() -> list[str]:
    return plugins.get_registry().names("suite")


def suite_tasks(suite: str, context: TaskContext | None = None) -> list[Task]:
    """All tasks of one registered suite (unknown suite: UnknownNameError with did-you-mean).

    The suite's code is checked as it runs: an exception in its factory, ``tasks()`` or a task's
    generator, or a result that breaks the contract, is a ``PluginError`` naming the plugin."""
    entry = plugins.get("suite", suite)
    built = calls.build(entry, "factory(context)", context if context is not None else default_task_context())
    if not callable(getattr(built, "tasks", None)):
        raise calls.violation(entry, f"factory(context) returned a {type(built).__name__} without tasks(); "
                                     "see protocols.TaskSuite")
    with calls.calling(entry, "tasks()"):
        tasks = list(built.tasks())
    check_suite_tasks(entry, tasks)
    # The registered name is authoritative: a task's qualified name is always "suite:task".
    return [checked_task(entry, t if t.suite == suite else attrs.evolve(t, suite=suite)) for t in tasks]


def check_suite_tasks(entry, tasks: list) -> None:
    """``tasks()`` returned Task records with slug names, unique within the suite, and one-line descriptions."""
    seen: set[str] = set()
    for task in tasks:
        if not isinstance(task, Task):
            raise calls.violation(entry, f"tasks() holds a {type(task).__name__}; it must return "
                                         "circuitlab.tasks.Task records")
        if not isinstance(task.name, str) or not TASK_NAME.fullmatch(task.name):
            raise calls.violation(entry, f"tasks() holds a task named {task.name!r}; task names are lowercase "
                                         "slugs (a letter, then letters, digits or _)")
        if task.name in seen:
            raise calls.violation(entry, f"tasks() holds two tasks named {task.name!r}; names must be unique "
                                         "within a suite")
        seen.add(task.name)
        if not isinstance(task.description, str) or "\n" in task.description:
            raise calls.violation(entry, f"task {task.name!r} has a description that is not one line of text")
        if not callable(task.generate) or not (task.generate_split is None or callable(task.generate_split)):
            raise calls.violation(entry, f"task {task.name!r}: generate (and generate_split) must be callable")


def checked_task(entry, task: Task) -> Task:
    """The task with its generators wrapped: exceptions and malformed pairs name the plugin and the task."""

    def check(pairs, what: str) -> list[PromptPair]:
        pairs = list(pairs) if isinstance(pairs, (list, tuple)) else pairs
        if not isinstance(pairs, list):
            raise calls.violation(entry, f"task {task.name!r}: {what} returned a {type(pairs).__name__}; it must "
                                         "return a list of PromptPair")
        for p in pairs:
            if not isinstance(p, PromptPair) or not all(
                    isinstance(x, str) and x for x in (p.prompt_a, p.prompt_b, p.token_a, p.token_b)):
                raise calls.violation(entry, f"task {task.name!r}: {what} returned {p!r}; every item must be a "
                                             "PromptPair of non-empty strings")
            if p.token_a == p.token_b:
                raise calls.violation(entry, f"task {task.name!r}: {what} returned a pair whose tokens are both "
                                             f"{p.token_a!r}; the two contrast tokens must differ")
        return pairs

    def generate(n: int, seed: int) -> list[PromptPair]:
        what = f"generate({n}, {seed})"
        with calls.calling(entry, f"task {task.name!r}: {what}"):
            pairs = task.generate(n, seed)
        return check(pairs, what)

    def generate_split(n: int, seed: int, split: str) -> list[PromptPair]:
        what = f"generate_split({n}, {seed}, {split!r})"
        with calls.calling(entry, f"task {task.name!r}: {what}"):
            pairs = task.generate_split(n, seed, split)
        return check(pairs, what)

    return attrs.evolve(task, generate=generate, generate_split=generate_split if task.generate_split else None)


def _tasks_or_skip(suite: str, context: TaskContext | None) -> list[Task]:
    """A suite's tasks; a suite whose plugin fails is skipped with one warning line (the others keep working)."""
    try:
        return suite_tasks(suite, context)
    except PluginError as exc:
        logger.warning(f"circuitlab: skipped task suite {suite!r}: {exc}")
        return []


def check_suite(spec: str | None) -> None:
    """Fail early (did-you-mean) on an unknown suite in a ``--tasks`` spec, before any heavy work."""
    if spec and spec.strip() != "all":
        plugins.get("suite", spec.partition(":")[0].strip())


def resolve_tasks(spec: str | None, context: TaskContext | None = None) -> list[Task]:
    """Tasks named by ``spec``: ``None``/``"all"`` (every suite), ``"SUITE"`` or ``"SUITE:task,task"``."""
    spec = (spec or "all").strip()
    if spec == "all":
        return [t for s in suite_names() for t in _tasks_or_skip(s, context)]
    suite, _, names = spec.partition(":")
    tasks = suite_tasks(suite.strip(), context)
    if not names.strip():
        return tasks
    by_name = {t.name: t for t in tasks}
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in by_name:
            raise UnknownNameError("task", name, by_name, f"(the tasks of suite {suite.strip()!r})")
        chosen.append(by_name[name])
    return chosen
