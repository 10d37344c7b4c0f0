"""The standard pair sets: fixed-seed train and test pairs per task, shipped with the package as JSONL.

``load_pairs(task, "train"|"test")`` reads ``circuitlab/tasks/sets/<suite>/<task>.jsonl`` (package
data, read through ``importlib.resources``, so an installed wheel uses the same pairs as a checkout;
``$CIRCUITLAB_TASKSETS`` points elsewhere) when there is one: train pairs are for pruning, test
pairs for reporting, and no prompt is shared between them. Otherwise it generates the same sets in
memory with the same seeds (``SEED_TRAIN``, ``SEED_TEST``). Regenerate the files with
``python -m circuitlab.tasks.generate_sets``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from ..config import SPLITS
from ..errors import CircuitlabError
from ..log import logger, note_once
from .types import N_TEST, N_TRAIN, SEED_TEST, SEED_TRAIN, PromptPair, Task, TaskContext

#: First-line ``kind`` of a task-set file.
TASKSET_KIND = "circuitlab-taskset"
TASKSET_VERSION = 1
_REGENERATE = "regenerate it with 'python -m circuitlab.tasks.generate_sets'"


def taskset_root() -> Any:
    """``$CIRCUITLAB_TASKSETS``, else the sets shipped inside the package (a path-like Traversable)."""
    env = os.environ.get("CIRCUITLAB_TASKSETS")
    if env:
        return Path(env)
    return resources.files(__package__).joinpath("sets")


def taskset_path(task: Task, root: Any = None) -> Any:
    return (root if root is not None else taskset_root()).joinpath(task.suite, f"{task.name}.jsonl")


@attrs.frozen(kw_only=True)
class TaskSet:
    """A task-set file: its header, the pairs of each split, and the sha256 of its bytes."""

    header: dict = attrs.field(eq=False)
    train: tuple[PromptPair, ...]
    test: tuple[PromptPair, ...]
    sha256: str = ""

    def split(self, name: str) -> tuple[PromptPair, ...]:
        return self.train if name == "train" else self.test


_PAIR_FIELDS = ("prompt_a", "prompt_b", "token_a", "token_b")
_SOURCE_FIELDS = ("source_a", "source_b")


def pair_to_record(pair: PromptPair, split: str) -> dict:
    rec = {"split": split, **{f: getattr(pair, f) for f in _PAIR_FIELDS}}
    rec.update({f: getattr(pair, f) for f in _SOURCE_FIELDS if getattr(pair, f) is not None})
    return rec


def _bad_line(path: Any, lineno: int, problem: str) -> CircuitlabError:
    return CircuitlabError(f"{path}:{lineno}: {problem}; {_REGENERATE} or delete the file")


def _check_header(path: Any, lineno: int, rec: dict) -> dict:
    if rec.get("kind") != TASKSET_KIND:
        raise _bad_line(path, lineno, f"the first line must be a header with kind={TASKSET_KIND!r}")
    for key in ("suite", "task"):
        if not isinstance(rec.get(key), str):
            raise _bad_line(path, lineno, f"header field {key!r} must be a string")
    for key in ("seed_train", "seed_test"):
        if not isinstance(rec.get(key), int):
            raise _bad_line(path, lineno, f"header field {key!r} must be an integer")
    return rec


def _pair_of(path: Any, lineno: int, rec: dict) -> tuple[str, PromptPair]:
    split = rec.get("split")
    if split not in SPLITS:
        raise _bad_line(path, lineno, f"'split' must be 'train' or 'test', got {split!r}")
    missing = [f for f in _PAIR_FIELDS if not isinstance(rec.get(f), str) or not rec.get(f)]
    if missing:
        raise _bad_line(path, lineno, f"missing or empty string field(s) {', '.join(missing)}")
    if rec["token_a"] == rec["token_b"]:
        raise _bad_line(path, lineno, f"token_a and token_b are both {rec['token_a']!r}")
    return split, PromptPair(**{f: rec[f] for f in _PAIR_FIELDS}, **{f: rec.get(f) for f in _SOURCE_FIELDS})


def read_taskset(path: Any) -> TaskSet:
    """Parse and check a task-set file (malformed: CircuitlabError naming the file and line)."""
    path = Path(path) if isinstance(path, (str, os.PathLike)) else path
    try:
        data = path.read_bytes()
        lines = data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CircuitlabError(f"cannot read task file {str(path)!r} ({exc}); {_REGENERATE}") from None
    header: dict | None = None
    splits: dict[str, list[PromptPair]] = {s: [] for s in SPLITS}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad_line(path, lineno, f"not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise _bad_line(path, lineno, "expected a JSON object")
        if header is None:
            header = _check_header(path, lineno, rec)
            continue
        split, pair = _pair_of(path, lineno, rec)
        splits[split].append(pair)
    if header is None:
        raise _bad_line(path, 1, "the file is empty (expected a header line)")
    train_prompts = {q for p in splits["train"] for q in (p.prompt_a, p.prompt_b)}
    if any(q in train_prompts for p in splits["test"] for q in (p.prompt_a, p.prompt_b)):
        raise CircuitlabError(f"{path}: a test prompt also appears among the train prompts; {_REGENERATE}")
    return TaskSet(header=header, train=tuple(splits["train"]), test=tuple(splits["test"]),
                   sha256=hashlib.sha256(data).hexdigest())


@functools.lru_cache(maxsize=256)
def _read_taskset_cached(path: str, mtime_ns: int, root: Any) -> TaskSet:
    return read_taskset(root if root is not None else Path(path))


def _open_taskset(task: Task) -> TaskSet | None:
    """The task's set file, parsed (cached per file version), or None when there is none."""
    path = taskset_path(task)
    if not path.is_file():
        return None
    mtime = os.stat(str(path)).st_mtime_ns if isinstance(path, Path) or os.path.exists(str(path)) else 0
    return _read_taskset_cached(str(path), mtime, None if os.path.exists(str(path)) else path)


