"""Calling plugin code at run time: exceptions and broken contracts become one line naming the plugin.

circuitlab builds every schedule, mask and objective through ``build_schedule``, ``build_mask`` and
``build_objective``. They return thin wrappers with the protocol's methods that check each result
(``density_at`` in (0, 1], a scalar objective, a ``gate`` of shape (num_nodes,), a ``state_dict``
of tensors, ...). An exception raised inside the plugin (any ``BaseException`` but ``KeyboardInterrupt``
and a signal's ``Interrupted``: ``sys.exit()`` too), or a result that breaks the contract, becomes a ``PluginError``::

    plugin 'dist' (sparsity 'random_fixed'): density_at(120) returned 0.0; it must be in (0, 1]

which the command line prints as one line with exit code 2. With ``CIRCUITLAB_RAISE_PLUGIN_ERRORS=1``
the plugin's own exception propagates unchanged (traceback included), and a broken contract is
raised as ``PluginContractError``. Task suites are checked in ``circuitlab.tasks.suites`` with the
same helpers (``calling``, ``violation``). torch is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
from collections.abc import Iterator
from typing import Any

from ..errors import PluginError
from ..interrupts import STOPS
from .loading import RAISE_ENV, one_line, raise_plugin_errors
from .registry import Entry

#: dtypes a schedule's state may hold: what safetensors stores (no object arrays, no complex numbers).
STATE_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64")


class PluginContractError(RuntimeError):
    """A broken plugin contract, raised (with a traceback) under ``CIRCUITLAB_RAISE_PLUGIN_ERRORS=1``."""


def violation(entry: Entry, what: str) -> Exception:
    """The error for a result that breaks the contract: ``plugin 'p' (kind 'name'): what``."""
    message = f"{entry.label}: {what}"
    if raise_plugin_errors():
        return PluginContractError(message)
    return PluginError(message, plugin=entry.plugin, kind=entry.kind, name=entry.name)


@contextlib.contextmanager
def calling(entry: Entry, what: str) -> Iterator[None]:
    """Turn an exception raised inside the plugin's ``what`` (e.g. ``"density_at(120)"``) into a PluginError."""
    try:
        yield
    except (PluginError, *STOPS):
        raise
    except BaseException as exc:  # SystemExit included: a plugin must not end circuitlab
        if raise_plugin_errors():
            raise
        raise PluginError(f"{entry.label}: {what} {what_happened(exc)}; set {RAISE_ENV}=1 for the traceback",
                          plugin=entry.plugin, kind=entry.kind, name=entry.name) from None


def what_happened(exc: BaseException) -> str:
    """``raised ValueError: ...``, or ``called sys.exit(7)`` for a SystemExit."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"raised {one_line(f'{type(exc).__name__}: {exc}')}"


def _attribute(entry: Entry, obj: Any, name: str) -> Any:
    """``obj.name``: a missing attribute stays an AttributeError (``getattr(x, name, default)`` works), and
    a property of the plugin's that raises anything else is a PluginError like any other call."""
    try:
        return getattr(obj, name)
    except (AttributeError, PluginError, *STOPS):
        raise
    except BaseException:
        with calling(entry, f"its attribute {name}"):
            raise


