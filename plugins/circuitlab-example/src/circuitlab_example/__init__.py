"""Example circuitlab plugin: a geometric top-k anneal.

Only circuitlab and the standard library are imported here; torch is imported inside methods (by
the helpers in ``circuitlab.sparsity``), so installing this plugin keeps ``circuitlab --help`` fast.
"""

from __future__ import annotations

from typing import Any

from circuitlab import hookimpl
from circuitlab.sparsity import kept_count, nonzero_densities, sparse_parameters, topk_mask


class GeometricTopK:
    """Per-matrix top-|w| with the kept fraction annealed geometrically from dense to the target."""

    def __init__(self, config: Any):
        self.config = config  # a circuitlab.config.TrainConfig

    def density_at(self, step: int) -> float:
        c = self.config
        start, end = c.anneal_start_frac * c.steps, c.anneal_end_frac * c.steps
        t = 0.0 if step <= start else 1.0 if step >= end else (step - start) / (end - start)
        return c.density ** t  # 1 at t=0, the target at t=1, straight in log space

    def apply(self, model: Any, step: int) -> None:
        density = self.density_at(step)
        if density >= 1.0:
            return
        for sp in sparse_parameters(model):
            sp.param.mul_(topk_mask(sp.param, kept_count(sp.param.numel(), density),
                                    sp.neuron_dim, self.config.min_per_neuron))

    def densities(self, model: Any) -> dict[str, float]:
        return nonzero_densities(model)

    def state_dict(self) -> dict:
        return {}  # stateless: the mask is recomputed from the weights every step

    def load_state_dict(self, state: dict) -> None:
        pass


@hookimpl
def register_sparsity_schedules(register):
    register("topk_geometric", GeometricTopK)