def make_taskset_header(task: Task, context: TaskContext | None, n_train: int, n_test: int) -> dict:
    from .. import __version__

    header = {"kind": TASKSET_KIND, "version": TASKSET_VERSION, "suite": task.suite, "task": task.name,
              "description": task.description, "seed_train": SEED_TRAIN, "seed_test": SEED_TEST,
              "n_train": n_train, "n_test": n_test, "circuitlab_version": __version__}
    if task.depends_on_corpus:
        header["corpus_hash"] = task.corpus_hash or (context.corpus_hash if context else None)
        header["tokenizer_hash"] = task.tokenizer_hash or (context.tokenizer_hash if context else None)
    return header


def standard_pairs(task: Task, n_train: int = N_TRAIN, n_test: int = N_TEST
                   ) -> tuple[list[PromptPair], list[PromptPair]]:
    """The standard (train, test) sets, generated with the fixed seeds; no prompt is in both."""
    train = task.make_pairs(max(n_train, N_TRAIN), SEED_TRAIN, "train")
    seen = {q for p in train[:N_TRAIN] for q in (p.prompt_a, p.prompt_b)}
    # Over-generate test pairs so that dropping the ones that collide with train still leaves n_test.
    test = [p for p in task.make_pairs(2 * n_test + 16, SEED_TEST, "test")
            if p.prompt_a not in seen and p.prompt_b not in seen][:n_test]
    test_prompts = {q for p in test for q in (p.prompt_a, p.prompt_b)}
    train = [p for p in train if p.prompt_a not in test_prompts and p.prompt_b not in test_prompts]
    return train[:n_train], test


