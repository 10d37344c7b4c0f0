"""A third-party plugin written from docs/plugins.md, with names other packages also use.

- ``margin`` (pruning objective): circuitlab-example registers a ``margin`` too, so the short name is
  refused and each is written qualified: ``circuitlab-outsider:margin``, ``circuitlab-example:margin``.
- ``strings`` (task suite): circuitlab-neighbour registers a ``strings`` suite too, so its tasks are
  keyed ``circuitlab-outsider:strings:TASK``; its task ``single_double_quote`` shares its name with the
  built-in ``python:single_double_quote``.
"""

from __future__ import annotations

import random
from typing import Any

from circuitlab import hookimpl
from circuitlab.tasks import PromptPair, Task

CIRCUITLAB_PLUGIN_API = 3

WORDS = ("hello", "name", "value", "path", "data", "error", "key", "text", "line", "item")
OPENERS = ("print(", "x = str(", "log.info(", "raise ValueError(", "d.get(", "s.append(")


def margin():
    """Hinge on the right-minus-wrong logit difference: wants a margin of 1."""
    from circuitlab.tasks import logit_diff

    def objective(logits, target, contrast, reference_logits):
        return (1.0 - logit_diff(logits, target, contrast)).clamp(min=0).mean()

    return objective


def quote_pairs(n: int, seed: int) -> list[PromptPair]:
    """A one-line string argument closed with the quote it opened with: '")' vs "')"."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        head = rng.choice(OPENERS)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        pairs.append(PromptPair(prompt_a=f'{head}"{words}', prompt_b=f"{head}'{words}", token_a='")',
                                token_b="')"))
    return pairs


class StringSuite:
    """One task about string quotes."""

    def __init__(self, context: Any):
        self.context = context

    def tasks(self) -> list[Task]:
        return [Task(name="single_double_quote", description="close a print( string with the quote it opened with",
                     generate=quote_pairs)]


@hookimpl
def register_pruning_objectives(register):
    register("margin", margin)


@hookimpl
def register_task_suites(register):
    register("strings", StringSuite)
