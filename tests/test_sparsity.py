"""Invariants of the sparsity helpers and schedules (hypothesis)."""

from __future__ import annotations

import attrs
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuitlab import plugins
from circuitlab.config import TrainConfig
from circuitlab.train.sparsity import _topk_indices, kept_count, topk_mask

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))


@given(shape=shapes, density=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
def test_topk_keeps_exactly_k_largest(shape, density, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    k = kept_count(w.numel(), density)
    mask = topk_mask(w, k)
    assert int(mask.sum()) == k
    kept, dropped = w.abs()[mask], w.abs()[~mask]
    if dropped.numel():
        assert kept.min() >= dropped.max()


@given(rows=st.integers(128, 600), density=st.floats(0.001, 0.25), seed=st.integers(0, 2**16),
       zero_frac=st.sampled_from([0.0, 0.5, 0.97]), ties=st.booleans())
def test_large_topk_takes_the_candidate_path_and_stays_exact(rows, density, seed, zero_frac, ties):
    # >= 32768 entries: the sampled-threshold path. Zeros and rounded values make ties at the threshold.
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, 256, generator=g)
    w[torch.rand(rows, 256, generator=g) < zero_frac] = 0.0
    if ties:
        w = (w * 4).round() / 4
    k = kept_count(w.numel(), density)
    mask = topk_mask(w, k)
    assert int(mask.sum()) == k
    kept, dropped = w.abs()[mask], w.abs()[~mask]
    assert kept.min() >= dropped.max()
    # The same multiset of kept magnitudes as a plain full topk.
    expected = w.abs().flatten().topk(k).values
    assert torch.equal(kept.sort().values, expected.sort().values)


@given(n=st.integers(32768, 140000), k_frac=st.floats(0.00001, 0.25), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["inf_and_minus_one", "striped_columns", "all_equal", "few_values"]))
def test_topk_indices_match_a_full_topk_on_awkward_scores(n, k_frac, seed, kind):
    # Scores as topk_mask builds them: +inf for protected entries, -1 for disallowed ones; periodic
    # stripes that a strided sample could misjudge; and heavy ties, which take the fallback branches.
    g = torch.Generator().manual_seed(seed)
    flat = torch.rand(n, generator=g)
    if kind == "inf_and_minus_one":
        r = torch.rand(n, generator=g)
        flat[r < 0.3] = -1.0
        flat[r > 0.97] = float("inf")
    elif kind == "striped_columns":
        flat[::32] += 10.0
    elif kind == "all_equal":
        flat[:] = 0.5
    else:
        flat = (flat * 3).floor()
    k = max(1, int(k_frac * n))
    idx = _topk_indices(flat, k)
    assert idx.numel() == k and idx.unique().numel() == k
    assert torch.equal(flat[idx].sort().values, flat.topk(k).values.sort().values)


def test_topk_indices_with_nan_behave_like_torch_topk():
    flat = torch.rand(40000)
    flat[[3, 500, 39999]] = float("nan")
    assert set(_topk_indices(flat, 100).tolist()) == set(flat.topk(100).indices.tolist())


@given(shape=shapes, density=st.floats(0.01, 1.0), seed=st.integers(0, 2**16), dim=st.sampled_from([0, 1]),
       min_per=st.integers(1, 6))
