"""The example plugin: discovered through its entry point, and every kind passes circuitlab's contract checks."""

import attrs
from circuitlab_example import GeometricTopK, LoopSuite, STEMask, margin

from circuitlab import plugins
from circuitlab.config import TrainConfig
from circuitlab.testing import check_mask, check_objective, check_schedule, check_suite


def test_plugin_is_discovered_through_its_entry_point():
    registry = plugins.make_registry()
    for kind, name in (("sparsity", "topk_geometric"), ("pruner", "ste"), ("objective", "margin"),
                       ("suite", "loops")):
        # Qualified by the distribution: the name means this package's whatever else registers it.
        entry = registry.get(kind, f"circuitlab-example:{name}")
        assert entry.dist == "circuitlab-example" and entry.plugin == "circuitlab-example"


def test_every_kind_passes_its_contract(tiny):
    check_schedule(GeometricTopK, tiny=tiny)
    check_mask(STEMask, tiny=tiny)
    check_objective(margin)
    check_suite(LoopSuite)


def test_geometric_anneal_runs_from_dense_to_target():
    cfg = attrs.evolve(TrainConfig(), steps=100, density=0.01)
    sched = GeometricTopK(cfg)
    values = [sched.density_at(s) for s in range(100)]
    assert values[0] == 1.0 and abs(values[-1] - 0.01) < 1e-12
    assert abs(sched.density_at(round(0.255 * 100)) - 0.1) < 0.02  # halfway in log space
