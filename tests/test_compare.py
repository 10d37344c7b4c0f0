"""``circuitlab compare``: Jaccard, sizes, activation statistics and the plot, checked by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli
from .test_store import record_once


def _kept(seed: int, n: int, p: float) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < p


@pytest.fixture(scope="module")
def compared(tiny_run: Path, tmp_path_factory):
    """A store copy with methods 'alpha' (edge list stored) and 'beta' (edges rebuilt from the run) on 2 tasks."""
    import torch

    from circuitlab.prune.edges import count_edges, edge_list
    from circuitlab.store import MethodResult, add_method_result, open_store
    from circuitlab.train.runs import load_model

    base = record_once(tiny_run, tmp_path_factory.getbasetemp())
    path = tmp_path_factory.mktemp("compare") / "store.zarr"
    shutil.copytree(base, path)
    ds = open_store(path)
    n = ds.sizes["node"]
    tasks = [q.rpartition(":")[2] for q in ds.attrs["codes"]["task"][:2]]  # bare names, as prune passes them
    model = load_model(tiny_run)[0]
    truth = {}
    for mi, method in enumerate(("alpha", "beta")):
        for ti, task in enumerate(tasks):
            kept = _kept(10 * mi + ti, n, 0.15 + 0.1 * mi)
            edges = edge_list(model, torch.from_numpy(kept))
            total = count_edges(model, torch.from_numpy(kept))["total"]
            assert total == len(edges)
            add_method_result(path, MethodResult(method=method, task=task, scores=kept.astype(np.float32),
                                                 kept=kept, loss=0.1 + mi + ti, edges=total,
                                                 nodes=int(kept.sum()), provenance={"m": method},
                                                 edge_list=edges if method == "alpha" else None), run=tiny_run)
            truth[method, task] = (kept, set(map(tuple, edges)))
    return path, tasks, truth


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def test_compare_json_and_plot(compared, tmp_path: Path):
    from circuitlab.store import open_store

    path, tasks, truth = compared
    png = tmp_path / "edges.png"
    proc = run_cli("compare", str(path), "--json", "--plot", str(png), check=True)
    res = json.loads(proc.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    ds = open_store(path)
    act, length, task_code = ds["activation"].values, ds["length"].values, ds["task"].values
    assert sorted(res["tasks"]) == sorted(tasks)
    for ti, task in enumerate(tasks):
        r = res["tasks"][task]
        assert r["basis"] == task  # statistics over the task's own recorded prompts
        rows = np.flatnonzero(task_code == ti)
        valid = np.arange(act.shape[1])[None, :] < length[rows, None]
        tok = act[rows][valid]  # (tokens, nodes)
        assert r["basis_tokens"] == tok.shape[0] > 0
        for mi, method in enumerate(("alpha", "beta")):
            kept, edges = truth[method, task]
            m = r["methods"][method]
            assert m["nodes"] == int(kept.sum()) and m["edges"] == len(edges)
            assert m["loss"] == pytest.approx(0.1 + mi + ti) and m["edge_list"] is True
            assert m["mean_abs_activation"] == pytest.approx(float(np.abs(tok).mean(0)[kept].mean()), rel=1e-5)
            assert m["activation_frequency"] == pytest.approx(float((tok != 0).mean(0)[kept].mean()), rel=1e-6)
        (pair,) = r["pairs"]
        (ka, ea), (kb, eb) = truth["alpha", task], truth["beta", task]
        assert (pair["a"], pair["b"]) == ("alpha", "beta")
        assert pair["node_jaccard"] == pytest.approx(_jaccard(set(np.flatnonzero(ka)), set(np.flatnonzero(kb))))
        assert pair["edge_jaccard"] == pytest.approx(_jaccard(ea, eb))
        assert 0 < pair["node_jaccard"] < 1


def test_compare_table(compared):
    path, tasks, _ = compared
    out = run_cli("compare", str(path), check=True).stdout
    lines = out.splitlines()
    assert sum(line.startswith("task ") for line in lines) == len(tasks)
    assert any(line.split()[:1] == ["alpha"] for line in lines) and "alpha vs beta" in out
    assert "node J" in out and "edge J" in out and "mean|act|" in out


def test_compare_without_methods_is_an_error(tiny_run: Path, tmp_path_factory):
    base = record_once(tiny_run, tmp_path_factory.getbasetemp())
    proc = run_cli("compare", str(base))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no method results" in proc.stderr


def test_jaccard_edge_cases():
    from circuitlab.compare import jaccard

    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, set()) == 0.0
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
