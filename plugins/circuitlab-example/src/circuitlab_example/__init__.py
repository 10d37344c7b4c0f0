"""Example circuitlab plugin: one of each plugin kind, as small as each can be. Copy it to start.

- ``topk_geometric`` (sparsity schedule): the paper's per-matrix top-k, annealed geometrically.
- ``ste`` (pruner): a straight-through sigmoid mask.
- ``margin`` (pruning objective): a hinge on the right-minus-wrong logit difference.
- ``loops`` (task suite): one task, ``for_while``: ``for NAME`` -> `` in`` vs ``while NAME`` -> ``:\\n``.

Only circuitlab and the standard library are imported here; torch is imported inside methods, so
installing this plugin keeps ``circuitlab --help`` fast. ``tests/`` checks every kind with
``circuitlab.testing``; ``circuitlab plugins --check NAME`` runs the same checks.
"""

from __future__ import annotations

import random
from typing import Any

from circuitlab import hookimpl
from circuitlab.sparsity import kept_count, nonzero_densities, sparse_parameters, topk_mask
from circuitlab.tasks import PromptPair, Task

#: The plugin API this module was written for (docs/plugins.md, "Compatibility").
CIRCUITLAB_PLUGIN_API = 3


# ---- sparsity schedule ------------------------------------------------------------------------


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


# ---- pruner ------------------------------------------------------------------------------------


class STEMask:
    """Straight-through sigmoid: hard 0/1 gate forward, sigmoid gradient backward."""

    lr, steps, penalty_coef = 1e-2, 200, 3e-3  # defaults for --lr, --steps, --penalty-coef

    def __init__(self, num_nodes: int, generator: Any = None, device: Any = "cpu"):
        import torch

        noise = torch.randn(num_nodes, generator=generator)  # the generator is a seeded CPU generator
        self.logit = (1.0 + 0.01 * noise).to(device).requires_grad_()  # parameters live on the model's device

    def parameters(self):
        return [self.logit]

    def gate(self):
        import torch

        soft = torch.sigmoid(self.logit)
        return (self.logit > 0).float() + soft - soft.detach()  # hard value, soft gradient

    def penalty(self):
        return self.gate().sum()  # the number of kept nodes

    def scores(self):
        return self.logit.detach().clone()  # > 0: the mask keeps the node

    def after_step(self, progress: float) -> None:
        import torch

        with torch.no_grad():
            self.logit.clamp_(-3.0, 3.0)


# ---- pruning objective ------------------------------------------------------------------------


def margin():
    """Hinge on the right-minus-wrong logit difference: wants a margin of 2."""
    from circuitlab.tasks import logit_diff

    def objective(logits, target, contrast, reference_logits):
        return (2.0 - logit_diff(logits, target, contrast)).clamp(min=0).mean()

    return objective


# ---- task suite -------------------------------------------------------------------------------

NAMES = ("x", "y", "i", "j", "k", "n", "item", "line", "key", "value", "node", "name", "data", "path", "text",
         "word", "row", "part", "entry", "chunk")
STATEMENTS = ("{a} = {b} + 1", "{a} = []", "{a} = len({b})", "{a} = {b}.strip()", "if {a} is None:\n{i}    return",
              "{a} += {b}", "print({a}, {b})", "{a} = self.{b}", "{a}.append({b})", "del {a}")


def for_or_while_pairs(n: int, seed: int) -> list[PromptPair]:
    """``for NAME`` continues with `` in``, ``while NAME`` with ``:\\n``, after a few random statements."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        indent = rng.choice(("", "    ", "        "))
        lines = [indent + rng.choice(STATEMENTS).format(a=rng.choice(NAMES), b=rng.choice(NAMES), i=indent)
                 for _ in range(rng.randint(1, 3))]
        head = "\n".join(lines) + "\n" + indent
        name = rng.choice(NAMES)
        pairs.append(PromptPair(prompt_a=f"{head}for {name}", prompt_b=f"{head}while {name}",
                                token_a=" in", token_b=":\n"))
    return pairs


class LoopSuite:
    """One task: a loop header's next token after 'for NAME' vs 'while NAME'."""

    def __init__(self, context: Any):
        self.context = context  # a circuitlab.tasks.TaskContext (unused: the pairs come from templates)

    def tasks(self) -> list[Task]:
        return [Task(name="for_while", description="' in' after 'for NAME' vs ':\\n' after 'while NAME'",
                     generate=for_or_while_pairs)]


# ---- registration -----------------------------------------------------------------------------


@hookimpl
def register_sparsity_schedules(register):
    register("topk_geometric", GeometricTopK)


@hookimpl
def register_pruners(register):
    register("ste", STEMask)


@hookimpl
def register_pruning_objectives(register):
    register("margin", margin)


@hookimpl
def register_task_suites(register):
    register("loops", LoopSuite)
