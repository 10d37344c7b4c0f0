"""benchmarks/prune.py --against: argument handling and the A/B table on a tiny model (no timing asserted)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("prune_benchmark", ROOT / "benchmarks" / "prune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(task, nodes, loss, seconds, reached=True):
    return {"task": task, "nodes": nodes, "reached": reached, "train_loss": 0.1, "loss": loss, "seconds": seconds}


def test_ab_report_checks_speed_size_reach_and_the_seed_spread():
    bench = load_benchmark()
    old = [{"rows": [row("a", 100, 0.10, 20.0), row("b", 40, 0.20, 10.0)], "startup_seconds": 3.0},
           {"rows": [row("a", 90, 0.14, 20.0), row("b", 44, 0.22, 10.0)], "startup_seconds": 3.0}]
    new = [{"rows": [row("a", 105, 0.12, 4.0), row("b", 41, 0.21, 2.0)], "startup_seconds": 3.0}] * 2
    doc = bench.ab_report("main", {"old": old, "new": new})
    assert doc["median_speedup"] == pytest.approx(15.0 / 3.0)
    assert doc["seed_spread"] == pytest.approx((0.04 + 0.02) / 2)
    assert doc["checks"] == {"reached": True, "geomean_nodes_within_10pct": True,
                             "test_loss_within_seed_spread": True, "median_speedup_goal": True}
    assert not doc["identical_circuits"]
    worse = [{"rows": [row("a", 150, 0.30, 10.0, reached=False), row("b", 41, 0.21, 9.0)], "startup_seconds": 1.0}]
    doc = bench.ab_report("main", {"old": old[:1], "new": worse})
    assert doc["checks"] == {"reached": False, "geomean_nodes_within_10pct": False,
                             "test_loss_within_seed_spread": None, "median_speedup_goal": False}


def test_ab_sides_run_in_worker_processes_on_a_tiny_model(tiny_run, capsys):
    """Both sides on this tree (no git needed): the same circuits, and a table naming every check."""
    bench = load_benchmark()
    args = argparse.Namespace(model=tiny_run, pruner="hardconcrete", tasks="python:for_while", min_accuracy=0.0,
                              threads=1, steps=3, patience=None)
    runs = {"old": [bench.run_side(ROOT, args, 0)], "new": [bench.run_side(ROOT, args, 0)]}
    doc = bench.ab_report("HEAD", runs)
    assert [r["task"] for r in doc["tasks"]] == ["for_while"]
    assert doc["identical_circuits"] and doc["tasks"][0]["old"] == {**doc["tasks"][0]["new"],
                                                                     "seconds": doc["tasks"][0]["old"]["seconds"]}
    assert runs["new"][0]["process_seconds"] >= runs["new"][0]["rows"][0]["seconds"]
    bench.print_ab(doc)
    out = capsys.readouterr().out
    for words in ("for_while", "median seconds per circuit", "node geomean", "seed spread n/a (one seed)",
                  "process start-up"):
        assert words in out


def test_ab_refuses_zero_seeds(capsys):
    with pytest.raises(SystemExit) as exc:
        load_benchmark().main(["--against", "HEAD", "--seeds", "0", "--model", "x"])
    assert exc.value.code == 2 and "--seeds must be at least 1" in capsys.readouterr().err