def test_topk_with_neuron_minimum_keeps_k_and_protects_each_neuron(shape, density, seed, dim, min_per):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    k = kept_count(w.numel(), density)
    mask = topk_mask(w, k, neuron_dim=dim, min_per_neuron=min_per)
    assert int(mask.sum()) == k
    n_neurons = w.shape[1 - dim]
    guaranteed = min(min_per, w.shape[dim], k // n_neurons)
    assert int(mask.sum(dim=dim).min()) >= guaranteed


@given(rows=st.integers(2, 300), cols=st.integers(2, 300), density=st.floats(0.005, 0.5), seed=st.integers(0, 2**16),
       dim=st.sampled_from([0, 1]), min_per=st.integers(1, 6), quiet=st.floats(0.0, 0.9))
def test_neuron_minimum_from_the_plain_topk_is_the_protect_first_mask(rows, cols, density, seed, dim, min_per, quiet):
    """The shortcut (plain top-k, then fix the rows short of their minimum) keeps exactly the entries of
    the protect-every-neuron-first algorithm (reached here through an all-True ``allowed``). Some
    neurons are scaled down, so they need protecting; continuous values leave no ties."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    weak = torch.rand(w.shape[1 - dim], generator=g) < quiet  # neurons far below the others
    w = w * torch.where(weak, 1e-3, 1.0).unsqueeze(dim)
    k = kept_count(w.numel(), density)
    quick = topk_mask(w, k, neuron_dim=dim, min_per_neuron=min_per)
    first = topk_mask(w, k, neuron_dim=dim, min_per_neuron=min_per, allowed=torch.ones_like(w, dtype=torch.bool))
    assert torch.equal(quick, first)


@settings(max_examples=300)
@given(rows=st.integers(2, 12), cols=st.integers(2, 12), density=st.floats(0.05, 0.9), seed=st.integers(0, 2**16),
       dim=st.sampled_from([0, 1]), min_per=st.integers(1, 4), levels=st.integers(2, 5), zeros=st.floats(0.0, 0.8))
def test_neuron_minimum_shortcut_keeps_the_same_magnitudes_under_ties(rows, cols, density, seed, dim, min_per,
                                                                        levels, zeros):
    """Few distinct values and many zeros: where ties leave a choice, the shortcut keeps the same
    magnitudes as protecting every neuron first (each a valid answer), k of them, each neuron's minimum."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, levels, (rows, cols), generator=g).float() * torch.where(
        torch.rand(rows, cols, generator=g) < zeros, 0.0, 1.0)
    k = kept_count(w.numel(), density)
    quick = topk_mask(w, k, neuron_dim=dim, min_per_neuron=min_per)
    first = topk_mask(w, k, neuron_dim=dim, min_per_neuron=min_per, allowed=torch.ones_like(w, dtype=torch.bool))
    assert int(quick.sum()) == k
    assert torch.equal(w.abs()[quick].sort().values, w.abs()[first].sort().values)
    guaranteed = min(min_per, w.shape[dim], k // w.shape[1 - dim])
    assert int(quick.sum(dim=dim).min()) >= guaranteed


@given(steps=st.integers(2, 400), density=st.floats(0.001, 1.0), name=st.sampled_from(["dense", "topk", "gmp"]))
def test_schedules_are_monotone_and_end_at_target(steps, density, name):
    cfg = attrs.evolve(TrainConfig(), steps=steps, density=density)
    schedule = plugins.get("sparsity", name).factory(cfg)
    values = [schedule.density_at(s) for s in range(steps + 1)]
    assert all(0.0 < v <= 1.0 for v in values)
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:], strict=False))
    assert values[0] == 1.0
    expected_end = 1.0 if name == "dense" else density
    assert abs(schedule.density_at(steps) - expected_end) < 1e-9


def test_gmp_mask_is_permanent():
    from circuitlab.config import ModelConfig
    from circuitlab.model import GPT

    cfg = attrs.evolve(TrainConfig(), steps=10, density=0.25, anneal_start_frac=0.0, anneal_end_frac=0.5)
    model = GPT(ModelConfig(vocab_size=50, n_ctx=8, d_model=16, n_layer=1, n_head=1, d_mlp=32))
    schedule = plugins.get("sparsity", "gmp").factory(cfg)
    w = model.blocks[0].mlp.c_fc.weight
    with torch.no_grad():
        schedule.apply(model, 3)
        pruned = w == 0
        w.add_(1.0)  # an update that would revive every pruned weight
        schedule.apply(model, 4)
    assert bool((w[pruned] == 0).all())
    state = schedule.state_dict()
    fresh = plugins.get("sparsity", "gmp").factory(cfg)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.masks[k], schedule.masks[k]) for k in schedule.masks)
