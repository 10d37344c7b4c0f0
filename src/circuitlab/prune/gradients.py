"""The pruning objective as a function of the node gates, with its gradient: what score-only masks get.

A score-only pruner (``protocols.PrunerScorer``, e.g. attribution patching) is not optimised. Its
``fit`` receives a ``GateGradients``: ``value_and_grad(gate)`` runs the masked forward pass over every
train pair (minibatches of ``batch_pairs`` pairs, so memory stays bounded), evaluates the pruning
objective and returns its mean and the gradient with respect to the gate vector. With every node
location's activation computed as ``ablated + gate * (x - ablated)``, the gradient at ``gate = 1`` is
``sum over prompts and positions of dObjective/dx * (x - ablated)``: attribution patching against
the ablated value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .evaluator import Evaluator


class GateGradients:
    """``protocols.GateGradients`` over one task's train pairs."""

    def __init__(self, evaluator: Evaluator, objective: Any, *, batch_pairs: int, steps: int):
        self.evaluator, self.objective, self.batch_pairs = evaluator, objective, batch_pairs
        self.num_nodes = evaluator.num_nodes
        self.device = evaluator.values.device
        self.steps = steps
        self.calls = 0  # forward-backward passes over the whole train set, for provenance

    def value_and_grad(self, gate: torch.Tensor) -> tuple[float, torch.Tensor]:
        import torch

        ev, b = self.evaluator, self.evaluator.batch
        gate = gate.detach().to(device=self.device, dtype=torch.float32).requires_grad_()
        n_pairs = len(b) // 2
        total = 0.0
        with torch.enable_grad():
            for start in range(0, n_pairs, self.batch_pairs):
                pairs = torch.arange(start, min(n_pairs, start + self.batch_pairs), device=b.ids.device)
                rows = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
                logits = ev.last_logits(gate, rows)
                value = self.objective(logits, b.target[rows], b.contrast[rows], ev.reference[rows])
                weight = len(pairs) / n_pairs  # the objectives are means over prompts: weight by share
                (value * weight).backward()
                total += float(value.detach()) * weight
        self.calls += 1
        return total, gate.grad.detach().clone()
