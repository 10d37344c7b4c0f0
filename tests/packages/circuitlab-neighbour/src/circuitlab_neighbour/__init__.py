"""A third-party plugin whose suite name, ``strings``, circuitlab-outsider also registers: the short
suite name is refused, and each suite's tasks are named ``DIST:strings:TASK``
(``circuitlab-neighbour:strings:single_double_quote``)."""

from __future__ import annotations

import random
from typing import Any

from circuitlab import hookimpl
from circuitlab.tasks import PromptPair, Task

CIRCUITLAB_PLUGIN_API = 3

NAMES = ("x", "y", "value", "item", "count", "total", "size")


def copy_digit_pairs(n: int, seed: int) -> list[PromptPair]:
    """``print(`` after ``NAME = D`` continues with the digit D (after a line that varies the prompts)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        name = rng.choice(NAMES)
        a, b = rng.sample("123456789", 2)
        pre = f"{rng.choice(['total', 'size', 'n', 'k'])} = {rng.randint(10, 999)}\n"
        pairs.append(PromptPair(prompt_a=f"{pre}{name} = {a}\nprint(", prompt_b=f"{pre}{name} = {b}\nprint(",
                                token_a=a, token_b=b))
    return pairs


class StringSuite:
    """One task: the digit assigned above, printed."""

    def __init__(self, context: Any):
        self.context = context

    def tasks(self) -> list[Task]:
        return [Task(name="copy_digit", description="print( the digit assigned on the line above",
                     generate=copy_digit_pairs)]


@hookimpl
def register_task_suites(register):
    register("strings", StringSuite)
