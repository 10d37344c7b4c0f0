"""Control tasks: the same prompts with answers that no mechanism can predict.

``nonsense_pairs`` keeps every prompt and both candidate tokens of a pair, but relabels them by one
consistent rule: the two answers are swapped for every pair whose first prompt's longest identifier
(``key_word``) lies in a seeded half of all words (``swaps``, a hash of the word and the seed). The
same word always gets the same label, on the train and the test pairs alike (the standard tasks have
40-55 such words, and about 95% of the test pairs' words occur among the train pairs'), so the
relabelled task is a function of the prompt, learnable by looking up a word, that has nothing to do
with the task's mechanism. A per-pair coin
flip instead would make the train labels a list to memorise and the test labels unpredictable. A
pruned "circuit" that reaches a low loss on the relabelled task shows how much the pruning can fit by
itself (the finding of the open replication, jacobcd52/sparse_pretrain_public).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import attrs

from .types import PromptPair

#: Mixed into the seed so the relabelling never coincide with a pair generator's own stream.
NONSENSE_SALT = "circuitlab-nonsense"


def nonsense_seed(task: str, split: str = "all", seed: int = 0) -> int:
    """A stable 63-bit seed per (task, split, seed), independent of Python's hash randomisation; the
    relabelling uses one seed for every split (``split="all"``), so train and test follow one rule."""
    digest = hashlib.sha256(f"{NONSENSE_SALT}:{task}:{split}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def swaps(word: str, seed: int) -> bool:
    """Whether the relabelling swaps the answers of a prompt ending in ``word`` (half the words)."""
    return hashlib.sha256(f"{NONSENSE_SALT}:{seed}:{word}".encode()).digest()[0] < 128


def key_word(prompt: str) -> str:
    """The prompt's longest identifier (the first of equal length); "" when it has none."""
    words = re.findall(r"[A-Za-z_]\w*", prompt)
    return max(words, key=len) if words else ""


def nonsense_pairs(pairs: Sequence[PromptPair], seed: int) -> list[PromptPair]:
    """The pairs relabelled consistently: answers swapped when the first prompt's ``key_word`` ``swaps``."""
    out = []
    for pair in pairs:
        if swaps(key_word(pair.prompt_a), seed):
            pair = attrs.evolve(pair, token_a=pair.token_b, token_b=pair.token_a)
        out.append(pair)
    return out
