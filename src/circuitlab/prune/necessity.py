"""Necessity against its natural baseline, and faithfulness to the model, on the test pairs.

Necessity ablates the circuit from the full model (only the rest kept). The baseline it is compared
with ablates a random node set of the same size from the full model, over several draws: a circuit is
necessary when removing it hurts more than removing as many random nodes. (The ``random`` validation
of ``circuit.Validations`` keeps a random set *alone*: a sufficiency baseline, near the all-ablated
loss.) Faithfulness to the model: the circuit's test loss minus the full model's, and the KL divergence
from the full model's two-answer distribution (softmax over right and wrong answer) to the circuit's,
averaged over the test prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .evaluator import Evaluator


def binary_kl(d_full: torch.Tensor, d_circuit: torch.Tensor) -> float:
    """Mean KL(full || circuit) of the two-answer distributions given by right-minus-wrong logit diffs."""
    import torch.nn.functional as F

    p_log = F.logsigmoid(d_full), F.logsigmoid(-d_full)  # log p(right), log p(wrong)
    q_log = F.logsigmoid(d_circuit), F.logsigmoid(-d_circuit)
    kl = p_log[0].exp() * (p_log[0] - q_log[0]) + p_log[1].exp() * (p_log[1] - q_log[1])
    return float(kl.mean())


def random_ablation_losses(te: Evaluator, k: int, draws: int, seed: int) -> list[float]:
    """Test loss of the full model with ``k`` random nodes ablated, one per draw (seeded)."""
    import torch

    from ..tasks.loss import loss_and_accuracy

    N = te.num_nodes
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        kept = torch.ones(N, dtype=torch.bool)
        kept[torch.randperm(N, generator=gen)[:k]] = False
        out.append(loss_and_accuracy(te.diffs(kept.to(te.values.device).float()))[0])
    return out


def model_faithfulness(te: Evaluator, kept: torch.Tensor, draws: int = 3, seed: int = 0) -> dict[str, Any]:
    """Random-ablation necessity baseline (``draws`` >= 1) and the circuit's faithfulness to the model."""
    import torch

    from ..tasks.loss import loss_and_accuracy

    N = te.num_nodes
    device = te.values.device
    with torch.no_grad():
        d_full = te.diffs(torch.ones(N, device=device))
        d_circuit = te.diffs(kept.to(device).float())
        losses = random_ablation_losses(te, int(kept.sum()), max(draws, 1), seed)
        gap = loss_and_accuracy(d_circuit)[0] - loss_and_accuracy(d_full)[0]
    return {"necessity_random": sum(losses) / len(losses), "necessity_random_draws": losses,
            "loss_gap_to_full": gap, "kl_to_full": binary_kl(d_full, d_circuit)}
