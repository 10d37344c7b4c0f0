"""Reproducibility: the same-machine guarantee, machine provenance, accuracy intervals and the
solved / borderline verdict, and parallel pruning giving the same circuits as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circuitlab.machine import comparable, cpu_description
from circuitlab.tasks import BORDERLINE, SOLVED, UNSOLVED, verdict, wilson_interval

from .conftest import run_cli


@given(n=st.integers(1, 5000), data=st.data())
def test_wilson_interval_contains_the_estimate_and_stays_in_bounds(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert high - low > 0


@given(k=st.integers(1, 50), scale=st.integers(2, 20))
def test_wilson_interval_narrows_with_more_prompts(k, scale):
    n = 2 * k + 3
    small, large = wilson_interval(k, n), wilson_interval(k * scale, n * scale)
    assert large[1] - large[0] < small[1] - small[0]


def test_wilson_interval_known_values():
    # Wilson (1927) 95% limits, as tabulated e.g. by Newcombe (1998), case 0/10 and 1/29.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(1, 29) == pytest.approx((0.0061, 0.1718), abs=1e-4)
    # The case that flipped between two machines: 0.898 of 256 prompts straddles 0.9.
    low, high = wilson_interval(230, 256)
    assert low < 0.9 < high and verdict(low, high, 0.9) == BORDERLINE


def test_verdict_against_threshold():
    assert verdict(0.91, 0.97, 0.9) == SOLVED
    assert verdict(0.85, 0.93, 0.9) == BORDERLINE
    assert verdict(0.70, 0.899, 0.9) == UNSOLVED
    assert verdict(0.0, 0.1, 0.0) == SOLVED  # --min-accuracy 0 prunes every task


def test_cpu_description_parses_cpuinfo_and_comparable_names_differences():
    intel = cpu_description("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\n"
                            "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n\nprocessor\t: 1\n")
    amd = cpu_description("vendor_id : AuthenticAMD\nmodel name : AMD EPYC\nflags : sse4_2 avx avx2 fma\n")
    assert intel["model"] == "Xeon" and intel["isa_flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"]
    base = {"torch": "2.13.0", "cpu_capability": "AVX2", "libraries": {}, "threads": 2,
            "deterministic_algorithms": False, "env": {}}
    assert comparable({**base, "cpu": amd}, {**base, "cpu": dict(amd)}) == []
    diff = comparable({**base, "cpu": amd}, {**base, "cpu": intel, "cpu_capability": "AVX512", "threads": 1})
    assert set(diff) == {"cpu_capability", "threads", "cpu.vendor", "cpu.isa_flags"}


def test_training_is_bit_identical_on_one_machine(tmp_path, small_corpus):
    """The documented guarantee (docs/training.md): same config, same machine settings, same bytes."""
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_cli("train", "--preset", "tiny", "--sparsity", "topk", "--steps", "30", "--corpus", str(small_corpus),
                "--out", str(out), "--quiet", check=True)
    a, b = ((o / "model.safetensors").read_bytes() for o in outs)
    assert a == b
    machine = json.loads((outs[0] / "config.json").read_text())["provenance"]["machine"]
    assert machine["threads"] >= 1 and machine["cpu_capability"] and machine["torch"]
    assert isinstance(machine["deterministic_algorithms"], bool) and "isa_flags" in machine["cpu"]


FAST = ["--steps", "15", "--n-train", "24", "--n-test", "12", "--min-accuracy", "0"]
TASKS = "python:else_elif,if_equals,var_if"


def test_parallel_pruning_gives_the_circuits_of_one_process(tiny_run, tmp_path):
    docs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        proc = run_cli("prune", "--model", str(tiny_run), "--pruner", "hardconcrete", "--tasks", TASKS,
                       "--target-loss", "0.6", "--jobs", str(jobs), "--out", str(out), "--json", *FAST, check=True)
        docs[jobs] = json.loads(proc.stdout)
        assert ("worker processes" in proc.stderr) == (jobs == 2)
    one, two = docs[1], docs[2]
    assert [r["task"] for r in one["tasks"]] == [r["task"] for r in two["tasks"]] == ["else_elif", "if_equals", "var_if"]
    for a, b in zip(one["tasks"], two["tasks"], strict=True):
        ca = json.loads(open(a["file"], encoding="utf-8").read())
        cb = json.loads(open(b["file"], encoding="utf-8").read())
        assert ca["nodes"] == cb["nodes"] and ca["loss"] == cb["loss"] and ca["bisection"] == cb["bisection"]
        assert a["verdict"] == SOLVED and a["accuracy_low"] <= a["task_accuracy"] <= a["accuracy_high"]
        assert ca["provenance"]["solved"]["interval"] == "95% Wilson"
    assert two["provenance"]["machine"]["cpu"]["isa_flags"] == one["provenance"]["machine"]["cpu"]["isa_flags"]
    # A rerun with another --jobs reuses the finished circuits (the worker count changes no result).
    proc = run_cli("prune", "--model", str(tiny_run), "--pruner", "hardconcrete", "--tasks", TASKS,
                   "--target-loss", "0.6", "--jobs", "2", "--out", str(tmp_path / "jobs1"), *FAST, check=True)
    assert proc.stderr.count("kept from an earlier run") == 3
    assert one["geomean_nodes"] == two["geomean_nodes"] and one["n_reached"] == two["n_reached"]
    # With one task left, --jobs 2 starts no worker: the finished ones are counted out first.
    Path(one["tasks"][1]["file"]).unlink()
    proc = run_cli("prune", "--model", str(tiny_run), "--pruner", "hardconcrete", "--tasks", TASKS,
                   "--target-loss", "0.6", "--jobs", "2", "--out", str(tmp_path / "jobs1"), *FAST, check=True)
    assert proc.stderr.count("kept from an earlier run") == 2 and "worker processes" not in proc.stderr
    assert json.loads(Path(one["tasks"][1]["file"]).read_text())["nodes"] == json.loads(
        Path(two["tasks"][1]["file"]).read_text())["nodes"]


def test_worker_errors_cross_the_pool_as_one_picklable_line(monkeypatch):
    import pickle

    from circuitlab.errors import CircuitlabError, UnknownNameError
    from circuitlab.prune import parallel, search
    from circuitlab.prune.parallel import TaskJob

    job = TaskJob(index=0, data=search.TaskData(train=None, test=None, values=None, task="t", suite="s", provenance={}))
    monkeypatch.setattr(parallel, "_worker", {"error": "OSError: model.safetensors: No such file"})
    with pytest.raises(CircuitlabError, match="could not start: OSError") as info:
        parallel._prune_in_worker(job)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)

    def broken(*args, **kwargs):  # an error class that does not rebuild from its args alone
        raise UnknownNameError("pruner", "heavyside", ("heaviside",))

    monkeypatch.setattr(search, "search_circuit", broken)
    monkeypatch.setattr(parallel, "_worker", {"model": None, "config": None, "mask_entry": None,
                                              "objective_entry": None})
    with pytest.raises(CircuitlabError) as info:
        parallel._prune_in_worker(job)
    again = pickle.loads(pickle.dumps(info.value))
    assert "heavyside" in str(again) and "did you mean" in str(again)


def test_in_process_plugins_keep_pruning_in_one_process():
    from types import SimpleNamespace

    from circuitlab.prune.parallel import _shareable

    assert _shareable(SimpleNamespace(dist="circuitlab"), SimpleNamespace(dist="circuitlab-rigl"))
    assert not _shareable(SimpleNamespace(dist="circuitlab"), SimpleNamespace(dist="(in-process)"))


def _children(pid: int) -> set[int]:
    from pathlib import Path

    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def test_interrupt_during_parallel_pruning_stops_the_workers(tiny_run, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "circuitlab", "prune", "--model", str(tiny_run), "--pruner",
                             "heaviside", "--tasks", TASKS, "--jobs", "2", "--steps", "3000", "--n-train", "24",
                             "--n-test", "12", "--min-accuracy", "0", "--out", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until the workers are pruning
        lines.append(line)
        if "step 1/3000" in line:
            break
    workers = _children(proc.pid)
    assert workers, "".join(lines)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    deadline = time.time() + 10  # the parent has exited: its killed workers are reaped by init
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.2)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")]
    assert not list(out.glob("circuits/.*tmp*"))
