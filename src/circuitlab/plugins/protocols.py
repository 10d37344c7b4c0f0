"""What a plugin of each kind provides: one ``typing.Protocol`` per kind.

These are the contracts the hooks in ``hookspecs`` document; circuitlab only ever calls the methods
listed here, through the checking wrappers of ``circuitlab.plugins.calls``, and ``circuitlab.testing``
checks a plugin against them. They are structural: a plugin's class need not inherit from them.
They belong to plugin API version ``circuitlab.PLUGIN_API_VERSION`` (docs/plugins.md, "Compatibility").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from ..config import TrainConfig
    from ..tasks.types import Task, TaskContext


@runtime_checkable
class SparsitySchedule(Protocol):
    """Built as ``factory(config: TrainConfig)``; enforces weight sparsity after every optimizer step."""

    def density_at(self, step: int) -> float:
        """The kept fraction the schedule targets at ``step``: a number in (0, 1], non-increasing in
        ``step``; it scales the learning rate. Called before every step (and once after the last)."""

    def apply(self, model: Any, step: int) -> None:
        """Zero the weights the schedule drops, in place; called under ``torch.no_grad()`` after every
        optimizer step, while the step's gradients are still in ``p.grad``. Afterwards at most
        ``density_at(step)`` of the sparse parameters' entries are nonzero (overall)."""

    def densities(self, model: Any) -> dict[str, float]:
        """Nonzero fraction per sparse parameter name, reported in the run's config.json."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Dense tensors (bool, integer or float dtypes) to save in checkpoint.safetensors; may be empty."""

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` saved (CPU tensors), on ``--resume``: called once, right after the
        factory and before the first ``density_at``/``apply``."""


@runtime_checkable
class PrunerMask(Protocol):
    """A pruner that trains a mask. Built as ``factory(num_nodes=..., generator=..., device=...)``;
    one learnable gate per node.

    ``device`` (API 2) is the torch device of the model being pruned; keep parameters there. It is
    passed only to factories that accept a ``device`` argument (or ``**kwargs``).
    """

    def parameters(self) -> list[torch.Tensor]:
        """What Adam optimises."""

    def gate(self) -> torch.Tensor:
        """(num_nodes,) values in [0, 1] for the training forward pass (it may sample)."""

    def penalty(self) -> torch.Tensor:
        """A differentiable scalar: the (expected) number of kept nodes."""

    def scores(self) -> torch.Tensor:
        """(num_nodes,) detached ranking scores; > 0 means the mask keeps the node by itself."""

    def after_step(self, progress: float) -> None:
        """Called after every optimizer step with the fraction of training done, in (0, 1]."""


@runtime_checkable
class GateGradients(Protocol):
    """What a score-only pruner's ``fit`` receives: the pruning objective on the task's train pairs,
    as a function of the node gates (1 keeps a node, 0 ablates it)."""

    num_nodes: int
    device: Any  # the torch device of the model and of the gates
    steps: int  # --steps if given, else the scorer's ``steps`` attribute (e.g. integration points)

    def value_and_grad(self, gate: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The objective (mean over every train pair) at ``gate`` (num_nodes,), and its gradient with
        respect to the gate, shape (num_nodes,). At ``gate = 1`` the gradient of node i is
        sum over prompts and positions of dObjective/dx_i * (x_i - ablated_i)."""


@runtime_checkable
class PrunerScorer(Protocol):
    """A score-only pruner (API 2): ranks nodes without mask optimisation (attribution methods).

    Built like a ``PrunerMask``; a class attribute ``score_only = True`` marks it. circuitlab calls
    ``fit(gradients)`` once, then ranks nodes by ``scores()`` and searches that ranking as for a
    trained mask, except that the walk up the ranking starts at one node (a scorer keeps no nodes
    by itself); there are no retries, and ``lr``/``penalty_coef`` are not used.
    """

    score_only: bool

    def fit(self, gradients: GateGradients) -> None:
        """Compute the scores from the objective's gradients with respect to the node gates."""

    def scores(self) -> torch.Tensor:
        """(num_nodes,) finite scores; higher keeps a node longer."""


@runtime_checkable
class PruningObjective(Protocol):
    """Built as ``factory()``; the scalar the mask optimisation minimises (besides the penalty)."""

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor,
                 reference_logits: torch.Tensor) -> torch.Tensor:
        """Last-position logits (N, vocab) of the pruned and unpruned model, token ids (N,) -> a finite
        floating-point scalar tensor that carries the gradient of ``logits``."""


@runtime_checkable
class TaskSuite(Protocol):
    """Built as ``factory(context: TaskContext)``; lists its tasks."""

    def tasks(self) -> list[Task]:
        """Every task of the suite: ``circuitlab.tasks.Task`` records with names unique within the suite."""


# Factories: what each hook's ``register(name, factory)`` takes.


class ScheduleFactory(Protocol):
    def __call__(self, config: TrainConfig) -> SparsitySchedule: ...


class PrunerFactory(Protocol):
    def __call__(self, *, num_nodes: int, generator: torch.Generator,
                 device: torch.device = ...) -> PrunerMask | PrunerScorer: ...


class ObjectiveFactory(Protocol):
    def __call__(self) -> PruningObjective: ...


class SuiteFactory(Protocol):
    def __call__(self, context: TaskContext) -> TaskSuite: ...


# The names of the pruner protocols before pruners had one noun; plugins written against them keep working.
NodeMask = PrunerMask
NodeScorer = PrunerScorer
MaskFactory = PrunerFactory
