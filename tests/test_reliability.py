"""Faults: no data-loss window, no silent wrong answer, one line for every fault, interrupts that resume.

Every case checks what a user sees: one stderr line naming the problem (exit 2, or 130/143 for a
signal), no traceback, and nothing lost or left behind.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

TASK = "python:if_equals"


def one_line(proc, *needles, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """circuitlab's temporary names: .NAME.tmp-PID-RAND / .NAME.old-PID-RAND, anywhere below ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def run_copy(tiny_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "run"
    shutil.copytree(tiny_run, out)
    return out


@pytest.fixture()
def store_with_method(run_copy: Path, tmp_path: Path) -> Path:
    """A small store of the tiny run with one method result (pruned and added by the real CLI)."""
    store = tmp_path / "acts.zarr"
    run_cli("record", "--model", str(run_copy), "--tasks", TASK, "--pairs", "2", "--corpus-windows", "4",
            "--window", "16", "--out", str(store), "--quiet", check=True)
    run_cli("prune", "--model", str(run_copy), "--pruner", "heaviside", "--tasks", TASK, "--min-accuracy", "0",
            "--steps", "10", "--n-train", "8", "--n-test", "4", "--store", str(store),
            "--out", str(tmp_path / "pruned"), check=True)
    return store


def methods_of(store: Path) -> list[tuple[str, str]]:
    from circuitlab.store import list_methods

    return list_methods(store)


@pytest.mark.parametrize("fault, env", [
    ("swap:before", {}),
    ("swap:after-exchange", {}),
    ("swap:between-renames", {"CIRCUITLAB_NO_RENAME_EXCHANGE": "1"}),
])
def test_kill_during_record_overwrite_loses_nothing(store_with_method: Path, run_copy: Path, fault, env):
    store = store_with_method
    before = methods_of(store)
    assert before == [("heaviside", "python:if_equals")]
    proc = run_cli("record", "--model", str(run_copy), "--tasks", TASK, "--pairs", "2", "--corpus-windows", "6",
                   "--window", "16", "--out", str(store), "--overwrite", "--quiet",
                   env={"CIRCUITLAB_FAULT": fault, **env})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    compared = run_cli("compare", str(store), "--json")  # recovers an interrupted swap, sweeps debris
    assert compared.returncode == 0, compared.stderr
    assert "heaviside" in json.loads(compared.stdout)["tasks"]["python:if_equals"]["methods"]
    assert methods_of(store) == before
    assert leftovers(store.parent) == []
    again = run_cli("record", "--model", str(run_copy), "--tasks", TASK, "--pairs", "2", "--corpus-windows", "6",
                    "--window", "16", "--out", str(store), "--overwrite", "--quiet", env=env)
    assert again.returncode == 0, again.stderr
    assert methods_of(store) == before and leftovers(store.parent) == []


def test_prune_store_refuses_to_replace_without_overwrite(store_with_method: Path, run_copy: Path, tmp_path: Path):
    args = ["prune", "--model", str(run_copy), "--pruner", "heaviside", "--tasks", TASK, "--min-accuracy", "0",
            "--steps", "10", "--n-train", "8", "--n-test", "4", "--store", str(store_with_method),
            "--out", str(tmp_path / "other")]
    one_line(run_cli(*args), "already has", "if_equals", "--overwrite")
    assert run_cli(*args, "--overwrite").returncode == 0


@pytest.mark.parametrize("damage", ["methods/heaviside/python:if_equals/kept/c/0", "site/c/0", "node_mean/c/0"])
def test_deleted_chunks_are_named_not_read_as_zeros(store_with_method: Path, damage):
    (store_with_method / damage).unlink()
    one_line(run_cli("compare", str(store_with_method)), damage.rsplit("/c/", 1)[0].rsplit("/", 1)[-1],
             "missing")


def test_deleted_method_array_is_one_line(store_with_method: Path):
    shutil.rmtree(store_with_method / "methods/heaviside/python:if_equals/kept")
    one_line(run_cli("compare", str(store_with_method)), "heaviside")


