"""``check_objective``: a pruning objective against ``protocols.PruningObjective``.

The objective is called, through the checking wrapper pruning uses, on last-position logits of the
shape pruning passes (N prompts x vocabulary, float32) with a gradient: it must return a finite
floating-point scalar carrying the gradient, give finite nonzero gradients, stay finite when the
logits equal the reference, handle a single pair, return the same value for the same inputs, and
leave its inputs unchanged.
"""

from __future__ import annotations

from typing import Any

from ..plugins import Entry, calls
from .report import CheckFailed, CheckReport, Checks, entry_for

VOCAB = 2048


def _inputs(n_prompts: int, seed: int) -> tuple[Any, Any, Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n_prompts, VOCAB, generator=g)).requires_grad_()
    reference = 3 * torch.randn(n_prompts, VOCAB, generator=g)
    target = torch.randint(0, VOCAB, (n_prompts,), generator=g)
    contrast = (target + 1 + torch.randint(0, VOCAB - 1, (n_prompts,), generator=g)) % VOCAB  # never the target
    return logits, target, contrast, reference


def _check_scalar(objective: Any) -> str:
    logits, target, contrast, reference = _inputs(16, 0)
    value = objective(logits, target, contrast, reference)
    return f"{float(value.detach()):.4g} on random logits"


def _check_gradient(objective: Any) -> str:
    import torch

    logits, target, contrast, reference = _inputs(16, 1)
    objective(logits, target, contrast, reference).backward()
    grad = logits.grad
    if grad is None or not bool(torch.isfinite(grad).all()):
        raise CheckFailed("the gradient with respect to the logits is missing or not finite")
    if not bool((grad != 0).any()):
        raise CheckFailed("the gradient with respect to the logits is zero everywhere on random logits; "
                          "the mask optimisation would learn nothing")
    return ""


def _check_reference(objective: Any) -> str:
    _, target, contrast, reference = _inputs(16, 2)
    value = objective(reference.clone().requires_grad_(), target, contrast, reference)
    return f"{float(value.detach()):.4g} at the unpruned logits"


def _check_one_pair(objective: Any) -> str:
    logits, target, contrast, reference = _inputs(2, 3)
    objective(logits, target, contrast, reference)
    return ""


def _check_pure(objective: Any) -> str:
    import torch

    inputs = _inputs(16, 4)
    copies = [t.detach().clone() for t in inputs]
    first = objective(*inputs)
    second = objective(*inputs)
    for name, original, now in zip(("logits", "target", "contrast", "reference_logits"), copies, inputs, strict=True):
        if not torch.equal(original, now.detach()):
            raise CheckFailed(f"the objective modified its {name} argument in place; compute on copies")
    if not torch.equal(first.detach(), second.detach()):
        raise CheckFailed(f"the same inputs gave {float(first.detach()):.6g} and then {float(second.detach()):.6g}; "
                          "the objective must be deterministic")
    return ""


def check_objective(factory: Any, *, name: str | None = None, entry: Entry | None = None,
                    raise_on_failure: bool = True) -> CheckReport:
    """Check a pruning-objective factory (what the plugin registers) against its contract.

    Returns the report; raises ``PluginCheckError`` listing the failures unless ``raise_on_failure=False``.
    """
    entry = entry_for("objective", factory, name, entry)
    checks = Checks(entry)
    built: dict[str, Any] = {}

    def builds() -> str:
        built["objective"] = calls.build_objective(entry)
        return type(built["objective"].inner).__name__

    checks.run("builds with factory()", builds)
    needs = ("builds with factory()",)
    checks.run("a finite scalar with a gradient", lambda: _check_scalar(built["objective"]), needs=needs)
    checks.run("finite, nonzero gradient on the logits", lambda: _check_gradient(built["objective"]), needs=needs)
    checks.run("finite when logits equal the reference", lambda: _check_reference(built["objective"]), needs=needs)
    checks.run("works for a single pair (2 prompts)", lambda: _check_one_pair(built["objective"]), needs=needs)
    checks.run("deterministic, leaves its inputs unchanged", lambda: _check_pure(built["objective"]), needs=needs)
    return checks.finish(raise_on_failure)
