"""The four circuitlab hooks.

Every hook receives one argument, ``register``: a callback the plugin calls once per thing it
provides. Its signature is the same for all four kinds::

    register(name: str, factory: object, *, summary: str | None = None) -> None

``name`` is the lowercase slug users type on the command line (``topk``, ``hardconcrete``).
``factory`` is what circuitlab calls to build the thing; its expected shape per kind is described
below and in ``docs/plugins.md``. ``summary`` is the one-line description shown by
``circuitlab plugins``; it defaults to the first line of ``factory.__doc__``.

Names are lowercase slugs (``[a-z][a-z0-9_-]*``). Every name can also be written qualified by its
distribution, ``DIST:NAME`` (``circuitlab-example:margin``): a short name two distributions register
is refused, and each stays usable qualified; a built-in keeps its short name (docs/plugins.md). Each factory's
shape is a protocol in ``circuitlab.plugins.protocols``; the ``Register*`` types below say which.
Plugin modules should import torch lazily (inside methods), so that ``circuitlab --help`` stays fast.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

from .protocols import ObjectiveFactory, PrunerFactory, ScheduleFactory, SuiteFactory

hookspec = pluggy.HookspecMarker("circuitlab")


class Register(Protocol):
    """The callback passed to every ``register_*`` hook (the typed variants below narrow ``factory``)."""

    def __call__(self, name: str, factory: Any, *, summary: str | None = None) -> None: ...


class RegisterSchedule(Protocol):
    def __call__(self, name: str, factory: ScheduleFactory, *, summary: str | None = None) -> None: ...


class RegisterPruner(Protocol):
    def __call__(self, name: str, factory: PrunerFactory, *, summary: str | None = None) -> None: ...


RegisterMask = RegisterPruner  # the name before pruners had one noun


class RegisterObjective(Protocol):
    def __call__(self, name: str, factory: ObjectiveFactory, *, summary: str | None = None) -> None: ...


class RegisterSuite(Protocol):
    def __call__(self, name: str, factory: SuiteFactory, *, summary: str | None = None) -> None: ...


@hookspec
def register_sparsity_schedules(register: RegisterSchedule) -> None:
    """Register weight-sparsity schedules used by ``circuitlab train --sparsity NAME``.

    :param register: call ``register(name, factory)``. ``factory(config)`` gets the run's
        ``circuitlab.config.TrainConfig`` (target ``density``, ``steps``, anneal fractions,
        ``min_per_neuron``, ...) and returns a ``circuitlab.plugins.protocols.SparsitySchedule``:
        ``density_at(step) -> float``, ``apply(model, step) -> None`` (called under
        ``torch.no_grad()`` after every optimizer step), ``densities(model) -> dict[str, float]``,
        and ``state_dict() -> dict[str, Tensor]`` / ``load_state_dict(state)`` for resume.
    """


@hookspec
def register_pruners(register: RegisterPruner) -> None:
    """Register pruners used by ``circuitlab prune --pruner NAME``: how node gates are parameterized
    and trained (or, for score-only pruners, how nodes are scored).

    :param register: call ``register(name, factory)``. ``factory(num_nodes=..., generator=...,
        device=...)`` (``generator`` is a seeded CPU ``torch.Generator``: draw every random number from
        it, so a seed reproduces the result; ``device`` is the model's device, passed only if the
        factory accepts it) returns a ``circuitlab.plugins.protocols.PrunerMask``:

        - ``parameters() -> list[Tensor]``: what Adam optimises;
        - ``gate() -> Tensor``: shape ``(num_nodes,)``, values in [0, 1], used in the training forward
          pass (it may sample); a node's activation becomes ``ablated + gate * (x - ablated)``;
        - ``penalty() -> Tensor``: a differentiable scalar, the (expected) number of kept nodes;
        - ``scores() -> Tensor``: shape ``(num_nodes,)``, detached; higher keeps a node longer, and
          a node with score > 0 is one the mask keeps by itself (the bisection starts there);
        - ``after_step(progress: float) -> None``: called after every optimizer step with the
          fraction of training done, in (0, 1] (clamping, temperature annealing).

        Optional class attributes ``lr``, ``steps`` and ``penalty_coef`` give the defaults used when
        ``--lr``, ``--steps`` and ``--penalty-coef`` are not passed.

        Or, for attribution methods that need no optimisation, a ``PrunerScorer`` (``score_only = True``,
        ``fit(gradients)``, ``scores()``): see ``circuitlab.plugins.protocols``.
    """


@hookspec(warn_on_impl=DeprecationWarning(
    "register_mask_parameterizations is the old name of the register_pruners hook; rename the function"))
def register_mask_parameterizations(register: RegisterPruner) -> None:
    """Deprecated name of ``register_pruners``, still read: its names are pruners like any other."""


@hookspec
def register_pruning_objectives(register: RegisterObjective) -> None:
    """Register pruning objectives used by ``circuitlab prune --objective NAME``.

    :param register: call ``register(name, factory)``. ``factory()`` returns a
        ``circuitlab.plugins.protocols.PruningObjective``, a callable
        ``objective(logits, target, contrast, reference_logits) -> Tensor`` (a finite scalar to minimise,
        carrying the gradient).
        ``logits`` and ``reference_logits`` are last-position logits of shape ``(N, vocab)`` for the
        pruned and the unpruned model; ``target`` and ``contrast`` are token ids of shape ``(N,)``.
        The objective only drives the mask optimisation: the target loss, the bisection and the
        reported losses always use the task loss (binary CE per prompt).
    """


@hookspec
def register_task_suites(register: RegisterSuite) -> None:
    """Register task suites used by ``circuitlab tasks --suite NAME`` and ``prune --tasks NAME``.

    :param register: call ``register(name, factory)``. ``factory(context)`` returns a
        ``circuitlab.plugins.protocols.TaskSuite``, whose ``tasks() -> list[circuitlab.tasks.Task]``
        lists its tasks (names unique). ``context`` is a ``circuitlab.tasks.TaskContext`` (held-out
        corpus files, for suites that mine real code, and the model's tokenizer).
    """
