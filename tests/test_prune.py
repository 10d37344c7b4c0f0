"""Unit tests of pruning: ablation, node means cache, masked forward, bisection, calibration, plugins."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from circuitlab import plugins  # noqa: E402
from circuitlab.config import ModelConfig, PruneConfig  # noqa: E402
from circuitlab.errors import CircuitlabError  # noqa: E402
from circuitlab.model import GPT  # noqa: E402
from circuitlab.model.nodes import NodeSpace, record_activations  # noqa: E402
from circuitlab.prune.ablation import ablation_hook, compute_node_means  # noqa: E402
from circuitlab.prune.circuit import geomean  # noqa: E402
from circuitlab.prune.evaluator import Evaluator  # noqa: E402
from circuitlab.prune.search import TaskData, fit_calibration, search_circuit, search_k  # noqa: E402
from circuitlab.tasks import TaskBatch, last_logits, loss_and_accuracy, task_accuracy, task_loss  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0, bigram=True):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=23, n_ctx=12, d_model=8, n_layer=2, n_head=2, d_head=4, d_mlp=16,
                      bigram_table=bigram, pos_emb=True)
    m = GPT(cfg).eval()
    if bigram:
        with torch.no_grad():
            m.bigram.normal_(0, 0.5)
    return m


def random_batch(n_pairs=6, seed=0, vocab=23, width=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (2 * n_pairs, width), generator=g)
    last = torch.randint(2, width, (2 * n_pairs,), generator=g)
    for i, t in enumerate(last.tolist()):
        ids[i, t + 1:] = 0
    target = torch.tensor([3, 4] * n_pairs)
    return TaskBatch(ids=ids, last=last, target=target, contrast=torch.tensor([4, 3] * n_pairs))


def test_evaluator_matches_the_full_forward_pass():
    """The last-position shortcut (no full unembedding) gives exactly the model's own logits."""
    m, b = tiny_model(), random_batch()
    means = compute_node_means(m, torch.randint(0, 23, (4, 12)))
    ev = Evaluator(m, b, means, chunk=5)
    with torch.no_grad():
        want = last_logits(m(b.ids)[0], b)
    n = NodeSpace.from_config(m.config).num_nodes
    torch.testing.assert_close(ev.reference, want)
    torch.testing.assert_close(ev.last_logits(torch.ones(n)), want)
    d = ev.diffs(torch.ones(n))
    loss, acc = loss_and_accuracy(d)
    assert math.isclose(loss, float(task_loss(want, b.target, b.contrast)), rel_tol=1e-5)
    assert acc == task_accuracy(want, b.target, b.contrast)


def test_freeze_norm_is_a_no_op_on_the_full_model_and_changes_pruned_ones():
    m, b = tiny_model(1), random_batch(seed=1)
    means = compute_node_means(m, torch.randint(0, 23, (4, 12)))
    n = NodeSpace.from_config(m.config).num_nodes
    free, frozen = Evaluator(m, b, means), Evaluator(m, b, means, freeze_norm=True)
    torch.testing.assert_close(frozen.last_logits(torch.ones(n)), free.last_logits(torch.ones(n)))
    half = (torch.arange(n) % 2).float()
    assert not torch.allclose(frozen.last_logits(half), free.last_logits(half))


