"""The full model on task pairs: task loss, accuracy (overall and per side) and the paper's pair loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .loss import binary_ce_of_diff, last_logits, logit_diff
from .packing import PackedPairs
from .tokens import encode_pairs
from .types import PromptPair

#: Two-sided 95% normal quantile, for the accuracy interval.
Z95 = 1.959963984540054

#: Verdicts of a task's full-model accuracy against a threshold (see ``verdict``).
SOLVED, BORDERLINE, UNSOLVED = "solved", "borderline", "unsolved"


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion ``correct / n`` (95% by default).

    Chosen over the normal (Wald) interval because accuracies here sit near 1, where Wald's interval
    collapses to a point at 100% and spills over 1 just below it; Wilson's stays inside [0, 1].
    """
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0/n and n/n the bounds are exactly p; rounding alone would put them a hair past it.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def verdict(low: float, high: float, threshold: float) -> str:
    """``solved`` when the interval's lower bound clears ``threshold``, ``unsolved`` when its upper bound
    is below it, else ``borderline``: a task whose accuracy another machine's model could put on either
    side of the threshold."""
    if low >= threshold:
        return SOLVED
    return UNSOLVED if high < threshold else BORDERLINE


def evaluate(model: Any, tokenizer: Any, pairs: Sequence[PromptPair], device: Any = "cpu",
             batch_size: int = 64) -> dict:
    """The full model on ``pairs``: per-prompt mean binary CE (``loss``), ``accuracy`` and ``n_pairs``.

    ``accuracy_low``/``accuracy_high`` bound the accuracy with a 95% Wilson interval over the
    ``n_prompts`` (2 per pair) scored prompts. The two prompts of a pair are not independent draws, so
    the interval is, if anything, a little narrow.

    Also ``accuracy_a``/``accuracy_b`` (A and B prompts separately: a model that always prefers one
    token scores 1.0/0.0) and ``pair_loss`` (the paper's two-sided sum over a pair, 2 x ``loss``).
    Prompts longer than the model's context keep their last tokens.
    """
    import torch

    if not pairs:
        return {"loss": None, "accuracy": None, "accuracy_a": None, "accuracy_b": None,
                "pair_loss": None, "n_pairs": 0, "accuracy_low": None, "accuracy_high": None, "n_prompts": 0}
    max_len = getattr(getattr(model, "config", None), "n_ctx", None)
    diffs = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = encode_pairs(pairs[start:start + batch_size], tokenizer, max_len=max_len).to(device)
            if hasattr(model, "last_logits"):  # circuitlab's GPT: the last block and unembedding at the last position only,
                # both prompts of a pair in one row, their shared prefix once (tasks.packing)
                ids, positions, visible, read = PackedPairs.of(batch).rows(torch.arange(len(batch) // 2))
                z = model.last_logits(ids, read, positions=positions, visible=visible).reshape(len(batch), -1)  # (n, vocab)
            else:
                z = last_logits(model(batch.ids)[0], batch)
            diffs.append(logit_diff(z, batch.target, batch.contrast).cpu())
    diff = torch.cat(diffs)
    loss, win = binary_ce_of_diff(diff), (diff > 0).float()
    low, high = wilson_interval(int(win.sum()), len(win))
    return {"loss": float(loss.mean()), "accuracy": float(win.mean()),
            "accuracy_a": float(win[0::2].mean()), "accuracy_b": float(win[1::2].mean()),
            "pair_loss": float(2 * loss.mean()), "n_pairs": len(pairs),
            "accuracy_low": low, "accuracy_high": high, "n_prompts": len(win)}
