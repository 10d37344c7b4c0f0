"""Task sets pinned by content: a spec names each task with the sha256 of its standard pair-set file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable


def taskset_sha256(qualname: str) -> str | None:
    """sha256 of the standard pair-set file of ``suite:task`` (``circuitlab.tasks.taskset_root``), or None."""
    from ..tasks import taskset_root

    suite, _, task = qualname.partition(":")
    path = taskset_root().joinpath(suite, f"{task}.jsonl")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def cut_from_code(qualname: str) -> bool:
    """Whether the standard set of ``suite:task`` was cut from corpus code (its header names the corpus)."""
    from ..tasks import taskset_root

    suite, _, task = qualname.partition(":")
    try:
        with taskset_root().joinpath(suite, f"{task}.jsonl").open("r", encoding="utf-8") as f:
            return "corpus_hash" in json.loads(f.readline())
    except (OSError, ValueError):
        return False


def check_pins(pins: dict[str, str], error: Callable[[str, str], Exception], mined_hash: str | None = None) -> None:
    """Every pinned task has a standard pair-set file with exactly the pinned sha256. With ``mined_hash``
    (``prune.mine_from``), a task cut from code pins that folder's content hash instead."""
    for qualname, pinned in pins.items():
        key = f'"{qualname}"'
        suite, colon, task = qualname.partition(":")
        if not colon or not suite or not task:
            raise error(key, "must name a task as \"SUITE:task\", e.g. \"python:if_equals\"")
        if mined_hash is not None and cut_from_code(qualname):
            if pinned != mined_hash:
                raise error(key, f"pinned {pinned[:12]}... but prune.mine_from's content hash is {mined_hash}; "
                                 "a task cut from that folder pins its hash: put it in the spec")
            continue
        actual = taskset_sha256(qualname)
        if actual is None:
            raise error(key, f"has no standard pair-set file ({suite}/{task}.jsonl); see 'circuitlab tasks' for "
                             "the task names, or regenerate the sets with 'python -m circuitlab.tasks.generate_sets'")
        if pinned != actual:
            raise error(key, f"pinned sha256 {pinned[:12]}... but the standard set has {actual}; "
                             "put that hash in the spec if the change is intended")
