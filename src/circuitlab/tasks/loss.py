"""The task loss (Gao et al. 2025, §2.2) and the one right-minus-wrong logit difference everything uses.

For each prompt, the binary cross-entropy over the two candidate tokens at the last position:
``softplus(-(logit[right] - logit[wrong]))``. circuitlab reports the **mean over prompts** (both
members of every pair), i.e. half of the paper's stored two-sided values, which are summed over the
pair. The default pruning target 0.15 is in this per-prompt convention. Accuracy is the share of
prompts whose right token has the larger logit of the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .types import TaskBatch


def logit_diff(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Right-minus-wrong logit difference per prompt: (N, vocab) logits, (N,) ids -> (N,) float32."""
    right = logits_last.gather(1, target[:, None]).squeeze(1)
    wrong = logits_last.gather(1, contrast[:, None]).squeeze(1)
    return (right - wrong).float()


def binary_ce_of_diff(diff: torch.Tensor) -> torch.Tensor:
    """Per-prompt binary cross-entropy from logit differences (N,)."""
    import torch.nn.functional as F

    return F.softplus(-diff)


def binary_ce(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Per-prompt binary cross-entropy over the two candidate tokens, shape (N,)."""
    return binary_ce_of_diff(logit_diff(logits_last, target, contrast))


def task_loss(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """The task loss: binary CE averaged over prompts (half the paper's two-sided sum)."""
    return binary_ce(logits_last, target, contrast).mean()


def task_accuracy(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> float:
    return float((logit_diff(logits_last, target, contrast) > 0).float().mean())


def loss_and_accuracy(diff: torch.Tensor, sign: torch.Tensor | None = None,
                      calibration: tuple[float, float] | None = None) -> tuple[float, float]:
    """Task loss and accuracy from logit differences, optionally after a calibration (scale, shift * sign)."""
    diff = diff.detach()
    if calibration is not None:
        diff = calibration[0] * diff + calibration[1] * sign
    return float(binary_ce_of_diff(diff).mean()), float((diff > 0).float().mean())


def last_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """(N, T, V) logits -> (N, V) logits at each row's last prompt token."""
    import torch

    return logits[torch.arange(len(batch), device=logits.device), batch.last]


