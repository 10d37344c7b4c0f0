"""Task sets pinned by content: a spec names each task with the sha256 of its standard pair-set file."""

from __future__ import annotations

import hashlib
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


def check_pins(pins: dict[str, str], error: Callable[[str, str], Exception]) -> None:
    """Every pinned task has a standard pair-set file with exactly the pinned sha256."""
    for qualname, pinned in pins.items():
        key = f'"{qualname}"'
        suite, colon, task = qualname.partition(":")
        if not colon or not suite or not task:
            raise error(key, "must name a task as \"SUITE:task\", e.g. \"python:if_equals\"")
        actual = taskset_sha256(qualname)
        if actual is None:
            raise error(key, f"has no standard pair-set file ({suite}/{task}.jsonl); see 'circuitlab tasks' for "
                             "the task names, or regenerate the sets with 'python -m circuitlab.tasks.generate_sets'")
        if pinned != actual:
            raise error(key, f"pinned sha256 {pinned[:12]}... but the standard set has {actual}; "
                             "put that hash in the spec if the change is intended")
