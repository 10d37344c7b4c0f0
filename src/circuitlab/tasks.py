"""Tasks: minimal prompt pairs with two contrast tokens, and the task loss.

A task is a name, a one-line description and a seeded generator of prompt pairs. Prompt A expects
token A and prompt B expects token B; the two prompts differ minimally (paper-spec §4.1).

Task loss (paper-spec §4.1). For each prompt, the binary cross-entropy over the two candidate
tokens at the last position: ``softplus(-(logit[right] - logit[wrong]))``. circuitlab reports the
**mean over prompts** (both members of every pair), i.e. half of the paper's stored two-sided
values, which are summed over the pair. The default pruning target 0.15 is in this per-prompt
convention. Accuracy is the share of prompts whose right token has the larger logit of the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch


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
class TaskContext:
    """What a task suite may use to build its tasks."""

    heldout_files: tuple[tuple[str, str], ...] = ()  # (relpath, text) of the corpus' validation split


@attrs.frozen(kw_only=True)
class Task:
    name: str
    description: str  # one line
    generate: Callable[[int, int], list[PromptPair]] = attrs.field(eq=False, repr=False)  # (n, seed) -> pairs
    suite: str = ""


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


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` if the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer.encode(text).ids
    return ids[0] if len(ids) == 1 else None


def encode_pairs(pairs: Sequence[PromptPair], tokenizer: Any, max_len: int | None = None) -> TaskBatch:
    """Tokenize pairs into a right-padded batch. Prompts longer than ``max_len`` keep their last tokens."""
    import torch

    rows, target, contrast = [], [], []
    for p in pairs:
        ta, tb = single_token_id(tokenizer, p.token_a), single_token_id(tokenizer, p.token_b)
        if ta is None or tb is None:
            raise ValueError(f"contrast tokens {p.token_a!r}/{p.token_b!r} are not single tokens")
        for prompt, right, wrong in ((p.prompt_a, ta, tb), (p.prompt_b, tb, ta)):
            ids = tokenizer.encode(prompt).ids
            if max_len is not None:
                ids = ids[-max_len:]
            rows.append(ids)
            target.append(right)
            contrast.append(wrong)
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    last = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    return TaskBatch(ids=ids, last=last, target=torch.tensor(target), contrast=torch.tensor(contrast))


def last_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """(N, T, V) logits -> (N, V) logits at each row's last prompt token."""
    return logits[torch_arange(len(batch), logits.device), batch.last]


def torch_arange(n: int, device: Any) -> torch.Tensor:
    import torch

    return torch.arange(n, device=device)


def binary_ce(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Per-prompt binary cross-entropy over the two candidate tokens, shape (N,)."""
    import torch.nn.functional as F

    right = logits_last.gather(1, target[:, None]).squeeze(1).float()
    wrong = logits_last.gather(1, contrast[:, None]).squeeze(1).float()
    return F.softplus(-(right - wrong))


def task_loss(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """The task loss: binary CE averaged over prompts (half the paper's two-sided sum)."""
    return binary_ce(logits_last, target, contrast).mean()


def task_accuracy(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> float:
    right = logits_last.gather(1, target[:, None]).squeeze(1)
    wrong = logits_last.gather(1, contrast[:, None]).squeeze(1)
    return float((right > wrong).float().mean())