def test_corrupt_chunk_in_top_names_its_examples(run_copy: Path, tmp_path: Path):
    from circuitlab.store import open_store

    store = tmp_path / "acts.zarr"
    run_cli("record", "--model", str(run_copy), "--tasks", "none", "--corpus-windows", "64", "--window", "16",
            "--out", str(store), "--quiet", check=True)
    ce = int(open_store(store)["activation"].encoding["chunks"][0])
    chunk = store / "activation" / "c" / "1" / "0" / "0"
    if not chunk.exists():  # one chunk holds everything: damage the first
        chunk, lo = store / "activation" / "c" / "0" / "0" / "0", 0
    else:
        lo = ce
    chunk.write_bytes(b"\x00garbage" * 7)
    line = one_line(run_cli("top", "--store", str(store), "--node", "0.mlp.neuron.1"), f"examples {lo}..")
    assert "activation/c/" in line


def test_nan_training_stops_with_the_step(tmp_path: Path, small_corpus: Path):
    line = one_line(run_cli("train", "--preset", "tiny", "--sparsity", "topk", "--steps", "20", "--lr", "1e30",
                            "--corpus", str(small_corpus), "--out", str(tmp_path / "run"), "--quiet"),
                    "diverged at step", "--lr")
    assert "nan" in line or "inf" in line


def test_nul_byte_corpus_file_is_skipped_and_counted(tmp_path: Path, small_corpus: Path):
    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    (corpus / "zeros.py").write_bytes(b"\0" * (512 << 10))  # under the size cap: caught as binary
    (corpus / "huge.py").write_text("x = 1\n" * 300_000)  # 1.8 MB: over the 1 MB cap
    t0 = time.perf_counter()
    proc = run_cli("train", "--preset", "tiny", "--sparsity", "topk", "--steps", "5", "--corpus", str(corpus),
                   "--out", str(tmp_path / "run"), "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.perf_counter() - t0 < 120
    summary = json.loads(proc.stdout)
    assert summary["corpus_skipped"]["binary"] == 1 and summary["corpus_skipped"]["too_large"] == 1


@pytest.mark.parametrize("args, needles", [
    (["--lr", "nan"], ["--lr"]),
    (["--lr", "inf"], ["--lr"]),
    (["--seed", "99999999999999999999999"], ["--seed"]),
])
def test_bad_numbers_are_one_line(args, needles):
    one_line(run_cli("train", "--preset", "tiny", "--sparsity", "topk", *args), *needles)


def test_outputs_that_are_files(tmp_path: Path, run_copy: Path):
    regular = tmp_path / "regular"
    regular.write_text("")
    one_line(run_cli("train", "--preset", "tiny", "--sparsity", "topk", "--out", str(regular)), "is a file")
    one_line(run_cli("record", "--model", str(run_copy), "--out", str(regular / "sub.zarr")), "is a file")


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["model"].update(d_model=c["model"]["d_model"] * 2), "do not match"),
    (lambda c: c["model"].update(d_model="wide"), "'d_model'"),
    (lambda c: c["model"].update(n_head=0), "'n_head'"),
])
def test_damaged_config_json_is_one_line(run_copy: Path, tmp_path: Path, edit, needle):
    run = tmp_path / "run"
    shutil.copytree(run_copy, run)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    one_line(run_cli("tasks", "--model", str(run), "--suite", TASK), needle)


def test_config_json_that_is_a_folder_and_bad_tokenizers(run_copy: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(run_copy, run)
    (run / "tokenizer.json").write_text("{not a tokenizer")
    one_line(run_cli("tasks", "--model", str(run), "--suite", TASK), "tokenizer")
    (run / "tokenizer.json").unlink()
    one_line(run_cli("tasks", "--model", str(run), "--suite", TASK), "tokenizer")
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    one_line(run_cli("tasks", "--model", str(run), "--suite", TASK), "folder")


def _without_dac(cmd: list[str]) -> list[str]:
    """Run as root without CAP_DAC_OVERRIDE, so that folder permissions apply as to anyone."""
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]


@pytest.mark.parametrize("command", ["train", "record", "prune", "store", "plot"])
def test_read_only_outputs_fail_before_work(command, run_copy: Path, tmp_path: Path, store_with_method: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    args = {
        "train": ["train", "--preset", "tiny", "--sparsity", "topk", "--out", str(locked / "run")],
        "record": ["record", "--model", str(run_copy), "--out", str(locked / "acts.zarr")],
        "prune": ["prune", "--model", str(run_copy), "--pruner", "heaviside", "--tasks", TASK,
                  "--out", str(locked / "pruned")],
        "store": ["prune", "--model", str(run_copy), "--pruner", "heaviside", "--tasks", TASK,
                  "--out", str(tmp_path / "pruned"), "--store", str(locked / "acts.zarr")],
        "plot": ["compare", str(store_with_method), "--plot", str(locked / "edges.png")],
    }[command]
    os.chmod(locked, 0o555)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(_without_dac([sys.executable, "-m", "circuitlab", *args]), capture_output=True,
                              text=True, timeout=300)
        one_line(proc, "not writable", "EACCES")
        assert time.perf_counter() - t0 < 60  # refused up front, not after the work
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o755)


