"""Built-in sparsity schedules: ``dense``, ``topk`` (the paper's) and ``gmp`` (the classic baseline).

A schedule is built as ``factory(config)`` from the run's ``TrainConfig`` and then, after every
optimizer step, ``apply(model, step)`` enforces its masks under ``torch.no_grad()``.
"""

from __future__ import annotations

from typing import Any

from circuitlab import hookimpl
from circuitlab.train.sparsity import kept_count, nonzero_densities, sparse_parameters, topk_mask


def _linear_anneal(step: int, total: int, start_frac: float, end_frac: float) -> float:
    """Progress in [0, 1] of an anneal running from start_frac to end_frac of training."""
    start, end = start_frac * total, end_frac * total
    if step <= start:
        return 0.0
    if step >= end or end <= start:
        return 1.0
    return (step - start) / (end - start)


class Dense:
    """No weight sparsity: every parameter stays dense."""

    def __init__(self, config: Any):
        self.config = config

    def density_at(self, step: int) -> float:
        return 1.0

    def apply(self, model: Any, step: int) -> None:
        pass

    def densities(self, model: Any) -> dict[str, float]:
        return nonzero_densities(model)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TopK(Dense):
    """Per-matrix exact top-|w| after every step, annealed linearly from dense (Gao et al. 2025)."""

    def density_at(self, step: int) -> float:
        c = self.config
        t = _linear_anneal(step, c.steps, c.anneal_start_frac, c.anneal_end_frac)
        return 1.0 + t * (c.density - 1.0)

    def apply(self, model: Any, step: int) -> None:
        density = self.density_at(step)
        if density >= 1.0:
            return
        for sp in sparse_parameters(model):
            k = kept_count(sp.param.numel(), density)
            mask = topk_mask(sp.param, k, sp.neuron_dim, self.config.min_per_neuron)
            sp.param.mul_(mask)


class GMP(Dense):
    """Gradual magnitude pruning: Zhu & Gupta's cubic schedule with a permanent mask."""

    def __init__(self, config: Any):
        super().__init__(config)
        self.masks: dict[str, Any] = {}

    def density_at(self, step: int) -> float:
        c = self.config
        t = _linear_anneal(step, c.steps, c.anneal_start_frac, c.anneal_end_frac)
        final_sparsity = 1.0 - c.density
        sparsity = final_sparsity * (1.0 - (1.0 - t) ** 3)  # s_f + (s_i - s_f)(1 - t)^3 with s_i = 0
        return 1.0 - sparsity

    def apply(self, model: Any, step: int) -> None:
        density = self.density_at(step)
        for sp in sparse_parameters(model):
            mask = self.masks.get(sp.name)
            if mask is not None and mask.device != sp.param.device:  # loaded from a checkpoint on the CPU
                mask = self.masks[sp.name] = mask.to(sp.param.device)
            if density < 1.0:
                k = kept_count(sp.param.numel(), density)
                alive = int(mask.sum()) if mask is not None else sp.param.numel()
                if k < alive:  # prune further among the weights still alive; pruned ones never return
                    mask = topk_mask(sp.param, k, allowed=mask)
                    self.masks[sp.name] = mask
            if mask is not None:
                sp.param.mul_(mask)

    def state_dict(self) -> dict:
        import torch

        return {name: mask.to(torch.uint8) for name, mask in self.masks.items()}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {name: t.bool() for name, t in state.items()}


@hookimpl
def register_sparsity_schedules(register):
    register("dense", Dense)
    register("topk", TopK)
    register("gmp", GMP)
