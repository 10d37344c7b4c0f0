"""Attribution patching as circuitlab pruners: ``attribution`` (EAP) and ``attribution_ig`` (EAP-IG).

Both are score-only pruners (``circuitlab.plugins.PrunerScorer``): nothing is optimised. circuitlab
hands ``fit`` the pruning objective as a function of the node gates (``GateGradients``), where every
node's activation is ``ablated + gate * (x - ablated)``, ``ablated`` being the node's mean over
corpus tokens (or zero with ``--ablation zero``). The gradient of the objective with respect to node
i's gate, at ``gate = 1``, is ``sum over prompts and positions of dL/dx_i * (x_i - ablated_i)``:
the first-order estimate of how the objective changes when node i alone is ablated. That is
attribution patching (Nanda 2023) in the node form of edge attribution patching (EAP, Syed et al.
2023), with the ablated value as the corrupted activation.

- ``attribution``: EAP, one gradient at ``gate = 1``.
- ``attribution_ig``: the integrated-gradients variant (EAP-IG, Hanna et al. 2024): the gradient
  averaged over ``steps`` points ``alpha = (j + 1/2) / steps`` on the straight path from every node
  ablated (``gate = 0``) to none (``gate = 1``), times the path length 1. Hanna et al. integrate
  over the input embeddings; here the path runs through every node location's activation at once,
  which is what circuitlab's node gates allow. ``--steps`` sets the number of points (default 5).
  By completeness of integrated gradients, the signed effects sum to (about) the objective with
  every node ablated minus the objective of the unpruned model.

A node's score is the magnitude of its estimated effect, ``|-dL/dgate_i|``, as in EAP, where circuits
are the top nodes by absolute score; a node whose ablation would *lower* the objective therefore
ranks as high as one whose ablation raises it by as much. circuitlab then walks up this ranking
from one node (x1.3 per step) to the first circuit that reaches ``--target-loss`` on the train
pairs and bisects below it, as it does along an optimised mask's ranking, so circuits from both
are counted and validated the same way. The objective plugin decides what is attributed (``binary_ce`` by default);
note that with ``--objective kl`` the EAP gradient at the unpruned model is zero (the KL is at its
minimum there), so use ``attribution_ig`` with it.

torch is imported inside methods only.
"""

from __future__ import annotations

from typing import Any

from circuitlab import hookimpl

#: Score-only pruners need plugin API 2, the register_pruners hook API 3 (docs/plugins.md, "Compatibility").
CIRCUITLAB_PLUGIN_API = 3

__version__ = "0.1.0"


class AttributionPatching:
    """EAP node attribution: |gradient x (activation - ablated value)| at the unpruned model; no optimisation."""

    score_only = True
    steps = 1  # gradient evaluations (EAP needs one)

    def __init__(self, num_nodes: int, generator: Any = None, device: Any = "cpu"):
        self.num_nodes, self.device = num_nodes, device
        self._scores = None
        self.effect = None  # signed estimate of how much ablating each node alone raises the objective

    def gate_path(self, steps: int) -> list[float]:
        """The gate values (all nodes alike) at which gradients are taken."""
        return [1.0]

    def fit(self, gradients: Any) -> None:
        import torch

        path = self.gate_path(max(1, int(gradients.steps)))
        total = torch.zeros(gradients.num_nodes, device=gradients.device)
        for alpha in path:
            _, grad = gradients.value_and_grad(torch.full((gradients.num_nodes,), alpha, device=gradients.device))
            total += grad
        self.effect = -total / len(path)  # gate 1 -> 0 is a step of -1 along the path
        self._scores = self.effect.abs()

    def scores(self) -> Any:
        if self._scores is None:
            raise RuntimeError("scores() before fit(); circuitlab calls fit(gradients) first")
        return self._scores


class AttributionPatchingIG(AttributionPatching):
    """EAP-IG node attribution: integrated gradients along gate 0 -> 1 (default 5 points); no optimisation."""

    steps = 5  # integration points; --steps overrides

    def gate_path(self, steps: int) -> list[float]:
        return [(j + 0.5) / steps for j in range(steps)]  # midpoint rule on (0, 1)


@hookimpl
def register_pruners(register):
    register("attribution", AttributionPatching)
    register("attribution_ig", AttributionPatchingIG)