def _file_size_limit(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_is_one_line_and_leaves_nothing(tmp_path: Path, small_corpus: Path, run_copy: Path):
    run = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "circuitlab", "train", "--preset", "tiny", "--sparsity", "topk",
                            "--steps", "3", "--corpus", str(small_corpus), "--out", str(run), "--quiet"],
                           capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(1 << 20))
    one_line(train, "File too large", "EFBIG")
    assert leftovers(run) == []
    store = tmp_path / "acts.zarr"
    record = subprocess.run([sys.executable, "-m", "circuitlab", "record", "--model", str(run_copy), "--tasks",
                             "none", "--corpus-windows", "512", "--window", "64", "--out", str(store), "--quiet"],
                            capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(256 << 10))
    one_line(record, "File too large")
    assert not store.exists() and leftovers(tmp_path) == []


TRAIN_ARGS = ["train", "--preset", "tiny", "--sparsity", "topk", "--steps", "120", "--ckpt-every", "10", "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    run_cli(*TRAIN_ARGS, "--corpus", str(small_corpus), "--out", str(out), check=True)
    return out


def _interrupt_training(tmp_path: Path, small_corpus: Path, sig: int) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / f"run-{sig}"
    cmd = [sys.executable, "-m", "circuitlab", *TRAIN_ARGS, "--corpus", str(small_corpus), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline:  # training has started
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), out


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_during_training_checkpoint_and_resume_to_the_same_bytes(sig, code, tmp_path: Path,
                                                                         small_corpus: Path, uninterrupted: Path):
    proc, out = _interrupt_training(tmp_path, small_corpus, sig)
    if proc.returncode == 0:
        pytest.fail("training finished before the signal arrived: make it longer")
    line = one_line(proc, "interrupted at step", "--resume", code=code)
    step = int(line.split("interrupted at step ")[1].split()[0])
    assert 0 < step < 120 and (out / "checkpoint.safetensors").exists() and leftovers(out) == []
    resumed = run_cli(*TRAIN_ARGS, "--corpus", str(small_corpus), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == (uninterrupted / "model.safetensors").read_bytes()


def test_sigterm_during_prune_keeps_finished_circuits_and_a_rerun_skips_them(run_copy: Path, tmp_path: Path):
    out = tmp_path / "pruned"
    cmd = [sys.executable, "-m", "circuitlab", "prune", "--model", str(run_copy), "--pruner", "heaviside",
           "--tasks", "python:if_equals,for_while,var_if,else_elif", "--min-accuracy", "0", "--steps", "120",
           "--n-train", "8", "--n-test", "4", "--jobs", "1", "--out", str(out)]
    # One worker prunes the tasks in order, so when the first circuit lands three tasks are still to do
    # (with workers side by side the first file can land just before the last, and the signal would
    # then meet a finished command).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "circuits" / "python.if_equals.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    if proc.returncode == 0:
        pytest.fail("the prune finished before the signal: make it longer")
    assert proc.returncode == 143, stderr[-2000:]
    assert "finished work is kept" in stderr and "Traceback" not in stderr
    finished = sorted(p.name for p in (out / "circuits").iterdir())
    assert "python.if_equals.json" in finished and leftovers(out) == []
    rerun = run_cli(*cmd[3:], "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "done python:if_equals: kept from an earlier run" in rerun.stderr
    assert len(json.loads(rerun.stdout)["tasks"]) == 4


def test_files_follow_the_umask(tmp_path: Path, small_corpus: Path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "circuitlab", "train", "--preset", "tiny", "--sparsity", "topk",
                           "--steps", "3", "--corpus", str(small_corpus), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "checkpoint.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_resumed_and_uninterrupted_weights_hash_alike(run_copy: Path):
    """Model identity is a hash of the tensors: the same weights re-saved in another process match."""
    from safetensors.torch import load_file

    from circuitlab.files import tensors_sha256, write_safetensors

    weights = run_copy / "model.safetensors"
    copy = run_copy.parent / "resaved.safetensors"
    write_safetensors(copy, dict(reversed(list(load_file(str(weights)).items()))), {"other": "metadata"})
    assert tensors_sha256(copy) == tensors_sha256(weights)
