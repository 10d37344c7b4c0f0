"""The full model on task pairs: task loss, accuracy (overall and per side) and the paper's pair loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .loss import binary_ce_of_diff, last_logits, logit_diff
from .tokens import encode_pairs
from .types import PromptPair


def evaluate(model: Any, tokenizer: Any, pairs: Sequence[PromptPair], device: Any = "cpu",
             batch_size: int = 64) -> dict:
    """The full model on ``pairs``: per-prompt mean binary CE (``loss``), ``accuracy`` and ``n_pairs``.

    Also ``accuracy_a``/``accuracy_b`` (A and B prompts separately: a model that always prefers one
    token scores 1.0/0.0) and ``pair_loss`` (the paper's two-sided sum over a pair, 2 x ``loss``).
    Prompts longer than the model's context keep their last tokens.
    """
    import torch

    if not pairs:
        return {"loss": None, "accuracy": None, "accuracy_a": None, "accuracy_b": None,
                "pair_loss": None, "n_pairs": 0}
    max_len = getattr(getattr(model, "config", None), "n_ctx", None)
    diffs = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = encode_pairs(pairs[start:start + batch_size], tokenizer, max_len=max_len).to(device)
            logits, _ = model(batch.ids)
            diffs.append(logit_diff(last_logits(logits, batch), batch.target, batch.contrast).cpu())
    diff = torch.cat(diffs)
    loss, win = binary_ce_of_diff(diff), (diff > 0).float()
    return {"loss": float(loss.mean()), "accuracy": float(win.mean()),
            "accuracy_a": float(win[0::2].mean()), "accuracy_b": float(win[1::2].mean()),
            "pair_loss": float(2 * loss.mean()), "n_pairs": len(pairs)}
