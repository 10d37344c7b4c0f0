"""Shared fixtures: a private cache folder, a small real-Python corpus, and a tiny trained run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import settings

# CI derandomizes so that a run is reproducible; dev runs explore new examples every time.
settings.register_profile("ci", deadline=None, max_examples=40, print_blob=True, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A handful of real stdlib modules: enough Python for a tokenizer and a tiny model, fast to train on.
SMALL_CORPUS_FILES = [
    "abc.py", "ast.py", "argparse.py", "base64.py", "bisect.py", "calendar.py", "csv.py", "dataclasses.py",
    "enum.py", "fractions.py", "functools.py", "heapq.py", "inspect.py", "json/decoder.py", "json/encoder.py",
    "shlex.py", "string.py", "textwrap.py", "glob.py", "fnmatch.py", "copy.py", "pprint.py",
]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Each test session gets its own cache, so tests never see a user's cached tokenizers or runs."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CIRCUITLAB_CACHE")
    os.environ["CIRCUITLAB_CACHE"] = str(cache)
    # Bit-exact resume and single-vs-DDP comparisons are CPU properties; keep tests off any GPU.
    os.environ["CIRCUITLAB_DEVICE"] = "cpu"
    yield cache
    if old is None:
        os.environ.pop("CIRCUITLAB_CACHE", None)
    else:
        os.environ["CIRCUITLAB_CACHE"] = old


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    root = tmp_path_factory.mktemp("corpus")
    for rel in SMALL_CORPUS_FILES:
        src = stdlib / rel
        if src.exists():
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return root


@pytest.fixture()
def one_thread():
    """Pruning passes are small: extra threads only add contention on a shared machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class FullEnv(dict):
    """A complete environment for ``run_cli``, used as it is (a plain dict is merged into os.environ, so it
    cannot remove a variable such as an inherited ``CIRCUITLAB_LOAD_PLUGINS``)."""


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, check: bool = False):
    """Run the real ``circuitlab`` entry point in a subprocess (stdout, stderr and exit code)."""
    full_env = dict(env) if isinstance(env, FullEnv) else {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "circuitlab", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"circuitlab {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_corpus) -> Path:
    """A real tiny topk run on the small corpus, shared by tests that need a trained model."""
    out = tmp_path_factory.mktemp("runs") / "tiny-topk"
    run_cli("train", "--preset", "tiny", "--sparsity", "topk", "--density", "0.0625", "--steps", "60",
            "--corpus", str(small_corpus), "--out", str(out), "--quiet", check=True)
    return out


def run_main(args, capsys):
    """Run the real entry point in-process: (exit code, stdout, stderr)."""
    from circuitlab.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *needles):
    """Exit 2, one stderr line naming every needle, no traceback."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    for needle in needles:
        assert needle in lines[0], lines[0]