def test_ablation_hook_sets_ablated_nodes_to_their_values_and_keeps_the_rest():
    m = tiny_model(2)
    space = NodeSpace.from_config(m.config)
    ids = torch.randint(0, 23, (3, 10))
    values = torch.randn(space.num_nodes)
    gate = (torch.rand(space.num_nodes, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    seen = torch.empty(3, 10, space.num_nodes)
    inner = ablation_hook(space, gate, values)
    locs = space.by_hook()

    def hook(name, x):
        x = inner(name, x)
        if name in locs:
            loc = locs[name]
            seen[:, :, loc.offset: loc.offset + loc.size] = x
        return x

    with torch.no_grad():
        m(ids, hook=hook)
        clean = record_activations(m, ids, space)
    off = gate == 0
    torch.testing.assert_close(seen[:, :, off], values[off].expand(3, 10, -1))
    # The first location's kept nodes see the clean activation (nothing upstream was ablated yet).
    first = space.locations[0]
    k = gate[: first.size] == 1
    torch.testing.assert_close(seen[:, :, : first.size][:, :, k], clean[:, :, : first.size][:, :, k])


def test_node_means_are_means_of_recorded_activations():
    m = tiny_model(3)
    ids = torch.randint(0, 23, (5, 12))
    means = compute_node_means(m, ids, batch_size=2)
    torch.testing.assert_close(means, record_activations(m, ids).mean(dim=(0, 1)), rtol=1e-4, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), m=st.integers(0, 500), start=st.integers(0, 600), grid=st.floats(1.05, 3.0))
def test_search_k_finds_the_threshold_of_a_monotone_loss(n, m, start, grid):
    calls = []

    def loss(k):
        calls.append(k)
        return 0.1 if k >= m else 1.0

    k, history = search_k(loss, n, start, 0.15, grid)
    if m > n:
        assert k is None and history[-1][0] == n
    else:
        assert k == m
    # every k evaluated once; a geometric walk plus a bisection, not a linear scan
    walk = 25 + 2 * math.ceil(math.log(n + 1) / math.log(grid))
    assert len(calls) == len(set(calls)) and len(calls) <= walk


def test_search_k_returns_only_evaluated_hits_when_loss_is_not_monotone():
    losses = {k: (0.1 if k in (5, 9) or k >= 40 else 0.9) for k in range(0, 61)}
    k, history = search_k(losses.__getitem__, 60, 12, 0.15)
    assert losses[k] <= 0.15 and (k, losses[k]) in history


def test_calibration_lowers_the_loss_of_a_biased_circuit():
    g = torch.Generator().manual_seed(0)
    sign = torch.tensor([1.0, -1.0] * 50)
    diff = 0.3 * torch.randn(100, generator=g) + 1.0 - 2.0 * (sign < 0).float()  # biased towards token A
    a, b = fit_calibration(diff, sign)
    assert loss_and_accuracy(diff, sign, (a, b))[0] < loss_and_accuracy(diff)[0] - 0.05


def test_registered_masks_follow_the_protocol():
    for name in ("heaviside", "hardconcrete", "sigmoid"):
        entry = plugins.get("pruner", name)
        mask = entry.factory(num_nodes=17, generator=torch.Generator().manual_seed(0))
        gate = mask.gate()
        assert gate.shape == (17,) and float(gate.detach().min()) >= 0 and float(gate.detach().max()) <= 1
        pen = mask.penalty()
        assert pen.dim() == 0
        (gate.sum() + pen).backward()
        assert all(p.grad is not None for p in mask.parameters())
        for p in mask.parameters():
            with torch.no_grad():
                p.add_(-50.0)
        mask.after_step(1.0)
        assert mask.scores().shape == (17,) and int((mask.scores() > 0).sum()) == 0
        assert entry.provenance()["dist"] == "circuitlab"


def test_heaviside_is_a_step_forward_and_clamps_tau():
    mask = plugins.get("pruner", "heaviside").factory(num_nodes=5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mask.tau.copy_(torch.tensor([-3.0, -0.2, 0.0, 0.2, 3.0]))
    assert mask.gate().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    mask.after_step(0.5)
    assert mask.tau.min() >= -1 and mask.tau.max() <= 1


def test_objectives_vanish_at_the_reference_and_binary_ce_is_the_task_loss():
    z = torch.randn(6, 23, generator=torch.Generator().manual_seed(0))
    t, c = torch.tensor([3, 4] * 3), torch.tensor([4, 3] * 3)
    assert abs(float(plugins.get("objective", "kl").factory()(z, t, c, z))) < 1e-6
    assert abs(float(plugins.get("objective", "logit_diff").factory()(z, t, c, z))) < 1e-6
    assert float(plugins.get("objective", "binary_ce").factory()(z, t, c, z)) == pytest.approx(
        float(task_loss(z, t, c)))
    worse = z.clone()
    worse[:, 3] -= 5 * (t == 3).float()
    assert float(plugins.get("objective", "logit_diff").factory()(worse, t, c, z)) > 0


@pytest.mark.parametrize("objective", ["kl", "logit_diff"])
def test_prune_task_with_other_objectives_is_reproducible(objective):
    m = tiny_model(4)
    means = compute_node_means(m, torch.randint(0, 23, (4, 12)))
    tr, te = random_batch(8, 5), random_batch(4, 6)
    cfg = PruneConfig(pruner="sigmoid", objective=objective, steps=15, target_loss=10.0, seed=3)
    a = search_circuit(m, TaskData(train=tr, test=te, values=means, task="t"), cfg)
    b = search_circuit(m, TaskData(train=tr, test=te, values=means, task="t"), cfg)
    assert a.node_names == b.node_names and a.loss == b.loss and a.reached
    assert a.edge_counts["total"] == len(a.edges)
    assert a.provenance["plugins"][1]["name"] == objective


def test_unreachable_target_reports_the_full_model():
    m = tiny_model(5)
    means = compute_node_means(m, torch.randint(0, 23, (4, 12)))
    c = search_circuit(m, TaskData(train=random_batch(8, 7), test=random_batch(4, 8), values=means, task="t"),
                       PruneConfig(pruner="heaviside", steps=5, target_loss=1e-9))
    assert not c.reached
    assert c.node_count == c.total_nodes
    assert c.loss == pytest.approx(c.full_model_loss)
    row = c.row()
    assert row["reached"] is False and row["nodes"] == c.total_nodes
    # The unpruned model misses the target: k = 0 and the mask's own set are checked, no walk up to the
    # whole model; each retry (a smaller penalty keeps more nodes, which can beat the model) does the same.
    assert c.bisection[0][0] == 0 and c.bisection[-1] == (c.total_nodes, c.train_loss) and len(c.bisection) <= 3
    attempts = c.provenance["attempts"]
    assert len(attempts) == 3 and all(a["k"] is None and a["evaluations"] <= 3 for a in attempts)


@pytest.mark.parametrize("freeze_norm", [False, True])
def test_full_diffs_are_exactly_the_all_ones_gate(freeze_norm):
    """The bisection reads the unpruned model's loss from the reference: bit for bit the k = N pass."""
    m, b = tiny_model(3), random_batch(seed=3)
    means = compute_node_means(m, torch.randint(0, 23, (4, 12)))
    ev = Evaluator(m, b, means, freeze_norm=freeze_norm, chunk=5)
    n = NodeSpace.from_config(m.config).num_nodes
    assert torch.equal(ev.full_diffs(), ev.diffs(torch.ones(n)))


def test_search_k_does_not_walk_up_when_the_full_model_misses():
    calls = []
    k, history = search_k(lambda k: calls.append(k) or 0.9, 50, 3, 0.15, full=0.2)
    assert k is None and history == [(0, 0.9), (3, 0.9), (50, 0.2)] and calls == [0, 3]
    # A mask's own set can beat the unpruned model: then the bisection runs below it as usual.
    k, history = search_k(lambda k: 0.1 if 2 <= k <= 10 else 0.9, 50, 10, 0.15, full=0.2)
    assert k == 2 and (50, 0.2) not in history
    calls.clear()
    k, history = search_k(lambda k: calls.append(k) or (0.1 if k >= 7 else 0.9), 50, 3, 0.15, full=0.1)
    assert k == 7 and 50 not in calls  # a full model that reaches the target changes nothing


def test_zero_ablation_and_calibration_run():
    m = tiny_model(6)
    n = NodeSpace.from_config(m.config).num_nodes
    c = search_circuit(m, TaskData(train=random_batch(8, 9), test=random_batch(4, 10), values=torch.zeros(n), task="t"),
                       PruneConfig(pruner="heaviside", steps=10, calibrate=True, target_loss=0.6))
    assert c.calibration is not None and set(c.calibration) == {"scale", "shift"}
    if c.reached:
        assert c.train_loss <= 0.6


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_target_is_rejected(bad):
    with pytest.raises(CircuitlabError):
        PruneConfig(target_loss=bad)


def test_geomean():
    assert geomean([]) is None
    assert geomean([4, 16]) == pytest.approx(8.0)
    assert geomean([0, 1]) == pytest.approx(1.0)


def _doc_example(heading: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_plugin_doc_examples_work_end_to_end():
    """The minimal mask and objective plugins in docs/plugins.md register and prune the planted model."""
    import types

    from tests.test_planted import PLANTED, build_planted, corpus_windows, make_batch

    mods = []
    for i, heading in enumerate(("## Pruners", "## Pruning objectives")):
        mod = types.ModuleType(f"doc_example_{i}")
        exec(compile(_doc_example(heading), f"docs/plugins.md:{heading}", "exec"), mod.__dict__)
        mods.append(mod)
    reg = plugins.make_registry(extra_plugins=tuple(mods), entrypoints=False)
    mask_entry, objective_entry = reg.get("pruner", "ste"), reg.get("objective", "margin")
    assert mask_entry.dist == "(in-process)"
    model = build_planted()
    means = compute_node_means(model, corpus_windows())
    c = search_circuit(model, TaskData(train=make_batch(64, 1), test=make_batch(32, 2), values=means, task="planted"),
                       PruneConfig(pruner="ste", objective="margin"), mask_entry=mask_entry,
                       objective_entry=objective_entry)
    assert c.reached and c.loss <= 0.15
    assert len(set(c.node_names) ^ PLANTED) <= 2
    assert [p["name"] for p in c.provenance["plugins"]] == ["ste", "margin"]


def test_node_means_are_cached_in_the_run_folder(tiny_run, tmp_path, monkeypatch):
    import shutil

    from safetensors import safe_open

    import circuitlab.prune.ablation as ablation
    from circuitlab.train.runs import load_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(ablation.MEANS_FILE))
    model, tok, info = load_model(run)
    first = ablation.node_means(model, tok, info, n_windows=4, window=16)
    assert first.shape == (NodeSpace.from_config(model.config).num_nodes,)
    with safe_open(str(run / ablation.MEANS_FILE), framework="pt") as f:
        (key,) = list(f.keys())
        assert "corpus-" in key and ".w-" in key and json_loads(f.metadata()[key])["split"] == "val"

    def boom(*a, **k):
        raise AssertionError("recomputed cached means")

    monkeypatch.setattr(ablation, "compute_node_means", boom)
    torch.testing.assert_close(ablation.node_means(model, tok, info, n_windows=4, window=16), first)
    monkeypatch.undo()
    # Other windows, or other weights, are another key: computed and added next to the first.
    ablation.node_means(model, tok, info, n_windows=2, window=16)
    with safe_open(str(run / ablation.MEANS_FILE), framework="pt") as f:
        assert len(list(f.keys())) == 2
    zero = ablation.ablation_values(model, tok, info, "zero")
    assert float(zero.abs().sum()) == 0.0
    with pytest.raises(CircuitlabError, match="ablation"):
        PruneConfig(ablation="resample")  # the one check of the ablation name, on the record


def json_loads(s):
    import json

    return json.loads(s)


@pytest.mark.parametrize("pruner", ["heaviside", "hardconcrete"])
def test_patience_stops_mask_training_once_the_kept_set_holds(pruner):
    """Early stopping: the last recorded step is the one after which the kept set held ``patience`` steps."""
    from circuitlab.prune.evaluator import Evaluator as Ev
    from circuitlab.prune.search import MaskTraining, train_mask

    m = tiny_model(6)
    means = compute_node_means(m, torch.randint(0, 23, (4, 12)))
    for p in m.parameters():
        p.requires_grad_(False)
    ev = Ev(m.eval(), random_batch(8, 11), means)
    objective = plugins.get("objective", "binary_ce").factory()
    entry = plugins.get("pruner", pruner)

    def train(patience):
        mask = entry.factory(ev.num_nodes, generator=torch.Generator().manual_seed(0))
        kept = []
        after = mask.after_step

        def record(progress):
            after(progress)
            kept.append(mask.scores() > 0)

        mask.after_step = record
        history = train_mask(ev, mask, objective, MaskTraining(steps=300, lr=mask.lr, coef=mask.penalty_coef,
                                                               batch_pairs=4, patience=patience),
                             torch.Generator().manual_seed(1))
        return history, kept

    full, every = train(0)
    assert full[-1][0] == 299

    def settled(s, p=8):  # the set changed at some step j <= s - p, then held through steps s - p ... s
        return (all(torch.equal(every[s - i], every[s]) for i in range(p + 1))
                and any(not torch.equal(every[j], every[j - 1]) for j in range(1, s - p + 1)))

    want = next(s for s in range(8, 300) if settled(s))
    history, kept = train(8)
    assert history[-1][0] == want < 299 and len(kept) == want + 1
    assert all(torch.equal(a, b) for a, b in zip(kept, every, strict=False))  # the same steps until the stop


def test_a_run_without_a_tokenizer_loads_for_logits_and_is_refused_for_text(tiny_run, tmp_path):
    """An imported checkpoint may come without a tokenizer: logits from token ids need none, while a
    caller that turns text into ids (pruning, recording) gets one line saying how to supply one."""
    import shutil

    from circuitlab.prune import LoadedModel
    from circuitlab.train.runs import TOKENIZER, load_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(TOKENIZER, "node_means*"))
    model, tok, _ = load_model(run)
    assert tok is None
    logits, _ = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.shape[-1] == model.config.vocab_size
    with pytest.raises(CircuitlabError, match="has no tokenizer.json"):
        load_model(run, need_tokenizer=True)
    with pytest.raises(CircuitlabError, match="has no tokenizer.json"):
        LoadedModel.load(run)
