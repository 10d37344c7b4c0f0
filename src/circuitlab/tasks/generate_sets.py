"""Regenerate the standard task sets shipped in circuitlab/tasks/sets/ (fixed seeds; plain JSONL).

    python -m circuitlab.tasks.generate_sets                 # every built-in suite
    python -m circuitlab.tasks.generate_sets --suite python  # one suite (or SUITE:task,task)

Each file ``<suite>/<task>.jsonl`` starts with a header line ({"kind": "circuitlab-taskset", suite,
task, seed_train, seed_test, n_train, n_test, ...}) followed by one pair per line with a ``split``
field: "train" pairs are for pruning, "test" pairs for reporting, and no prompt is in both. Mined
tasks are cut from the held-out files of the default corpus (this interpreter's stdlib); their
header records the corpus and tokenizer hashes, and circuitlab regenerates them in memory when a
model's corpus or tokenizer differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .suites import default_task_context, resolve_tasks
from .tasksets import taskset_path, write_taskset
from .types import N_TEST, N_TRAIN

BUILTIN_SUITES = ("python", "mined")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", help="suite or SUITE:task,task (repeatable) "
                        f"[default: {', '.join(BUILTIN_SUITES)}]")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sets",
                        help="output folder [default: the package's sets/ folder]")
    parser.add_argument("--n-train", type=int, default=N_TRAIN)
    parser.add_argument("--n-test", type=int, default=N_TEST)
    args = parser.parse_args(argv)
    context = default_task_context()
    for spec in args.suite or BUILTIN_SUITES:
        for task in resolve_tasks(spec, context):
            path = taskset_path(task, args.out)
            taskset = write_taskset(path, task, context, args.n_train, args.n_test)
            short = " (fewer than asked: the source has no more candidates)" if (
                len(taskset.train) < args.n_train or len(taskset.test) < args.n_test) else ""
            print(f"{path}: {len(taskset.train)} train, {len(taskset.test)} test pairs{short}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
