"""Task records: prompt pairs with two contrast tokens, tasks, suites' context, and encoded batches.

A task is a name, a one-line description and a seeded generator of prompt pairs. Prompt A expects
token A and prompt B expects token B; the two prompts differ minimally (Gao et al. 2025, §2.2).
No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

#: The fixed seeds of the standard pair sets: train pairs (pruning) and test pairs (reporting).
SEED_TRAIN = 0
SEED_TEST = 1
#: Default sizes of the standard sets, in pairs (``PruneConfig.n_train``/``n_test`` default to these).
N_TRAIN = 256
N_TEST = 128


@attrs.frozen(kw_only=True)
class PromptPair:
    """Two prompts that differ minimally, and the token each should be followed by."""

    prompt_a: str
    prompt_b: str
    token_a: str  # the right next token after prompt_a (and the wrong one after prompt_b)
    token_b: str
    source_a: str | None = None  # where a mined prompt came from, "relpath:line"
    source_b: str | None = None


@attrs.frozen(kw_only=True)
class MineSource:
    """A folder of code that mined tasks are cut from instead of the held-out corpus (``--mine-from``)."""

    folder: str  # resolved path
    hash: str  # content hash, computed as the corpus hash is (``circuitlab.data.corpus.Corpus.hash``)
    n_files: int
    n_trained_on: int | None = None  # its files whose exact content the model trained on (None: unknown)

    def provenance(self) -> dict[str, Any]:
        return {"folder": self.folder, "folder_hash": self.hash, "n_files": self.n_files,
                "n_files_trained_on": self.n_trained_on}


@attrs.frozen(kw_only=True)
class TaskContext:
    """What a task suite may use to build its tasks."""

    # (relpath, text): the corpus' validation split, or with ``mine_from`` every file of that folder
    heldout_files: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    corpus_hash: str | None = None  # the hash of where the held-out files come from (mined sets depend on it)
    tokenizer: Any = attrs.field(default=None, eq=False, repr=False)  # the model's tokenizer, if known
    mine_from: MineSource | None = None  # set when the held-out files are another folder of code

    @property
    def tokenizer_hash(self) -> str | None:
        if self.tokenizer is None:
            return None
        from ..data.tokenizer import tokenizer_hash

        return tokenizer_hash(self.tokenizer)


@attrs.frozen(kw_only=True)
class Task:
    name: str
    description: str  # one line
    generate: Callable[[int, int], list[PromptPair]] = attrs.field(eq=False, repr=False)  # (n, seed) -> pairs
    suite: str = ""
    # Optional (n, seed, split) -> pairs, for tasks whose train and test pairs must come from disjoint
    # sources (mined code positions). Without it, both splits come from ``generate`` with their seeds.
    generate_split: Callable[[int, int, str], list[PromptPair]] | None = attrs.field(
        default=None, eq=False, repr=False)
    depends_on_corpus: bool = False  # its pairs come from the corpus (benchmark files record its hash)
    corpus_hash: str | None = None  # for such tasks: the corpus and tokenizer the pairs were cut with
    tokenizer_hash: str | None = None

    @property
    def qualname(self) -> str:
        return f"{self.suite}:{self.name}" if self.suite else self.name

    def make_pairs(self, n: int, seed: int, split: str | None = None) -> list[PromptPair]:
        """Up to ``n`` pairs; the same (n, seed, split) always gives the same pairs."""
        if split is not None and self.generate_split is not None:
            return list(self.generate_split(n, seed, split))
        return list(self.generate(n, seed))


@attrs.frozen(kw_only=True)
class TokenCheck:
    """Whether a task can be scored with a tokenizer, and the pairs that can."""

    usable: bool
    problem: str | None = None  # names the string and how it tokenizes, e.g. "']]' tokenizes as [']', ']']"
    pairs: tuple[PromptPair, ...] = attrs.field(default=(), repr=False)  # the pairs that pass both checks
    n_dropped: int = 0  # pairs dropped because the prompt/token boundary merges differently


@attrs.frozen(kw_only=True)
class TaskBatch:
    """Encoded prompts, two rows per pair: row 2i is prompt A, row 2i+1 is prompt B."""

    ids: Any  # (N, T) long, right-padded with 0
    last: Any  # (N,) long: index of each row's last prompt token
    target: Any  # (N,) long: the right token id
    contrast: Any  # (N,) long: the wrong token id

    def to(self, device: Any) -> TaskBatch:
        return TaskBatch(ids=self.ids.to(device), last=self.last.to(device), target=self.target.to(device),
                         contrast=self.contrast.to(device))

    def __len__(self) -> int:
        return int(self.ids.shape[0])
