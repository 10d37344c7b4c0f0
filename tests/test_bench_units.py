"""Pieces of the bench, fast: spec checks, plan, MIB areas, nonsense pairs, task-mean ablation, all edges,
the random-init run, the matched-loss interpolation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from circuitlab.bench.analysis import TARGET_MARGIN, enters, matched_loss
from circuitlab.bench.controls import control_summary
from circuitlab.bench.plan import cells_for, model_specs
from circuitlab.bench.spec import load_spec, parse_spec
from circuitlab.errors import CircuitlabError
from circuitlab.prune.faithfulness import MIB_FRACTIONS, area_from_1, area_under
from circuitlab.tasks import PromptPair, nonsense_pairs

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "benchmarks").glob("*.toml"))


def quick() -> dict:
    return tomllib.loads((ROOT / "benchmarks" / "quick.toml").read_text())


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_loads(path: Path):
    spec = load_spec(path)
    assert spec.name == path.stem and model_specs(spec)


@pytest.mark.parametrize(("change", "key"), [
    (lambda d: d["models"][1].update(densities=[2.0]), "models[1].densities[0]"),
    (lambda d: d["models"][0].update(preset="huge"), "models[0].preset"),
    (lambda d: d["models"][0].update(widths=[40]), "models[0].widths[0]"),
    (lambda d: d["models"][0].update(seeds=[0, 0]), "models[0].seeds"),
    (lambda d: d["models"][0].update(sparsity="topkk"), "models[0].sparsity"),
    (lambda d: d["prune"].update(pruners=["hardconcret"]), "prune.pruners[0]"),
    (lambda d: d["prune"].update(target_los=0.1), "prune.target_los"),
    (lambda d: d["prune"].update(n_test="many"), "prune.n_test"),
    (lambda d: d["prune"].pop("pruners"), "prune.pruners"),
    (lambda d: d["tasks"].update({"python:if_equals": "0" * 64}), 'tasks."python:if_equals"'),
    (lambda d: d["tasks"].update({"python:no_such_task": "0" * 64}), 'tasks."python:no_such_task"'),
    (lambda d: d["controls"].update(groups=["sparse"]), "controls.groups"),
    (lambda d: d["controls"].update(ablations=["median"]), "controls.ablations[0]"),
    (lambda d: d.pop("models"), "models"),
    (lambda d: d.update(extra=1), "extra"),
])
def test_spec_errors_are_one_line_naming_the_key(change, key):
    data = copy.deepcopy(quick())
    change(data)
    with pytest.raises(CircuitlabError) as err:
        spec = parse_spec(data, "quick.toml")
        from circuitlab.bench.spec import _check_plugins

        _check_plugins(spec)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"quick.toml: {key}"), message


def test_a_bad_spec_exits_2_with_one_line(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "benchmarks" / "quick.toml").read_text().replace("target_loss = 0.15", "target_loss = -1"))
    proc = run_cli("bench", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "prune.target_loss: must be > 0" in proc.stderr
    proc = run_cli("bench", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_gives_controls_to_the_first_seed_of_the_scoped_groups_only():
    spec = parse_spec(quick(), "quick.toml")
    models = {m.model_id: m for m in model_specs(spec)}
    topk0, topk1, dense = (models[k] for k in ("topk-d0.5-w32-n300-s0", "topk-d0.5-w32-n300-s1",
                                               "dense-d1-w32-n150-s0"))
    task = "python:else_elif"
    assert {c.control for c in cells_for(spec, topk0, [task])} == {
        "none", "nonsense", "freeze_norm", "ablation-zero", "ablation-task_mean"}
    assert {c.control for c in cells_for(spec, topk1, [task])} == {"none"}
    assert {c.control for c in cells_for(spec, dense, [task])} == {"none"}
    (init,) = [m for m in models.values() if m.kind == "init"]
    assert init.twin == topk0.model_id and [c.control for c in cells_for(spec, init, [], [task])] == ["random_init"]
    ids = [c.cell_id for m in models.values() for c in cells_for(spec, m, [task], [task])]
    assert len(ids) == len(set(ids))
    data = copy.deepcopy(quick())
    data["prune"]["seeds"] = [0, 1, 2]
    data["controls"]["seeds"] = 2  # control cells on the first two pruning seeds
    two = parse_spec(data, "quick.toml")
    seeds = [(c.control, c.seed) for c in cells_for(two, topk0, [task]) if c.control != "none"]
    assert sorted(seeds) == sorted((ctl, s) for ctl in ("nonsense", "freeze_norm", "ablation-zero",
                                                         "ablation-task_mean") for s in (0, 1))
    assert [c.seed for c in cells_for(two, init, [], [task])] == [0, 1]


@given(st.lists(st.floats(-5, 5), min_size=10, max_size=10))
def test_mib_areas(f):
    x = MIB_FRACTIONS
    assert area_under(x, [1.0] * 10) == pytest.approx(0.999)
    assert area_from_1(x, [1.0] * 10) == 0
    assert area_from_1(x, f) >= 0
    assert area_under(x, f) + area_under(x, [1 - v for v in f]) == pytest.approx(0.999)


def test_nonsense_pairs_keep_prompts_and_relabel_by_one_consistent_rule():
    pairs = [PromptPair(prompt_a=f"if name_{i % 40} == 1", prompt_b=f"b{i}", token_a="x", token_b="y") for i in range(400)]
    flipped = nonsense_pairs(pairs, seed=3)
    assert flipped == nonsense_pairs(pairs, seed=3) and flipped != nonsense_pairs(pairs, seed=4)
    assert [(p.prompt_a, p.prompt_b) for p in flipped] == [(p.prompt_a, p.prompt_b) for p in pairs]
    swapped = sum(p.token_a == "y" for p in flipped)
    assert all({p.token_a, p.token_b} == {"x", "y"} for p in flipped) and 100 < swapped < 300
    label = {}  # one label per last word, across all pairs (and so across the train and test splits)
    for p in flipped:
        assert label.setdefault(p.prompt_a.split()[1], p.token_a) == p.token_a


def test_task_mean_all_edges_and_the_untrained_run(tiny_run: Path, tmp_path: Path, one_thread):
    import torch

    from circuitlab.model.nodes import NodeSpace, record_activations
    from circuitlab.prune.ablation import task_mean_values
    from circuitlab.prune.edges import all_edges, count_edges, edge_list
    from circuitlab.tasks import encode_pairs
    from circuitlab.train import init_run, load_model, read_run

    model, tok, info = load_model(tiny_run)
    pairs = [PromptPair(prompt_a="if x", prompt_b="for x in", token_a=":", token_b=" range")] * 2
    batch = encode_pairs(pairs, tok, max_len=model.config.n_ctx)
    acts = record_activations(model, batch.ids)  # (rows, T, nodes)
    valid = torch.arange(batch.ids.shape[1])[None, :] <= batch.last[:, None]
    torch.testing.assert_close(task_mean_values(model, batch), acts[valid].mean(0), rtol=1e-4, atol=1e-5)

    kept = torch.ones(NodeSpace.from_config(model.config).num_nodes, dtype=torch.bool)
    src, dst = all_edges(model)
    assert list(zip(src.tolist(), dst.tolist(), strict=True)) == edge_list(model, kept)
    assert len(src) == count_edges(model, kept)["total"]

    out = init_run(info.train, tmp_path / "init", model_config=info.model)
    untrained = read_run(out)
    assert untrained.meta["final"]["untrained"] and untrained.meta["final"]["steps"] == 0
    assert untrained.meta["final"]["val_loss"] > info.meta["final"]["val_loss"]


def _row(model_id, sparsity, val_loss, task, nodes, seed=0, train_seed=0, steps=1, **extra):
    return {"cell_id": f"{model_id}.{task}.{seed}", "model_id": model_id, "group": sparsity, "kind": "trained",
            "sparsity": sparsity, "density": 1.0 if sparsity == "dense" else 0.25, "width": 32, "train_steps": steps,
            "train_seed": train_seed, "val_loss": val_loss, "twin": None, "task": task, "pruner": "p",
            "objective": "o", "control": "none", "prune_seed": seed, "status": "done", "reached": True,
            "full_model_accuracy": 1.0, "full_model_loss": 0.02, "target_loss": 0.15, "nodes": nodes,
            "edges": 10 * nodes, **extra}


def test_matched_loss_fits_log_size_and_compares_inside_the_overlap_only():
    # Dense: log size linear in loss over two step budgets; sparse: one budget, 10x smaller at its loss.
    def dense_size(loss):
        return 1000 * math.exp(-3 * (loss - 4))

    rows = [_row(f"dense-{n}-{s}", "dense", loss, t, dense_size(loss), train_seed=s, steps=n)
            for n, loss in ((1, 4.0), (2, 5.0)) for s in (0, 1) for t in ("a", "b")]
    rows += [_row(f"sparse-{s}", "topk", loss, t, dense_size(4.5) / 10, train_seed=s)
             for s, loss in ((0, 4.4), (1, 4.6)) for t in ("a", "b")]
    (line,) = matched_loss(rows, n_boot=200)
    assert line["node_ratio"] == pytest.approx(10, rel=1e-6) and line["edge_ratio"] == pytest.approx(10, rel=1e-6)
    assert line["node_per_task"]["a"]["overlap"] == pytest.approx([4.4, 4.6])  # the sparse range inside the dense
    assert line["node_interval"][0] <= 10 + 1e-6 <= line["node_interval"][1] and line["sparse_worse"] == []
    bigger = [r | {"nodes": r["nodes"] * 20, "edges": r["edges"] * 20} if r["group"] == "topk" else r for r in rows]
    (line,) = matched_loss(bigger, n_boot=10)
    assert line["node_ratio"] == pytest.approx(0.5) and line["sparse_worse"] == ["a", "b"]
    far = [r | {"val_loss": r["val_loss"] + 2} if r["group"] == "topk" else r for r in rows]
    (line,) = matched_loss(far, n_boot=10)  # no overlap: no ratio, never an extrapolation
    assert line["node_ratio"] is None and line["node_interval"] is None and "no overlap" in line["status"][0]


def _seeded(dense_spread: float) -> list[dict]:
    """Two dense seeds whose sizes differ by the factor ``dense_spread`` (1: they agree), three tasks."""
    rows = []
    for t, base in (("a", 300), ("b", 500), ("c", 400)):
        for s in (0, 1, 2):
            size = base * dense_spread ** (s - 1)
            rows += [_row(f"dense-{n}-{s}", "dense", loss, t, size * (1.1 if n == 2 else 1), seed=p,
                          train_seed=s, steps=n) for n, loss in ((1, 3.8), (2, 3.4)) for p in (0, 1)]
            rows += [_row(f"sparse-{s}", "topk", 3.6 + 0.01 * s, t, base / 4 * (1 + 0.02 * p), seed=p,
                          train_seed=s) for p in (0, 1)]
    return rows


def test_dense_seeds_that_differ_widen_the_interval():
    (agree,) = matched_loss(_seeded(1.0), n_boot=1000)
    (differ,) = matched_loss(_seeded(2.0), n_boot=1000)
    width = [math.log(x["node_interval"][1] / x["node_interval"][0]) for x in (agree, differ)]
    assert width[1] > 3 * width[0] and agree["dense_seeds"] == differ["dense_seeds"] == 3


def test_a_cell_whose_full_model_misses_the_target_is_left_out():
    rows = _seeded(1.0)
    missing = [r | {"full_model_loss": 0.14} if r["model_id"] == "sparse-0" and r["task"] == "a" else r
               for r in rows]  # below the target 0.15, but not by the margin
    (line,) = matched_loss(missing, n_boot=10)
    assert line["left_out"] == {"full model not below target - margin": 2} and line["margin"] == TARGET_MARGIN
    assert enters(missing[0]) is None
    assert enters(_row("m", "topk", 3.0, "a", 10, full_model_loss=0.14)) == "full model not below target - margin"
    assert matched_loss(missing, n_boot=10, margin=None)[0]["left_out"] == {}
    every = [r | {"full_model_loss": 0.2} if r["group"] == "topk" else r for r in rows]  # the model misses it
    (line,) = matched_loss(every, n_boot=10)
    assert line["node_ratio"] is None and line["left_out"] == {"full model not below target - margin": 18}


def test_an_unreached_control_never_enters_a_ratio():
    real = _row("m", "topk", 3.6, "a", 40) | {"loss": 0.1, "k": 40, "train_loss": 0.12}
    ctl = [real | {"cell_id": f"c{i}", "control": c, "reached": reached, "nodes": 900 if not reached else 60,
                   "edges": 9000, "loss": 1.2, "k": 900, "train_loss": 0.9}
           for i, (c, reached) in enumerate((("nonsense", False), ("freeze_norm", True)))]
    summary = {c["control"]: c for c in control_summary([real, *ctl])}
    assert summary["nonsense"]["node_ratio"] is None and summary["nonsense"]["in_ratio"] == 0
    assert summary["nonsense"]["not_reached"] == [{"task": "a", "model_id": "m", "k": 900, "train_loss": 0.9,
                                                   "test_loss": 1.2, "best": [900, 0.9], "size_loss_curve": []}]
    searched = [real, ctl[0] | {"bisection": [[900, 0.9], [300, 1.4], [600, 0.8]]}]
    (nonsense,) = control_summary(searched)
    assert nonsense["not_reached"][0]["best"] == [600, 0.8] and nonsense["best_train_loss_not_reached"] == 0.8
    assert nonsense["not_reached"][0]["size_loss_curve"] == [[300, 1.4], [600, 0.8], [900, 0.9]]
    assert summary["freeze_norm"]["node_ratio"] == pytest.approx(60 / 40)


def test_seed_sets_compare_the_nodes_each_pruning_seed_keeps_and_the_report_shows_them(tmp_path: Path):
    from circuitlab.bench.controls import interchange_summary, seed_sets
    from circuitlab.bench.report import write_report
    from circuitlab.bench.table import RESULTS, read_table, write_table

    kept = {(0, 0): ["a", "b", "c"], (0, 1): ["a", "b", "d"], (0, 2): ["a", "e"], (1, 0): ["x"], (1, 1): ["x"]}
    rows = [_row(f"topk-{ts}", "topk", 3.6, "t", len(names), seed=ps, train_seed=ts, kept_nodes=names,
                 interchange_accuracy=0.8, interchange_shift=2.0, random_interchange_accuracy=0.1 * (ps + 1), loss=0.1)
            for (ts, ps), names in kept.items()]
    rows.append(_row("topk-2", "topk", 3.6, "t", 5, kept_nodes=None, loss=0.1))  # a table without node names
    rows.append(_row("topk-1", "topk", 3.6, "t", 2944, seed=2, reached=False, kept_nodes=None, loss=0.3))
    (line,) = seed_sets(rows)
    # Model 0: Jaccards 2/4, 1/4, 1/4; core {a, b} (kept by >= half of 3 seeds), union {a..e}. Model 1: 1, {x}, {x}.
    assert line["models"] == 2 and line["seeds"] == [2, 3]
    assert line["jaccard_mean"] == pytest.approx(((0.5 + 0.25 + 0.25) / 3 + 1.0) / 2)
    assert line["jaccard_min"] == 0.25 and line["core_mean"] == 1.5 and line["union_mean"] == 3.0
    (swap,) = interchange_summary(rows)
    assert swap["cells"] == 5 and swap["accuracy"] == pytest.approx(0.8) and swap["above_random"] == 5
    write_table(tmp_path / RESULTS, rows)
    assert read_table(tmp_path / RESULTS)[0]["kept_nodes"] == ["a", "b", "c"]  # a JSON column, read back
    doc = write_report(tmp_path, n_boot=10)
    report = (tmp_path / "report.md").read_text()
    assert doc["seed_sets"][0]["union_mean"] == 3.0
    assert "## Circuits across pruning seeds (which nodes)" in report and "## Interchange" in report


def test_prune_pipeline_runs_the_nonsense_control_with_task_mean_ablation(tiny_run: Path, tmp_path: Path):
    from circuitlab.config import PruneConfig
    from circuitlab.prune.pipeline import prune_model

    base = dict(pruner="heaviside", tasks="python:else_elif", min_accuracy=0.0, steps=10, n_train=16, n_test=8,
                retries=0)
    real = prune_model(tiny_run, PruneConfig(**base), tmp_path / "real")
    control = prune_model(tiny_run, PruneConfig(**base, nonsense=True, ablation="task_mean"), tmp_path / "ctl")
    assert control["nonsense"] and control["ablation"] == "task_mean"
    (row,), (real_row,) = control["tasks"], real["tasks"]
    assert row["full_model_loss"] != real_row["full_model_loss"]  # other answers, so another full-model loss
    import json

    circuit = json.loads(Path(row["file"]).read_text())
    assert circuit["provenance"]["nonsense"] is True and circuit["provenance"]["ablation"] == "task_mean"


def test_cmd_ranks_mask_keep_logits_like_cpr_and_attribution_scores_by_magnitude(tiny_run: Path):
    """MIB's CMD ranks items by |score|. For a mask's keep-logits that ranks the most strongly pruned nodes
    first (a constant CMD of 0.749 in benchmarks/results/standard-7-tasks-hardconcrete), so there the
    absolute curve is the signed one; attribution scores (signed effects) keep MIB's absolute ranking."""
    import torch

    from circuitlab.model.nodes import NodeSpace
    from circuitlab.prune.evaluator import Evaluator
    from circuitlab.prune.faithfulness import _measure, faithfulness, faithfulness_curves
    from circuitlab.tasks import check_tokens, encode_pairs, load_pairs, resolve_tasks, task_context_for_run
    from circuitlab.train.runs import load_model

    model, tok, info = load_model(tiny_run)
    context = task_context_for_run(info)
    task = resolve_tasks("python:else_elif", context)[0]
    pairs = check_tokens(load_pairs(task, "test", 8, context), tok).pairs
    n_nodes = NodeSpace.from_config(model.config).num_nodes
    te = Evaluator(model, encode_pairs(list(pairs), tok, max_len=info.model.n_ctx), torch.zeros(n_nodes))
    scores = torch.randn(n_nodes, generator=torch.Generator().manual_seed(0))  # half of them "pruned"
    mask = faithfulness_curves(model, te, scores, edges=False)
    effect = faithfulness_curves(model, te, scores, effect_scores=True, edges=False)
    assert mask["cmd_ranking"] == "signed" and effect["cmd_ranking"] == "absolute"
    x = mask["fractions"]
    assert mask["nodes"]["signed"] == effect["nodes"]["signed"]  # the signed ranking does not depend on the flag
    assert mask["nodes"]["cmd"] == pytest.approx(area_from_1(x, mask["nodes"]["signed"]["f"]))
    assert effect["nodes"]["cmd"] == pytest.approx(area_from_1(x, effect["nodes"]["absolute"]["f"]))
    assert effect["nodes"]["absolute"]["f"] != effect["nodes"]["signed"]["f"]  # random signs: another ranking
    half = effect["nodes"]["absolute"]["n"][-2]  # the 50% circuit of the absolute ranking
    kept = torch.zeros(n_nodes, dtype=torch.bool)
    kept[torch.argsort(scores.abs(), descending=True, stable=True)[:half]] = True
    with torch.no_grad():
        m, _ = _measure(te, kept)
    assert effect["nodes"]["absolute"]["f"][-2] == pytest.approx(faithfulness(m, effect["m_full"], effect["m_empty"]))

    from circuitlab.prune.necessity import model_faithfulness, random_ablation_losses
    from circuitlab.tasks.loss import loss_and_accuracy

    with torch.no_grad():
        doc = model_faithfulness(te, kept, draws=3, seed=5)
        assert doc["necessity_random_draws"] == random_ablation_losses(te, half, 3, 5)  # seeded
        assert len(set(doc["necessity_random_draws"])) == 3  # three different random sets
        gen = torch.Generator().manual_seed(5)
        first = torch.ones(n_nodes, dtype=torch.bool)
        first[torch.randperm(n_nodes, generator=gen)[:half]] = False  # ablated from the full model
        assert doc["necessity_random_draws"][0] == pytest.approx(loss_and_accuracy(te.diffs(first.float()))[0])
        full = faithfulness_curves(model, te, scores, edges=False)
    assert doc["kl_to_full"] >= 0 and doc["loss_gap_to_full"] == pytest.approx(
        loss_and_accuracy(te.diffs(kept.float()))[0] - loss_and_accuracy(te.diffs(torch.ones(n_nodes)))[0])
    assert model_faithfulness(te, torch.ones(n_nodes, dtype=torch.bool))["kl_to_full"] == pytest.approx(0, abs=1e-6)
    assert full["nodes"]["cpr"] == mask["nodes"]["cpr"]

    from circuitlab.prune.faithfulness import CIRCUIT_FACTORS, circuit_curve

    near = circuit_curve(te, scores, half)
    assert near["factors"] == list(CIRCUIT_FACTORS) and near["factors"][0] == 0.25 and near["factors"][-1] == 4
    assert near["n"][4] == half and near["n"] == sorted(near["n"]) and near["n"][-1] == min(n_nodes, 4 * half)
    top = torch.zeros(n_nodes, dtype=torch.bool)
    top[torch.argsort(scores, descending=True, stable=True)[:half]] = True
    with torch.no_grad():
        m_top, _ = _measure(te, top)
    assert near["f"][4] == pytest.approx(faithfulness(m_top, mask["m_full"], mask["m_empty"]))
    assert near["max_f"] == pytest.approx(max(near["f"]))
    over = [max(v - 1, 0) for v in near["f"]]
    assert near["overshoot"] == pytest.approx(sum(0.5 * (over[i] + over[i + 1]) / 2 for i in range(8)))


