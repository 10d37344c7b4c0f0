"""``check_schedule``: a sparsity schedule against ``protocols.SparsitySchedule``, on a tiny real model.

The schedule drives real training steps (``circuitlab.train.loop.train_step``: forward, backward,
gradients scaled to RMS 1, AdamW, then ``apply``) of a tiny GPT on real code, through the same
checking wrapper training uses. Checks: it builds from a ``TrainConfig``; ``density_at`` is a number
in (0, 1] at every step and never increases; ``apply`` keeps parameters in place and finite and
keeps the sparse parameters at or below ``density_at``; ``densities`` reports the true nonzero
fractions; the state survives a round trip through safetensors (a resumed run continues exactly like
the uninterrupted one); and the same seed reproduces the same weights.
"""

from __future__ import annotations

import copy
from typing import Any

from ..config import TrainConfig
from ..plugins import Entry, calls
from .report import CheckFailed, CheckReport, Checks, entry_for
from .tiny import Tiny, shared_tiny


def _simulate(tiny: Tiny, entry: Entry, config: TrainConfig, steps: range, model: Any = None, opt: Any = None,
              schedule: Any = None) -> tuple[Any, Any, Any]:
    """Train a tiny model for ``steps`` with the schedule; returns (model, optimizer, schedule)."""
    import torch

    from ..train.loop import lr_at, make_optimizer, train_step

    if model is None:
        torch.manual_seed(config.seed)
        model = tiny.model(config.seed)
        opt = make_optimizer(model, config)
        schedule = calls.build_schedule(entry, config)
    for step in steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(config, step, schedule.density_at(step))
        x, y = tiny.batch(step, config.batch_size, config.seed)
        train_step(model, model, opt, schedule, x, y, step, torch.device("cpu"))
    return model, opt, schedule


