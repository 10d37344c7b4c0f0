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
from .types import MineSource, PromptPair, Task, TaskContext

#: Task names: typed in ``--tasks SUITE:task,task`` and used as file names.
TASK_NAME = re.compile(r"[a-z][a-z0-9_]*")

if TYPE_CHECKING:
    from ..train.runs import RunInfo


def default_task_context(mine_from: str | None = None) -> TaskContext:
    """Held-out files of the default corpus (the stdlib) and its tokenizer; with ``mine_from``, every
    file of that folder instead of the held-out files (``mined_context``)."""
    context = _context_for_corpus(None)
    return context if mine_from is None else mined_context(TaskContext(tokenizer=context.tokenizer), mine_from)


@functools.lru_cache(maxsize=4)
def _context_for_corpus(corpus_dir: str | None, tokenizer_path: str | None = None) -> TaskContext:
    from ..data.corpus import load_corpus
    from ..data.tokenizer import load_or_train_tokenizer, load_tokenizer

    corpus = load_corpus(corpus_dir)
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else load_or_train_tokenizer(corpus)
    return TaskContext(heldout_files=tuple((f.relpath, f.text) for f in corpus.split("val")),
                       corpus_hash=corpus.hash, tokenizer=tok)


def task_context_for_run(info: RunInfo, mine_from: str | None = None, flag: str = "--mine-from") -> TaskContext:
    """The held-out (validation-split) files of the corpus the run was trained on, and its tokenizer.

    When that corpus folder is gone, the context has the tokenizer but no held-out files (templated
    tasks still work; mined tasks have no pairs), and a note goes to stderr. With ``mine_from`` (a
    folder, named on the command line by ``flag``) the mined tasks are cut from every file of that
    folder instead, and the training corpus is not read (``mined_context``).
    """
    from ..data.tokenizer import load_tokenizer
    from ..train.runs import require_tokenizer

    tok_path = require_tokenizer(info)  # never a tokenizer of our own: the model's ids would mean other text
    tokenizer = load_tokenizer(tok_path)  # a broken tokenizer is its own error, before the corpus is read
    if mine_from is not None:
        return mined_context(TaskContext(tokenizer=tokenizer), mine_from, flag, trained=_trained_files(info),
                             max_file_bytes=info.train.max_file_bytes)
    try:
        return _context_for_corpus(info.train.corpus, str(tok_path) if tokenizer is not None else None)
    except CircuitlabError as exc:
        note_once(f"circuitlab: no held-out files for tasks mined from the corpus: {exc}")
        return TaskContext(tokenizer=tokenizer)


def mined_context(context: TaskContext, folder: str, flag: str = "--mine-from", *,
                  trained: frozenset[str] | None = None, max_file_bytes: int | None = None) -> TaskContext:
    """``context`` with every file of ``folder`` in place of the held-out corpus files.

    The folder is read with the corpus' rules and hashed as the corpus is. ``trained`` (the sha256 of
    every file the model trained on) counts the folder's files the model has seen; a note says so,
    since tasks cut from them are not out of distribution. A bad folder is one line naming ``flag``.
    """
    from ..data.corpus import MAX_FILE_BYTES, load_code_folder

    code = load_code_folder(folder, flag, max_file_bytes or MAX_FILE_BYTES)
    seen = None if trained is None else sum(f.sha256 in trained for f in code.files)
    if seen:
        note_once(f"circuitlab: {seen} of the {len(code.files)} files in {flag} {code.root!r} are files the model "
                  "trained on; tasks cut from them are not out of distribution")
    source = MineSource(folder=code.root, hash=code.hash, n_files=len(code.files), n_trained_on=seen)
    return attrs.evolve(context, heldout_files=tuple((f.relpath, f.text) for f in code.files),
                        corpus_hash=code.hash, mine_from=source)


def _trained_files(info: RunInfo) -> frozenset[str] | None:
    """sha256 of the run's training-split files, from its corpus manifest (None when it has none)."""
    import json

    try:
        manifest = json.loads((info.path / "corpus_manifest.json").read_text(encoding="utf-8"))
        return frozenset(f["sha256"] for f in manifest["files"] if f.get("split") == "train")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mined_tasks(tasks: list[Task], context: TaskContext, flag: str = "--mine-from",
                splits: tuple[str, ...] = ("train", "test")) -> list[Task]:
    """The tasks cut from ``context.mine_from``; one line (exit 2) when there are none, or when none of
    them gets a pair in every one of ``splits`` from that folder (too few code positions)."""
    folder = context.mine_from.folder if context.mine_from else "?"
    mined = [t for t in tasks if t.depends_on_corpus]
    if not mined:
        raise CircuitlabError(f"{flag} changes only the tasks mined from code, and none is selected; select "
                              "the mined suite (e.g. mined or mined:mined_quote)")
    # One pair per split says whether a task can be cut at all (make_pairs: no note for a short set).
    missing = {t.name: [s for s in splits if not t.make_pairs(1, 0, s)] for t in mined}
    if all(missing.values()):
        found = "; ".join(f"{name}: no {' or '.join(m)} pairs" for name, m in missing.items())
        raise CircuitlabError(f"{flag} {folder!r}: too few code positions to cut task pairs from ({found}); "
                              "pass a folder with more Python code")
    return mined


