"""RigL ("Rigging the Lottery", Evci et al. 2020) as a circuitlab sparsity schedule: ``rigl``.

Sparse from the first step at the target density, with a topology that keeps changing. Each sparse
parameter (``circuitlab.sparsity.sparse_parameters``: block matrices, embedding, unembedding,
biases) starts with a random mask of exactly ``kept_count(numel, density)`` entries, drawn from a
generator seeded by the run's seed. Every ``update_every`` steps until ``end_frac`` of training, a
fraction ``f(t) = alpha / 2 * (1 + cos(pi * t / t_end))`` of each parameter's active connections is
updated: the ``k`` active weights of smallest magnitude are dropped, and the ``k`` inactive
connections with the largest gradient magnitude (the dense gradient of the step just taken) are
grown, starting at zero. A dropped connection may be regrown at once when its gradient is among the
largest. The number of active connections, and so the density, never changes.

Differences from the paper, all deliberate: the initial mask is uniform per parameter (the paper
also offers ERK), the update interval is 2% of training rather than a fixed 100 steps (circuitlab
runs are 10^2-10^3 steps), and the gradient is the one circuitlab's loop already holds (scaled to
RMS 1, which does not change the ranking within a parameter).

torch is imported inside methods only, so that installing this plugin keeps ``circuitlab --help`` fast.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from circuitlab import hookimpl
from circuitlab.sparsity import kept_count, nonzero_densities, sparse_parameters, topk_mask

#: Written for circuitlab's plugin API 2 (docs/plugins.md, "Compatibility").
CIRCUITLAB_PLUGIN_API = 2

__version__ = "0.1.0"


def update_fraction(step: int, t_end: int, alpha: float) -> float:
    """RigL's cosine-decayed fraction of active connections updated at ``step`` (0 from ``t_end`` on)."""
    if step >= t_end:
        return 0.0
    return alpha / 2 * (1 + math.cos(math.pi * step / t_end))


class RigL:
    """RigL: fixed density, drop smallest |w|, regrow largest |grad|, cosine-decayed update fraction."""

    alpha = 0.3  # fraction of active connections updated at the first update (the paper's default)
    end_frac = 0.75  # no updates after this fraction of training (the paper's T_end)
    update_frac = 0.02  # steps between updates, as a fraction of training (>= 1 step)

    def __init__(self, config: Any):
        self.config = config  # circuitlab.config.TrainConfig: density, steps, seed
        self.masks: dict[str, Any] = {}  # parameter name -> bool mask (True = active)
        self.update_every = max(1, round(self.update_frac * config.steps))
        self.t_end = max(1, round(self.end_frac * config.steps))

    def density_at(self, step: int) -> float:
        return self.config.density  # sparse from the start, at the target

    def is_update_step(self, step: int) -> bool:
        return step > 0 and step % self.update_every == 0 and step < self.t_end

    def _initial_mask(self, name: str, param: Any) -> Any:
        """A uniformly random mask with exactly kept_count entries, seeded by (run seed, parameter name)."""
        import torch

        digest = hashlib.sha256(f"{self.config.seed}:{name}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        k = kept_count(param.numel(), self.config.density)
        chosen = torch.randperm(param.numel(), generator=g)[:k]
        mask = torch.zeros(param.numel(), dtype=torch.bool)
        mask[chosen] = True
        return mask.view_as(param).to(param.device)

    def _update(self, param: Any, mask: Any, fraction: float) -> Any:
        """Drop the k smallest active |w|, grow the k inactive connections of largest |grad|."""
        active = int(mask.sum())
        k = min(int(fraction * active), active)
        if k <= 0 or param.grad is None:
            return mask
        kept = topk_mask(param, active - k, allowed=mask)  # the active - k largest |w| stay
        grown = topk_mask(param.grad, k, allowed=~kept)  # the k largest |grad| among all the others
        param.masked_fill_(grown, 0.0)  # new connections start at zero
        return kept | grown

    def apply(self, model: Any, step: int) -> None:
        fraction = update_fraction(step, self.t_end, self.alpha) if self.is_update_step(step) else 0.0
        for sp in sparse_parameters(model):
            mask = self.masks.get(sp.name)
            if mask is None:
                mask = self._initial_mask(sp.name, sp.param)
            elif mask.device != sp.param.device:  # restored from a checkpoint on the CPU
                mask = mask.to(sp.param.device)
            if fraction > 0:
                mask = self._update(sp.param, mask, fraction)
            self.masks[sp.name] = mask
            sp.param.mul_(mask)

    def densities(self, model: Any) -> dict[str, float]:
        return nonzero_densities(model)

    def state_dict(self) -> dict:
        import torch

        return {name: mask.to(torch.uint8) for name, mask in self.masks.items()}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {name: t.bool() for name, t in state.items()}


@hookimpl
def register_sparsity_schedules(register):
    register("rigl", RigL)