def _weights(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    import torch

    for name in a:
        if not torch.equal(a[name], b[name]):
            return name
    return None


def _check_densities(schedule: Any, config: TrainConfig) -> str:
    values = [schedule.density_at(step) for step in range(config.steps)]
    for step, (a, b) in enumerate(zip(values, values[1:], strict=False)):
        if b > a + 1e-12:
            raise CheckFailed(f"density_at({step + 1}) = {b:.6g} is above density_at({step}) = {a:.6g}; the "
                              "scheduled density must never increase")
    return f"{values[0]:.4g} -> {values[-1]:.4g} over {config.steps} steps"


def _check_training(tiny: Tiny, entry: Entry, config: TrainConfig) -> tuple[Any, Any, Any]:
    import torch

    from ..train.sparsity import kept_count, sparse_parameters

    before = {n: (p.shape, p.dtype) for n, p in tiny.model(config.seed).named_parameters()}
    model, opt, schedule = _simulate(tiny, entry, config, range(config.steps))
    for n, p in model.named_parameters():
        shape, dtype = before.get(n, (None, None))
        if shape != p.shape or dtype != p.dtype:
            raise CheckFailed(f"apply changed parameter {n!r} to {tuple(p.shape)} {p.dtype}; change values in place")
        if not bool(torch.isfinite(p).all()):
            raise CheckFailed(f"after apply, parameter {n!r} holds NaN or inf")
    density = schedule.density_at(config.steps - 1)
    nonzero = total = 0
    for sp in sparse_parameters(model):
        nonzero += int((sp.param != 0).sum())
        total += sp.param.numel()
    allowed = sum(kept_count(sp.param.numel(), density) for sp in sparse_parameters(model))
    if nonzero > allowed:
        raise CheckFailed(f"after apply(model, {config.steps - 1}), {nonzero} of {total} sparse-parameter entries "
                          f"are nonzero ({nonzero / total:.4f}), above density_at = {density:.4g} ({allowed} entries)")
    return model, opt, schedule


def _check_reported(model: Any, schedule: Any) -> str:
    reported = schedule.densities(model)
    params = dict(model.named_parameters())
    for name, value in reported.items():
        if name not in params:
            raise CheckFailed(f"densities(model) reports {name!r}, which is not a parameter name of the model")
        actual = float((params[name] != 0).sum()) / params[name].numel()
        if abs(actual - value) > 1e-6:
            raise CheckFailed(f"densities(model)[{name!r}] = {value:.6g}, but {actual:.6g} of it is nonzero")
    return f"{len(reported)} parameters"


def _check_round_trip(tiny: Tiny, entry: Entry, config: TrainConfig) -> str:
    """Stop halfway, save the state through safetensors, resume, and compare with the uninterrupted run."""
    from safetensors.torch import load, save

    from ..train.loop import make_optimizer

    half = config.steps // 2
    model, opt, schedule = _simulate(tiny, entry, config, range(half))
    state = schedule.state_dict()
    blob = save({k: v.detach().cpu().contiguous() for k, v in state.items()})
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _simulate(tiny, entry, config, range(half, config.steps), model, opt, schedule)
    resumed_model = tiny.model(config.seed)
    resumed_model.load_state_dict(saved_model)
    resumed_opt = make_optimizer(resumed_model, config)
    resumed_opt.load_state_dict(saved_opt)
    resumed = calls.build_schedule(entry, config)
    resumed.load_state_dict(load(blob))  # as on --resume: right after the factory, before the first apply
    _simulate(tiny, entry, config, range(half, config.steps), resumed_model, resumed_opt, resumed)
    differs = _first_difference(_weights(model), _weights(resumed_model))
    if differs:
        raise CheckFailed(f"a run resumed at step {half} from state_dict() (saved through safetensors) ends with "
                          f"different weights in {differs!r}; save everything apply depends on")
    return f"{len(state)} tensors" + (f" ({', '.join(sorted(state)[:3])}{', ...' if len(state) > 3 else ''})"
                                      if state else "")


def _check_seed(tiny: Tiny, entry: Entry, config: TrainConfig, first_model: Any) -> None:
    first = _weights(first_model)
    second = _weights(_simulate(tiny, entry, config, range(config.steps))[0])
    differs = _first_difference(first, second)
    if differs:
        raise CheckFailed(f"two runs with seed {config.seed} end with different weights in {differs!r}; draw "
                          "random numbers from a generator seeded by config.seed")


def check_schedule(factory: Any, *, config: TrainConfig | None = None, tiny: Tiny | None = None,
                   name: str | None = None, entry: Entry | None = None,
                   raise_on_failure: bool = True) -> CheckReport:
    """Check a sparsity-schedule factory (what the plugin registers) against its contract.

    ``config`` defaults to ``Tiny.config()`` (12 steps, density 0.25) with ``sparsity`` set to the
    schedule's name. Returns the report; raises ``PluginCheckError`` listing the failures unless
    ``raise_on_failure=False``. Takes a few seconds.
    """
    entry = entry_for("sparsity", factory, name, entry)
    tiny = tiny or shared_tiny()
    config = config or tiny.config(sparsity=entry.name)
    checks = Checks(entry)
    state: dict[str, Any] = {}

    def builds() -> str:
        state["schedule"] = calls.build_schedule(entry, config)
        return type(state["schedule"].inner).__name__

    checks.run("builds from a TrainConfig", builds)
    checks.run("density_at: in (0, 1], never increasing", lambda: _check_densities(state["schedule"], config),
               needs=("builds from a TrainConfig",))
    built = ("builds from a TrainConfig",)
    trained = checks.run("apply: in place, finite, at most density_at",
                         lambda: _check_training(tiny, entry, config), needs=built)
    checks.run("densities: the true nonzero fractions", lambda: _check_reported(trained[0], trained[2]),
               needs=("apply: in place, finite, at most density_at",))
    checks.run("state_dict: safetensors round trip resumes exactly", lambda: _check_round_trip(tiny, entry, config),
               needs=built)
    checks.run(f"seed {config.seed} reproduces the weights", lambda: _check_seed(tiny, entry, config, trained[0]),
               needs=("apply: in place, finite, at most density_at",))
    return checks.finish(raise_on_failure)
