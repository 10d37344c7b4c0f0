"""Training end to end on a small real corpus: sparsity holds, loss falls, resume is bit-exact, DDP runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from circuitlab.sparsity import is_block_matrix, kept_count, sparse_parameters

from .conftest import run_cli


def test_tiny_topk_run_respects_density_and_learns(tiny_run: Path):
    meta = json.loads((tiny_run / "config.json").read_text())
    assert meta["kind"] == "circuitlab-run" and meta["status"] == "complete"
    prov = meta["provenance"]
    assert prov["circuitlab_version"] and prov["corpus"]["hash"] and prov["seed"] == 0
    assert prov["plugins"][0]["name"] == "topk"
    weights = load_file(str(tiny_run / "model.safetensors"))
    density = meta["train"]["density"]
    block = {n: w for n, w in weights.items() if is_block_matrix(n)}
    assert len(block) == 4 * meta["model"]["n_layer"]
    for name, w in block.items():
        assert int((w != 0).sum()) <= kept_count(w.numel(), density), name
    assert meta["final"]["val_loss"] < meta["final"]["initial_val_loss"] - 0.5
    for name in ("tokenizer.json", "corpus_manifest.json", "checkpoint.safetensors"):
        assert (tiny_run / name).exists()
    manifest = json.loads((tiny_run / "corpus_manifest.json").read_text())
    assert manifest["hash"] == prov["corpus"]["hash"]
    assert {f["split"] for f in manifest["files"]} == {"train", "val"}


def _checkpoint_step(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["step"])
    except Exception:
        return -1


@pytest.mark.parametrize("sparsity", ["topk", "gmp"])
def test_killed_run_resumes_bit_for_bit(tmp_path: Path, small_corpus: Path, sparsity: str):
    args = ["train", "--preset", "tiny", "--sparsity", sparsity, "--steps", "160", "--ckpt-every", "5",
            "--corpus", str(small_corpus), "--quiet"]
    run_cli(*args, "--out", str(tmp_path / "whole"), check=True)

    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.Popen([sys.executable, "-m", "circuitlab", *args, "--out", str(interrupted)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while _checkpoint_step(interrupted / "checkpoint.safetensors") < 30 and time.time() < deadline:
        assert proc.poll() is None, "training finished before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_step(interrupted / "checkpoint.safetensors")
    assert 30 <= killed_at < 159 and not (interrupted / "model.safetensors").exists()

    run_cli(*args, "--out", str(interrupted), "--resume", check=True)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(interrupted / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume (killed at step {killed_at})"


def test_two_process_ddp_keeps_the_global_batch(tmp_path: Path, small_corpus: Path):
    common = ["--preset", "tiny", "--sparsity", "dense", "--steps", "6", "--corpus", str(small_corpus), "--quiet"]
    run_cli("train", *common, "--out", str(tmp_path / "single"), check=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "circuitlab", "train", *common, "--out", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(torchrun, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert meta["provenance"]["world_size"] == 2
    single = load_file(str(tmp_path / "single" / "model.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    for name in single:  # same global batch, so the same updates up to float summation order
        assert torch.allclose(single[name], ddp[name], atol=2e-5, rtol=1e-4), name


BAD_INPUTS = [
    (["--sparsity", "topkk"], "did you mean 'topk'"),
    (["--sparsity", "topk", "--density", "0"], "density must be in (0, 1]"),
    (["--sparsity", "topk", "--density", "1.5"], "density must be in (0, 1]"),
    (["--sparsity", "topk", "--preset", "huge"], "unknown preset 'huge'"),
    (["--sparsity", "topk", "--steps", "many"], "'many' is not a valid integer"),
    (["--sparsity", "topk", "--corpus", "/nonexistent/corpus"], "does not exist"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args, expected):
    out = tmp_path / "out"
    proc = run_cli("train", *args, "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_empty_corpus_folder_is_rejected(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not python")
    proc = run_cli("train", "--sparsity", "topk", "--corpus", str(empty), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "has no usable .py files" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_on_resume(tmp_path: Path, small_corpus: Path, damage: str):
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--sparsity", "topk", "--steps", "4", "--corpus", str(small_corpus),
            "--quiet", "--out", str(out)]
    run_cli(*args, check=True)
    (out / "model.safetensors").unlink()  # as if killed before the end
    ckpt = out / "checkpoint.safetensors"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
    before = sorted(p.name for p in out.iterdir())
    proc = run_cli(*args, "--resume")
    assert proc.returncode == 2, proc.stderr
    assert "checkpoint" in proc.stderr and "corrupt or truncated" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before


def test_training_step_runs_under_bf16_autocast(monkeypatch):
    """The CUDA path trains under bf16 autocast. No GPU here, so run the same code under CPU bf16 autocast.
    CPU and CUDA autocast convert different op lists, but most dtype mismatches (sink concat, bigram add,
    AbsTopK, masked fill) would fail here too."""
    from circuitlab import plugins, train
    from circuitlab.config import AFRAC_LOCATIONS, ModelConfig, TrainConfig
    from circuitlab.model import GPT
    from circuitlab.train import distributed

    entered = []

    def cpu_bf16(device):
        entered.append(device.type)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(distributed, "autocast", cpu_bf16)
    torch.manual_seed(0)
    mcfg = ModelConfig(vocab_size=64, n_ctx=16, d_model=32, n_layer=2, n_head=2, d_head=16, d_mlp=64,
                       attn_sink=True, bigram_table=True, pos_emb=True,
                       afrac=0.5, afrac_locations=tuple(AFRAC_LOCATIONS))
    config = TrainConfig(preset="tiny", sparsity="topk", density=0.25, steps=4, anneal_start_frac=0.0,
                         anneal_end_frac=0.5, lr=1e-2)
    model = GPT(mcfg)
    schedule = plugins.get("sparsity", "topk").factory(config)
    opt = train.make_optimizer(model, config)
    ids = torch.randint(0, 64, (4, 17))
    device = torch.device("cpu")
    dtypes = {}

    def record_dtype(name, x):
        dtypes[name] = x.dtype
        return x

    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids[:, :-1], hook=record_dtype)
    assert dtypes["0.mlp.neuron"] == torch.bfloat16  # autocast really is on for the matmuls
    losses = [train.train_step(model, model, opt, schedule, ids[:, :-1], ids[:, 1:], step, device)
              for step in range(config.steps)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert len(entered) == config.steps  # every train_step ran its forward under the patched autocast
    for sp in sparse_parameters(model):
        assert int((sp.param != 0).sum()) <= kept_count(sp.param.numel(), 0.25), sp.name
    val = train.evaluate_loss(model, torch.randint(0, 64, (200,)), mcfg.n_ctx, 4, device)
    assert math.isfinite(val) and len(entered) == config.steps + 1
