"""Control tasks: the same prompts with answers that no mechanism can predict.

``nonsense_pairs`` keeps every prompt and both candidate tokens of a pair, but decides by a seeded coin
flip per pair which prompt expects which token. A model has no real mechanism for such a task (the
answer carries no relation to the prompt beyond chance), so a pruned "circuit" that still reaches a low
loss on it shows how much the pruning can fit by itself (the finding of the open replication,
jacobcd52/sparse_pretrain_public). The flips depend on the seed and the split only, so the same pairs
always get the same nonsense answers.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import attrs

from .types import PromptPair

#: Mixed into the seed so the nonsense flips never coincide with a pair generator's own stream.
NONSENSE_SALT = "circuitlab-nonsense"


def nonsense_seed(task: str, split: str, seed: int = 0) -> int:
    """A stable 63-bit seed per (task, split, seed), independent of Python's hash randomisation."""
    digest = hashlib.sha256(f"{NONSENSE_SALT}:{task}:{split}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def nonsense_pairs(pairs: Sequence[PromptPair], seed: int) -> list[PromptPair]:
    """The pairs with their two answers swapped on a seeded coin flip per pair (about half of them)."""
    rng = random.Random(seed)
    out = []
    for pair in pairs:
        if rng.random() < 0.5:
            pair = attrs.evolve(pair, token_a=pair.token_b, token_b=pair.token_a)
        out.append(pair)
    return out
