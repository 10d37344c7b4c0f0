"""What a plugin of each kind provides: one ``typing.Protocol`` per kind.

These are the contracts the hooks in ``hookspecs`` document; circuitlab only ever calls the methods
listed here. They are structural: a plugin's class need not inherit from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from ..tasks.types import Task


@runtime_checkable
class SparsitySchedule(Protocol):
    """Built as ``factory(config: TrainConfig)``; enforces weight sparsity after every optimizer step."""

    def density_at(self, step: int) -> float:
        """The kept fraction the schedule targets at ``step``, in (0, 1] (it scales the learning rate)."""

    def apply(self, model: Any, step: int) -> None:
        """Zero the weights the schedule drops; called under ``torch.no_grad()`` after every step."""

    def densities(self, model: Any) -> dict[str, float]:
        """Nonzero fraction per sparse parameter, reported in the run's config.json."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to save in checkpoints (masks, counters); may be empty."""

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` saved, on ``--resume`` (before the first ``apply``)."""


@runtime_checkable
class NodeMask(Protocol):
    """Built as ``factory(num_nodes=..., generator=...)``; one learnable gate per node."""

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
class PruningObjective(Protocol):
    """Built as ``factory()``; the scalar the mask optimisation minimises (besides the penalty)."""

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor,
                 reference_logits: torch.Tensor) -> torch.Tensor:
        """Last-position logits (N, vocab) of the pruned and unpruned model, token ids (N,) -> scalar."""


@runtime_checkable
class TaskSuite(Protocol):
    """Built as ``factory(context: TaskContext)``; lists its tasks."""

    def tasks(self) -> list[Task]:
        """Every task of the suite (names unique within the suite)."""
