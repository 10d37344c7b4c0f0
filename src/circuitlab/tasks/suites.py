"""Task suites from the plugin registry, and the context (held-out corpus files, tokenizer) they get."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import attrs

from .. import plugins
from ..errors import CircuitlabError, UnknownNameError
from ..log import note_once
from .types import Task, TaskContext

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
    from ..train.runs import require_tokenizer

    tok_path = require_tokenizer(info)  # never a tokenizer of our own: the model's ids would mean other text
    tokenizer_path = str(tok_path)
    try:
        return _context_for_corpus(info.train.corpus, tokenizer_path)
    except CircuitlabError as exc:
        note_once(f"circuitlab: no held-out files for tasks mined from the corpus: {exc}")
        from ..data.tokenizer import load_tokenizer

        return TaskContext(tokenizer=load_tokenizer(tok_path))


def suite_names() -> list[str]:
    return plugins.get_registry().names("suite")


def suite_tasks(suite: str, context: TaskContext | None = None) -> list[Task]:
    """All tasks of one registered suite (unknown suite: UnknownNameError with did-you-mean)."""
    entry = plugins.get("suite", suite)
    built = entry.factory(context if context is not None else default_task_context())
    tasks = list(built.tasks())
    # The registered name is authoritative: a task's qualified name is always "suite:task".
    return [t if t.suite == suite else attrs.evolve(t, suite=suite) for t in tasks]


def check_suite(spec: str | None) -> None:
    """Fail early (did-you-mean) on an unknown suite in a ``--tasks`` spec, before any heavy work."""
    if spec and spec.strip() != "all":
        plugins.get("suite", spec.partition(":")[0].strip())


def resolve_tasks(spec: str | None, context: TaskContext | None = None) -> list[Task]:
    """Tasks named by ``spec``: ``None``/``"all"`` (every suite), ``"SUITE"`` or ``"SUITE:task,task"``."""
    spec = (spec or "all").strip()
    if spec == "all":
        return [t for s in suite_names() for t in suite_tasks(s, context)]
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