def suite_names() -> list[str]:
    """Every usable suite, by the name its tasks are keyed with (``DIST:SUITE`` where two distributions
    register one suite name)."""
    return plugins.get_registry().names("suite")


def suite_tasks(suite: str, context: TaskContext | None = None) -> list[Task]:
    """All tasks of one registered suite, ``SUITE`` or ``DIST:SUITE`` (unknown suite: UnknownNameError
    with did-you-mean). Each task's ``suite`` is the suite's name in the registry (``SUITE``, or
    ``DIST:SUITE`` where two distributions register it), so ``Task.qualname`` is its key.

    The suite's code is checked as it runs: an exception in its factory, ``tasks()`` or a task's
    generator, or a result that breaks the contract, is a ``PluginError`` naming the plugin."""
    registry = plugins.get_registry()
    entry = registry.get("suite", suite)
    suite = registry.address(entry)
    built = calls.build(entry, "factory(context)", context if context is not None else default_task_context())
    if not callable(getattr(built, "tasks", None)):
        raise calls.violation(entry, f"factory(context) returned a {type(built).__name__} without tasks(); "
                                     "see protocols.TaskSuite")
    with calls.calling(entry, "tasks()"):
        tasks = list(built.tasks())
    check_suite_tasks(entry, tasks)
    # The registry's name is authoritative: a task's key is always "suite:task".
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


def _spec_items(spec: str) -> list[tuple[str, str | None]]:
    """(suite, task or None) per item of a ``--tasks`` list, without building any suite.

    Items are ``SUITE``, ``SUITE:TASK``, ``DIST:SUITE``, ``DIST:SUITE:TASK``, or a bare ``TASK`` after
    an item naming a task (``python:else_elif,if_equals``: both of suite python) when that suite has
    it. A two-part item is ``SUITE:TASK`` when its head is a suite name, else ``DIST:SUITE``."""
    registry = plugins.get_registry()
    items: list[tuple[str, str | None]] = []
    last_suite: str | None = None  # the suite of the last SUITE:TASK item, for bare task names after it
    for raw in (part.strip() for part in spec.split(",")):
        if not raw:
            continue
        parts = [p.strip() for p in raw.split(":")]
        if len(parts) == 1:
            if last_suite is not None and not _is_suite(registry, raw):
                items.append((last_suite, raw))
                continue
            items.append((raw, None))
            last_suite = None
        elif len(parts) == 2 and not _is_suite(registry, parts[0]) and _is_suite(registry, raw):
            items.append((raw, None))
            last_suite = None
        elif len(parts) in (2, 3):
            suite = ":".join(parts[:-1])
            items.append((suite, parts[-1]))
            last_suite = suite
        else:
            raise CircuitlabError(f"--tasks item {raw!r} has too many ':'; write SUITE, SUITE:TASK, DIST:SUITE or "
                                  "DIST:SUITE:TASK")
    return items


def _is_suite(registry, name: str) -> bool:
    """Whether ``name`` (``SUITE`` or ``DIST:SUITE``) names a registered suite, usable or refused."""
    qualifier, short = plugins.split_qualified(name)
    if qualifier is None:
        return short in registry.entries["suite"] or ("suite", short) in registry.conflicts
    return f"{qualifier}:{short}" in registry.qualified["suite"]


def check_suite(spec: str | None) -> None:
    """Fail early (did-you-mean) on an unknown suite in a ``--tasks`` spec, before any heavy work."""
    if spec and spec.strip() != "all":
        for suite in dict.fromkeys(suite for suite, _ in _spec_items(spec)):
            if suite != "all":
                plugins.get("suite", suite)


def resolve_tasks(spec: str | None, context: TaskContext | None = None) -> list[Task]:
    """Tasks named by ``spec``: ``None``/``"all"`` (every suite), or a comma-separated list of
    ``SUITE``, ``SUITE:TASK`` and ``DIST:SUITE[:TASK]`` items, which may mix suites
    (``mined:mined_quote,python:else_elif``); a bare ``TASK`` after ``SUITE:TASK`` is of that suite.
    Each task comes once, in the order named."""
    spec = (spec or "all").strip()
    if spec == "all":
        return [t for s in suite_names() for t in _tasks_or_skip(s, context)]
    built: dict[str, list[Task]] = {}
    chosen: dict[str, Task] = {}
    for suite, name in _spec_items(spec):
        if suite == "all" and name is None:
            tasks = [t for s in suite_names() for t in _tasks_or_skip(s, context)]
        else:
            if suite not in built:
                built[suite] = suite_tasks(suite, context)
            tasks = built[suite]
            if name is not None:
                by_name = {t.name: t for t in tasks}
                if name not in by_name:
                    raise UnknownNameError("task", name, by_name, f"(the tasks of suite {suite!r})")
                tasks = [by_name[name]]
        for task in tasks:
            chosen.setdefault(task.qualname, task)
    return list(chosen.values())