def accepts(factory: Any, keyword: str) -> bool:
    """Whether ``factory`` takes the keyword argument ``keyword`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: do not guess
        return False
    return any(p.name == keyword and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in params)


def build(entry: Entry, call: str, *args: Any, **kwargs: Any) -> Any:
    with calling(entry, call):
        return entry.factory(*args, **kwargs)


def _missing(obj: Any, methods: tuple[str, ...]) -> list[str]:
    return [m for m in methods if not callable(getattr(obj, m, None))]


def _shape(t: Any) -> str:
    return f"shape {tuple(t.shape)}" if hasattr(t, "shape") else f"a {type(t).__name__}"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------
# Sparsity schedules

SCHEDULE_METHODS = ("density_at", "apply", "densities", "state_dict", "load_state_dict")


class CheckedSchedule:
    """A sparsity schedule whose every call is checked against ``protocols.SparsitySchedule``."""

    def __init__(self, entry: Entry, inner: Any):
        self.entry, self.inner = entry, inner

    def __getattr__(self, name: str) -> Any:  # anything beyond the protocol: the plugin's own attributes
        return _attribute(self.entry, self.inner, name)

    def density_at(self, step: int) -> float:
        with calling(self.entry, f"density_at({step})"):
            value = self.inner.density_at(step)
        if not _is_real(value) or not 0.0 < float(value) <= 1.0:
            raise violation(self.entry, f"density_at({step}) returned {value!r}; it must be a number in (0, 1]")
        return float(value)

    def apply(self, model: Any, step: int) -> None:
        with calling(self.entry, f"apply(model, {step})"):
            self.inner.apply(model, step)

    def densities(self, model: Any) -> dict[str, float]:
        with calling(self.entry, "densities(model)"):
            value = self.inner.densities(model)
        if not isinstance(value, dict):
            raise violation(self.entry, f"densities(model) returned a {type(value).__name__}; it must be a dict of "
                                        "parameter name -> nonzero fraction")
        for key, density in value.items():
            if not isinstance(key, str) or not _is_real(density) or not 0.0 <= float(density) <= 1.0:
                raise violation(self.entry, f"densities(model) has {key!r}: {density!r}; it must map parameter "
                                            "names to fractions in [0, 1]")
        return {k: float(v) for k, v in value.items()}

    def state_dict(self) -> dict[str, Any]:
        with calling(self.entry, "state_dict()"):
            state = self.inner.state_dict()
        check_state(self.entry, state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with calling(self.entry, "load_state_dict(state)"):
            self.inner.load_state_dict(state)


def check_state(entry: Entry, state: Any) -> None:
    """A schedule's state: a dict of str -> dense torch.Tensor of a dtype safetensors stores."""
    import torch

    if not isinstance(state, dict):
        raise violation(entry, f"state_dict() returned a {type(state).__name__}; it must be a dict of str -> "
                               "torch.Tensor (saved in checkpoint.safetensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not key:
            raise violation(entry, f"state_dict() has the key {key!r}; keys must be non-empty strings")
        if not isinstance(value, torch.Tensor):
            raise violation(entry, f"state_dict() holds a {type(value).__name__} under {key!r}; values must be "
                                   "torch.Tensor (stack lists into one tensor, put numbers into 0-d tensors)")
        if value.layout != torch.strided or str(value.dtype).removeprefix("torch.") not in STATE_DTYPES:
            raise violation(entry, f"state_dict()[{key!r}] is a {value.dtype} {value.layout} tensor; use a dense "
                                   f"tensor of one of {', '.join(STATE_DTYPES)}")


def build_schedule(entry: Entry, config: Any) -> CheckedSchedule:
    schedule = build(entry, "factory(config)", config)
    missing = _missing(schedule, SCHEDULE_METHODS)
    if missing:
        raise violation(entry, f"factory(config) returned a {type(schedule).__name__} without "
                               f"{', '.join(missing)}(); see protocols.SparsitySchedule")
    return CheckedSchedule(entry, schedule)


# --------------------------------------------------------------------------------------------------
# Pruning objectives


class CheckedObjective:
    """A pruning objective whose result must be a finite scalar tensor that carries the gradient."""

    def __init__(self, entry: Entry, inner: Any):
        self.entry, self.inner = entry, inner

    def __call__(self, logits: Any, target: Any, contrast: Any, reference_logits: Any) -> Any:
        import torch

        what = f"objective(logits {tuple(logits.shape)}, target, contrast, reference_logits)"
        with calling(self.entry, what):
            value = self.inner(logits, target, contrast, reference_logits)
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
            raise violation(self.entry, f"{what} returned {_shape(value)}; it must be a floating-point scalar "
                                        "tensor (reduce over prompts, e.g. with .mean())")
        if not bool(torch.isfinite(value.detach()).all()):
            raise violation(self.entry, f"{what} returned {float(value.detach())}; it must be finite")
        if logits.requires_grad and not value.requires_grad:
            raise violation(self.entry, f"{what} returned a tensor without a gradient; compute it from the logits "
                                        "with torch operations, without .detach(), .item() or float()")
        return value.reshape(())


def build_objective(entry: Entry) -> CheckedObjective:
    objective = build(entry, "factory()")
    if not callable(objective):
        raise violation(entry, f"factory() returned a {type(objective).__name__}, which is not callable; it must "
                               "return objective(logits, target, contrast, reference_logits)")
    return CheckedObjective(entry, objective)


# --------------------------------------------------------------------------------------------------
# Node masks (optimised) and node scorers (score-only)

MASK_METHODS = ("parameters", "gate", "penalty", "scores", "after_step")
SCORER_METHODS = ("fit", "scores")
#: Optional mask attributes and what each must be.
MASK_DEFAULTS = {"lr": "a positive number", "steps": "a positive integer", "penalty_coef": "a number >= 0"}


class CheckedMask:
    """A node mask (or score-only scorer) whose results are checked against ``protocols.PrunerMask``/``PrunerScorer``."""

    def __init__(self, entry: Entry, inner: Any, num_nodes: int):
        self.entry, self.inner, self.num_nodes = entry, inner, num_nodes
        with calling(entry, "its score_only attribute"):
            self.score_only = bool(getattr(inner, "score_only", False))

    def __getattr__(self, name: str) -> Any:
        value = _attribute(self.entry, self.inner, name)
        if name in MASK_DEFAULTS and not _valid_default(name, value):
            raise violation(self.entry, f"its {name} is {value!r}; it must be {MASK_DEFAULTS[name]}")
        return value

    def _vector(self, value: Any, what: str, low: float | None = None, high: float | None = None) -> Any:
        import torch

        n = self.num_nodes
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (n,) or not value.is_floating_point():
            raise violation(self.entry, f"{what} returned {_shape(value)}; it must be a floating-point tensor of "
                                        f"shape ({n},), one value per node")
        v = value.detach()
        bad = ~torch.isfinite(v)
        if low is not None:
            bad |= (v < low - 1e-6) | (v > high + 1e-6)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            where = "finite" if low is None else f"finite and in [{low:g}, {high:g}]"
            raise violation(self.entry, f"{what}[{i}] is {float(v[i])}; every value must be {where}")
        return value

    def parameters(self) -> list[Any]:
        import torch

        with calling(self.entry, "parameters()"):
            params = list(self.inner.parameters())
        if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
            raise violation(self.entry, "parameters() must return a non-empty list of tensors with "
                                        "requires_grad=True (what Adam optimises)")
        return params

    def gate(self) -> Any:
        with calling(self.entry, "gate()"):
            value = self.inner.gate()
        return self._vector(value, "gate()", 0.0, 1.0)

    def penalty(self) -> Any:
        import torch

        with calling(self.entry, "penalty()"):
            value = self.inner.penalty()
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
            raise violation(self.entry, f"penalty() returned {_shape(value)}; it must be a floating-point scalar "
                                        "tensor (the expected number of kept nodes)")
        if not bool(torch.isfinite(value.detach()).all()):
            raise violation(self.entry, f"penalty() returned {float(value.detach())}; it must be finite")
        return value.reshape(())

    def scores(self) -> Any:
        with calling(self.entry, "scores()"):
            value = self.inner.scores()
        return self._vector(value, "scores()").detach()

    def after_step(self, progress: float) -> None:
        with calling(self.entry, f"after_step({progress:.4g})"):
            self.inner.after_step(progress)

    def fit(self, gradients: Any) -> None:
        with calling(self.entry, "fit(gradients)"):
            self.inner.fit(gradients)


def _valid_default(name: str, value: Any) -> bool:
    if name == "steps":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not _is_real(value) or not math.isfinite(value):
        return False
    return value >= 0 if name == "penalty_coef" else value > 0


def build_mask(entry: Entry, *, num_nodes: int, generator: Any, device: Any = None) -> CheckedMask:
    """``factory(num_nodes=..., generator=..., device=...)``; ``device`` only to factories that accept it
    (plugin API 1 factories did not get it)."""
    kwargs: dict[str, Any] = {"num_nodes": num_nodes, "generator": generator}
    if device is not None and accepts(entry.factory, "device"):
        kwargs["device"] = device
    mask = build(entry, f"factory({', '.join(f'{k}=...' for k in kwargs)})", **kwargs)
    with calling(entry, "its score_only attribute"):
        score_only = bool(getattr(mask, "score_only", False))
    missing = _missing(mask, SCORER_METHODS if score_only else MASK_METHODS)
    if missing:
        kind = "a score-only mask (score_only = True)" if score_only else "a mask"
        raise violation(entry, f"factory returned {kind} without {', '.join(missing)}(); see "
                               f"protocols.{'PrunerScorer' if score_only else 'PrunerMask'}")
    return CheckedMask(entry, mask, num_nodes)
