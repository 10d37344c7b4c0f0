"""Attribution pruners: the mask contract (circuitlab.testing), EAP against a direct computation with
forward hooks, and the completeness of the integrated-gradients variant."""

from __future__ import annotations

import pytest
import torch
from circuitlab_attribution import AttributionPatching, AttributionPatchingIG

from circuitlab import plugins
from circuitlab.model import NodeSpace
from circuitlab.prune.gradients import GateGradients
from circuitlab.testing import MaskBench, check_mask
from circuitlab.testing.masks import task_loss_objective


@pytest.fixture(scope="module")
def bench(tiny):
    bench = MaskBench(tiny)
    bench.setup()
    return bench


@pytest.mark.parametrize("factory", [AttributionPatching, AttributionPatchingIG])
def test_passes_the_mask_contract(factory, tiny):
    report = check_mask(factory, tiny=tiny)
    assert report.passed, report.table()
    assert "score-only" in next(r.detail for r in report.results if r.check.startswith("members"))


def test_both_are_registered_through_the_entry_point():
    registry = plugins.make_registry()
    for name, factory in (("attribution", AttributionPatching), ("attribution_ig", AttributionPatchingIG)):
        entry = registry.get("pruner", name)
        assert entry.dist == "circuitlab-attribution" and entry.factory is factory


def _direct_eap(bench) -> torch.Tensor:
    """sum over prompts and positions of dL/dx * (x - mean), with plain forward hooks (no gates)."""
    model, batch, values = bench.model, bench.train, bench.values
    space = NodeSpace.from_config(model.config)
    locs = space.by_hook()
    acts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name, x):
        if name in locs:  # x + 0, with a zero probe whose gradient is dL/dx through every later path
            probe = torch.zeros_like(x, requires_grad=True)
            acts[name] = (x.detach(), probe)
            return x + probe
        return x

    logits, _ = model(batch.ids, hook=hook)
    rows = torch.arange(len(batch))
    last = logits[rows, batch.last]  # (N, vocab)
    loss = task_loss_objective()(last, batch.target, batch.contrast, None)
    loss.backward()
    out = torch.zeros(space.num_nodes)
    for name, (x, probe) in acts.items():
        loc = locs[name]
        mean = values[loc.offset: loc.offset + loc.size]
        # Positions after a prompt's end do not reach its last-position logits, so they add nothing.
        out[loc.offset: loc.offset + loc.size] = (probe.grad * (x - mean)).sum(dim=(0, 1))
    return out


def test_eap_scores_are_gradient_times_activation_difference(bench):
    scorer = AttributionPatching(bench.evaluator.num_nodes)
    scorer.fit(GateGradients(bench.evaluator, bench.objective, batch_pairs=4, steps=1))
    direct = _direct_eap(bench)
    assert torch.allclose(scorer.effect, -direct, atol=1e-5, rtol=1e-3)
    assert torch.equal(scorer.scores(), scorer.effect.abs())


def test_integrated_gradients_are_complete(bench):
    """The signed IG effects sum to L(every node ablated) - L(unpruned), up to the quadrature error."""
    ev = bench.evaluator
    gradients = GateGradients(ev, bench.objective, batch_pairs=8, steps=64)
    scorer = AttributionPatchingIG(ev.num_nodes)
    scorer.fit(gradients)
    full, _ = gradients.value_and_grad(torch.ones(ev.num_nodes))
    ablated, _ = gradients.value_and_grad(torch.zeros(ev.num_nodes))
    assert float(scorer.effect.sum()) == pytest.approx(ablated - full, abs=0.02 * abs(ablated - full) + 1e-4)
    assert gradients.calls == 66


def test_scores_before_fit_fail_clearly():
    with pytest.raises(RuntimeError, match="before fit"):
        AttributionPatching(4).scores()


def test_a_pruned_circuit_says_its_scores_are_effects(bench):
    """The bench ranks CMD by |score| only for effect scores; the circuit carries which kind it has."""
    from circuitlab.config import PruneConfig
    from circuitlab.prune.search import TaskData, search_circuit

    config = PruneConfig(pruner="attribution", min_accuracy=0.0, target_loss=10.0, steps=2, random_draws=1)
    data = TaskData(train=bench.train, test=bench.test, values=bench.values)
    circuit = search_circuit(bench.model, data, config)
    assert circuit.effect_scores is True and circuit.to_json()["effect_scores"] is True
    mask = search_circuit(bench.model, data,
                          PruneConfig(pruner="heaviside", min_accuracy=0.0, target_loss=10.0, steps=2, random_draws=1))
    assert mask.effect_scores is False