@pytest.mark.parametrize("min_accuracy", [0.0, 0.9])
def test_run_and_bench_choose_the_same_tasks(tiny_run: Path, tmp_path: Path, monkeypatch, one_thread,
                                             min_accuracy: float):
    """``circuitlab prune`` and the bench judge a model's tasks by one rule (the Wilson verdict against
    the spec's threshold): the tasks the bench plans cells for are the tasks prune prunes, borderline
    ones included, and the rest are the tasks prune skips."""
    from circuitlab.bench import work
    from circuitlab.config import PruneConfig
    from circuitlab.prune.pipeline import prune_model

    data = quick()
    data["prune"]["min_accuracy"] = min_accuracy
    spec = parse_spec(data, str(ROOT / "benchmarks" / "quick.toml"))
    model = model_specs(spec)[0]
    monkeypatch.setattr(work, "model_cache_dir", lambda m: tiny_run)  # the bench reuses this finished run
    doc = work.prepare_model(model, spec, str(tmp_path / "bench"))
    assert doc["reused"]

    p = spec.prune
    names = ",".join(t.partition(":")[2] for t in spec.tasks)
    config = PruneConfig(tasks=f"python:{names}", min_accuracy=p.min_accuracy, n_train=p.n_train, n_test=p.n_test,
                         steps=1, retries=0, random_draws=1, jobs=1)
    summary = prune_model(tiny_run, config, tmp_path / "run")

    def key(row: dict) -> str:
        return row["task"] if ":" in row["task"] else f"{row['suite']}:{row['task']}"

    pruned = {key(r) for r in summary["tasks"]}
    assert pruned == set(doc["solved"])
    assert {key(r) for r in summary["tasks"] if r["verdict"] == "borderline"} == set(doc["borderline"])
    assert {key(s) for s in summary["skipped"]} == set(spec.tasks) - pruned
    assert {t for t, f in doc["tasks"].items() if f["verdict"] == "unsolved"} <= set(spec.tasks) - pruned
    if min_accuracy == 0.0:  # every usable task clears a threshold of 0: both pick all of them
        assert pruned and pruned == {t for t, f in doc["tasks"].items() if f["usable"]}


def test_a_result_file_that_does_not_fit_its_record_is_not_finished(tmp_path: Path, capsys):
    """A cell file that is not a whole cell counts as not finished on a rerun, and the MIB export names
    the file and the key in one line (exit 2) instead of failing inside."""
    import json

    from circuitlab.bench.documents import CellDocument, ModelDocument
    from circuitlab.bench.work import read_done

    from .conftest import assert_one_line_error, run_main

    cell = tmp_path / "cells" / "x.json"
    cell.parent.mkdir()
    cell.write_text(json.dumps({"status": "done", "kind": "circuitlab-bench-cell"}))
    assert read_done(cell, CellDocument) is None
    assert read_done(cell, ModelDocument) is None
    code, _, err = run_main(["bench", "export-mib", str(tmp_path)], capsys)
    assert_one_line_error(code, err, str(cell), "cell_id")
