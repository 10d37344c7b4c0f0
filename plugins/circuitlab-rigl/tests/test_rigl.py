"""RigL against the schedule contract (circuitlab.testing) and against the algorithm's own rules."""

from __future__ import annotations

import math

import pytest
import torch
from circuitlab_rigl import RigL, update_fraction

from circuitlab import plugins
from circuitlab.sparsity import kept_count, sparse_parameters
from circuitlab.testing import check_schedule


def test_rigl_passes_the_schedule_contract(tiny):
    report = check_schedule(RigL, tiny=tiny, name="rigl")
    assert report.passed and len(report.results) == 6


def test_rigl_is_discovered_through_its_entry_point():
    entry = plugins.make_registry().get("sparsity", "rigl")
    assert entry.dist == "circuitlab-rigl" and entry.plugin == "circuitlab-rigl" and entry.factory is RigL


def test_update_fraction_decays_on_a_cosine_to_zero():
    assert update_fraction(0, 100, 0.3) == pytest.approx(0.3)
    assert update_fraction(50, 100, 0.3) == pytest.approx(0.15)
    assert update_fraction(99, 100, 0.3) == pytest.approx(0.15 * (1 + math.cos(math.pi * 0.99)))
    assert update_fraction(100, 100, 0.3) == 0.0


def _step(model, schedule, step, tiny):
    """One real forward/backward, then apply (as circuitlab's loop does after the optimizer step)."""
    x, y = tiny.batch(step)
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    with torch.no_grad():
        schedule.apply(model, step)


def test_density_is_exact_and_fixed_while_the_topology_changes(tiny, tiny_config):
    config = tiny_config
    schedule = RigL(config)
    model = tiny.model(0)
    _step(model, schedule, 0, tiny)
    first = {name: mask.clone() for name, mask in schedule.masks.items()}
    for sp in sparse_parameters(model):
        assert int(schedule.masks[sp.name].sum()) == kept_count(sp.param.numel(), config.density)
        assert int((sp.param != 0).sum()) <= kept_count(sp.param.numel(), config.density)
    update = schedule.update_every
    for step in range(1, update + 1):
        _step(model, schedule, step, tiny)
    changed = 0
    for sp in sparse_parameters(model):
        mask = schedule.masks[sp.name]
        assert int(mask.sum()) == kept_count(sp.param.numel(), config.density)  # density unchanged
        changed += int((mask & ~first[sp.name]).sum())
    assert changed > 0  # the update moved connections


def test_drop_by_magnitude_and_grow_by_gradient():
    """A 1 x 10 parameter with 4 active weights: the smallest active |w| goes, the largest inactive |grad| comes."""
    config = type("Config", (), {"density": 0.4, "steps": 100, "seed": 0})()
    schedule = RigL(config)
    w = torch.nn.Parameter(torch.tensor([[5.0, 0.1, 3.0, 4.0, 0, 0, 0, 0, 0, 0]]))
    w.grad = torch.tensor([[0.0, 0, 0, 0, 0.5, 9.0, 0.2, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, True] + [False] * 6])
    with torch.no_grad():
        new = schedule._update(w, mask, fraction=0.25)  # k = 1 of 4 active
    assert new.tolist() == [[True, False, True, True, False, True, False, False, False, False]]
    assert float(w.detach()[0, 5]) == 0.0  # grown connections start at zero


def test_no_updates_after_end_fraction(tiny_config):
    schedule = RigL(tiny_config)
    assert not schedule.is_update_step(0)
    assert not any(schedule.is_update_step(s) for s in range(schedule.t_end, tiny_config.steps))
    assert schedule.density_at(0) == schedule.density_at(tiny_config.steps - 1) == tiny_config.density
