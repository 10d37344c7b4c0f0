import attrs

from circuitlab import plugins
from circuitlab.config import TrainConfig


def test_plugin_is_discovered_through_its_entry_point():
    registry = plugins.make_registry()
    entry = registry.get("sparsity", "topk_geometric")
    assert entry.dist == "circuitlab-example"
    assert entry.plugin == "circuitlab-example"


def test_geometric_anneal_runs_from_dense_to_target():
    from circuitlab_example import GeometricTopK

    cfg = attrs.evolve(TrainConfig(), steps=100, density=0.01)
    sched = GeometricTopK(cfg)
    values = [sched.density_at(s) for s in range(100)]
    assert values[0] == 1.0 and abs(values[-1] - 0.01) < 1e-12
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert abs(sched.density_at(round(0.255 * 100)) - 0.1) < 0.02  # halfway in log space
