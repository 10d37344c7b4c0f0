"""``circuitlab bench`` end to end on benchmarks/quick.toml: real Dask LocalClusters, real training and pruning.

- two worker processes (one of them killed mid-run, so its cell is rescheduled) give the same results
  table as one worker;
- a bench killed with SIGKILL after some cells finished, then rerun, gives the same table again, and the
  rerun recomputes none of the finished cells;
- the report, the MIB export and the stores work on the output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuitlab.bench.table import VOLATILE, read_table

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "benchmarks" / "quick.toml"


def stable(path: Path) -> dict[str, dict]:
    """The results table without the columns that legitimately differ between runs (timings, workers)."""
    rows = read_table(path)
    ids = [r["cell_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a cell is counted twice"
    return {r["cell_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}


def _bench(out: Path, *args: str, check: bool = True):
    proc = run_cli("bench", str(QUICK), "--out", str(out), *args, "--json", timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _start(out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "circuitlab", "bench", str(QUICK), "--out", str(out),
                             "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for_cells(proc: subprocess.Popen, out: Path, n: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list((out / "cells").glob("*.json"))) if (out / "cells").is_dir() else 0
        if done >= n:
            return done
        if proc.poll() is not None:
            pytest.fail(f"bench ended before {n} cells were done: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"fewer than {n} cells after {timeout}s")


def _dask_workers(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)
            if "multiprocessing" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> Path:
    """quick.toml on 2 worker processes (training the models into the session cache); one worker is
    killed with SIGKILL as soon as the first cell is written, while others run."""
    out = tmp_path_factory.mktemp("bench") / "two"
    proc = _start(out, workers=2)
    try:
        _wait_for_cells(proc, out, 1)
        workers = _dask_workers(proc.pid)
        assert workers, "no Dask worker processes found"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_two_workers_give_the_results_of_one(two_workers: Path, tmp_path: Path):
    one = tmp_path / "one"
    summary = json.loads(_bench(one, "--workers", "1").stdout)
    assert summary["failed"] == []
    assert summary["done"] >= 6, summary  # else_elif on every trained model, its controls, the random-init twin
    a, b = stable(two_workers / "results.csv"), stable(one / "results.csv")
    assert a.keys() == b.keys()
    for cell_id in a:
        assert a[cell_id] == b[cell_id], cell_id
    controls = {r["control"] for r in a.values()}
    assert controls == {"none", "nonsense", "freeze_norm", "ablation-zero", "ablation-task_mean", "random_init"}
    assert len(list((two_workers / "cells").glob("*.json"))) == len(a)


@pytest.mark.slow
def test_a_killed_bench_resumes_to_the_same_results(two_workers: Path, tmp_path: Path):
    out = tmp_path / "killed"
    proc = _start(out, workers=2)
    try:
        done = _wait_for_cells(proc, out, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finished = {p.name for p in (out / "cells").glob("*.json")}
    assert len(finished) >= done
    summary = json.loads(_bench(out, "--workers", "2").stdout)
    assert summary["reused"] >= len(finished) and summary["computed_now"] == summary["cells"] - summary["reused"]
    assert stable(out / "results.csv") == stable(two_workers / "results.csv")
    from circuitlab.store import list_methods

    stored = sum(len(list_methods(s)) for s in (out / "stores").glob("*.zarr"))
    assert stored == summary["done"]  # every circuit in a store exactly once, none lost by the kill


@pytest.mark.slow
def test_report_and_mib_export_read_the_bench_output(two_workers: Path):
    proc = run_cli("bench", "report", str(two_workers), "--bootstrap", "200", "--json", check=True)
    doc = json.loads(proc.stdout)
    assert (two_workers / "report.md").exists() and all(Path(f).exists() for f in doc["figures"])
    (line,) = doc["matched_loss"]  # one topk group, one pruner: the dense steps sweep brackets it
    assert line["n_ok"] == 2 and line["node_ratio"] > 0 and line["node_interval"][0] <= line["node_interval"][1]
    assert {c["control"] for c in doc["controls"]} >= {"nonsense", "freeze_norm", "random_init"}
    proc = run_cli("bench", "export-mib", str(two_workers), "--json", check=True)
    export = json.loads(proc.stdout)
    graph = json.loads(Path(export["files"][0]).read_text())
    assert set(graph) == {"cfg", "nodes", "edges"}
    assert all("score" in v and "in_graph" in v for v in graph["edges"].values())
    scores = json.loads(Path(export["scores"]).read_text())
    entry = next(iter(scores[0]["results"][0]["scores"].values()))
    assert len(entry["CPR"]["faithfulness"]) == 10 and len(entry["CMD"]["edge_counts"]) == 10


@pytest.mark.slow
def test_the_table_of_a_run_carries_each_circuits_nodes_and_bisection(two_workers: Path):
    """The runner keeps only part of each cell document in memory; the table still gets the kept node
    names (for the seed comparison) and the bisection, equal to the cell files'."""
    rows = [r for r in read_table(two_workers / "results.csv") if r["status"] == "done"]
    assert any(r["reached"] for r in rows)
    for r in rows:
        circuit = json.loads((two_workers / r["cell_file"]).read_text())["circuit"]
        assert r["bisection"] == circuit["bisection"] and r["bisection"], r["cell_id"]
        assert r["kept_nodes"] == (circuit["nodes"] if r["reached"] else None), r["cell_id"]


def test_dry_run_lists_cells_with_estimates(tmp_path: Path):
    proc = run_cli("bench", str(QUICK), "--out", str(tmp_path / "dry"), "--dry-run", "--json", check=True)
    doc = json.loads(proc.stdout)
    assert len(doc["models"]) == 5 and doc["upper_bound"]
    assert all(c["seconds"] > 0 for c in doc["cells"]) and doc["wall_seconds"] > 0
    assert not (tmp_path / "dry" / "cells").exists()  # a dry run runs nothing


@pytest.mark.slow
def test_compare_and_view_read_the_bench_output(two_workers: Path, tmp_path: Path):
    """The circuits a bench stores are ordinary method results: `compare` lists them per task, and
    `view --bench` makes a row (and a page) of every pruned cell."""
    rows = [r for r in read_table(two_workers / "results.csv") if r["status"] == "done"]
    model_id = rows[0]["model_id"]
    store = two_workers / "stores" / f"{model_id}.zarr"
    doc = json.loads(run_cli("compare", str(store), "--json", check=True).stdout)
    ours = {(r["task"], r["cell_id"]) for r in rows if r["model_id"] == model_id}
    for task in {t for t, _ in ours}:
        assert len(doc["tasks"][task]["methods"]) == sum(t == task for t, _ in ours), doc["tasks"][task]
    index = tmp_path / "view" / "index.html"
    view = json.loads(run_cli("view", "--bench", str(two_workers), "--out", str(index), "--ablation-pairs", "0",
                              "--json", check=True).stdout)
    assert view["circuits"] == len(rows) and all((index.parent / p).exists() for p in view["pages"])
    html = index.read_text()
    assert all(r["cell_id"] in html for r in rows)
    assert "cpr_nodes" in html and "beats_full_model" in html and model_id in html  # the cells' own figures