def write_taskset(path: str | os.PathLike, task: Task, context: TaskContext | None = None,
                  n_train: int = N_TRAIN, n_test: int = N_TEST) -> TaskSet:
    """Generate the standard sets of ``task`` and write them as a task-set file (JSONL)."""
    from ..files import write_bytes

    train, test = standard_pairs(task, n_train, n_test)
    header = make_taskset_header(task, context, len(train), len(test))
    lines = [json.dumps(header)]
    lines += [json.dumps(pair_to_record(p, "train")) for p in train]
    lines += [json.dumps(pair_to_record(p, "test")) for p in test]
    data = ("\n".join(lines) + "\n").encode()
    write_bytes(path, data)
    return TaskSet(header=header, train=tuple(train), test=tuple(test), sha256=hashlib.sha256(data).hexdigest())


def _stale_reason(task: Task, header: dict, context: TaskContext | None) -> str | None:
    """Why a corpus-mined task's file does not fit the task (another corpus or tokenizer), or None."""
    if not task.depends_on_corpus:
        return None
    for key in ("corpus_hash", "tokenizer_hash"):
        current = getattr(task, key) or (getattr(context, key) if context is not None else None)
        if current is None:
            return f"the task does not say which {key.split('_')[0]} it was cut from"
        if header.get(key) != current:
            return f"its {key.replace('_', ' ')} differs from this model's"
    return None


def usable_taskset(task: Task, context: TaskContext | None = None) -> TaskSet | None:
    """The task's shipped set when it exists and fits (a mined task's file must match the corpus and
    tokenizer the task was built with, else those of ``context``), else None (with a note when stale)."""
    if task.depends_on_corpus and context is not None and context.mine_from is not None:
        return None  # cut from another folder (--mine-from): the shipped set holds other code
    taskset = _open_taskset(task)
    if taskset is None:
        logger.debug("no standard set for %s: its pairs are generated in memory", task.qualname)
        return None
    stale = _stale_reason(task, taskset.header, context)
    if stale:
        note_once(f"circuitlab: {task.name}.jsonl: {stale}; generating {task.qualname} pairs in memory instead")
        return None
    return taskset


def pairs_source(task: Task, context: TaskContext | None = None) -> dict[str, Any]:
    """Where ``load_pairs`` takes this task's pairs from, for provenance (for a task cut from a
    ``--mine-from`` folder: the folder and its content hash)."""
    taskset = usable_taskset(task, context)
    if taskset is None and task.depends_on_corpus and context is not None and context.mine_from is not None:
        return {"source": "mined", **context.mine_from.provenance(), "seed_train": SEED_TRAIN, "seed_test": SEED_TEST}
    if taskset is None:
        return {"source": "generated", "seed_train": SEED_TRAIN, "seed_test": SEED_TEST}
    return {"source": "shipped", "file": f"{task.suite}/{task.name}.jsonl", "sha256": taskset.sha256}


def load_pairs(task: Task, split: str, n: int | None = None, context: TaskContext | None = None
               ) -> list[PromptPair]:
    """The standard ``split`` ("train" or "test") pairs of ``task``: at most ``n`` (default: all).

    Read from the task's set file when it exists and fits (``usable_taskset``); otherwise generated in
    memory with the same fixed seeds, which gives the pairs the file would hold.
    """
    if split not in SPLITS:
        raise CircuitlabError(f"unknown split {split!r}; use 'train' or 'test'")
    taskset = usable_taskset(task, context)
    if taskset is not None and (n is None or n <= len(taskset.split(split))):
        return list(taskset.split(split)[:n])
    want = n if n is not None else (N_TRAIN if split == "train" else N_TEST)
    train, test = standard_pairs(task, n_train=want if split == "train" else N_TRAIN,
                                 n_test=want if split == "test" else N_TEST)
    pairs = train if split == "train" else test
    if len(pairs) < want:
        note_once(f"circuitlab: {task.qualname} has only {len(pairs)} {split} pairs (asked for {want}); "
                  "its source has no more candidates")
    return pairs[:want]
