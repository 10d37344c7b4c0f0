"""``import-oai`` under faults, as ``train`` and ``record``: a file-size limit, a read-only folder, SIGINT,
SIGTERM and kill -9 during the replacement of a run give one line (or nothing, for kill -9), the
right exit code, the previous run folder intact and no debris."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.files import tensors_sha256
from circuitlab.outputs import has_marker

from .conftest import run_cli
from .oai_reference import make_state, write_checkpoint
from .test_output_guard import BUILTINS_ONLY, OAI_CONFIG
from .test_reliability import _without_dac, leftovers, one_line

BIGGER = {**OAI_CONFIG, "d_model": 64, "d_head": 16, "n_head": 4, "d_mlp": 256, "n_layer": 2}  # ~1 MB of weights


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """Two checkpoints of different sizes: the old run is imported from the first, replaced by the second."""
    root = tmp_path_factory.mktemp("oai")
    small = write_checkpoint(root / "small", OAI_CONFIG, make_state(OAI_CONFIG, seed=1))
    big = write_checkpoint(root / "big", BIGGER, make_state(BIGGER, seed=2))
    return small, big


@pytest.fixture()
def old_run(sources, tmp_path: Path) -> Path:
    from circuitlab.interop import import_oai

    return Path(import_oai(sources[0], tmp_path / "run")["run"])


def _intact(run: Path, weights_hash: str) -> None:
    assert has_marker(run, "run") and tensors_sha256(run / "model.safetensors") == weights_hash
    assert leftovers(run.parent) == []


def test_file_size_limit_is_one_line_and_keeps_the_old_run(sources, old_run: Path):
    before = tensors_sha256(old_run / "model.safetensors")
    limit = 64 << 10  # the new weights (~1 MB) do not fit; the old run folder stays as it was

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "circuitlab", "import-oai", str(sources[1]), "--out", str(old_run),
                           "--overwrite"], capture_output=True, text=True, timeout=300, preexec_fn=apply,
                          env={**os.environ, **BUILTINS_ONLY})
    one_line(proc, "File too large", "EFBIG", str(old_run / "model.safetensors"))
    _intact(old_run, before)


@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_signals_keep_the_old_run_and_leave_no_debris(sources, old_run: Path, sig, code):
    before = tensors_sha256(old_run / "model.safetensors")
    proc = run_cli("import-oai", str(sources[1]), "--out", str(old_run), "--overwrite",
                   env={"CIRCUITLAB_FAULT": f"import:before-swap@{sig}", **BUILTINS_ONLY})
    one_line(proc, f"interrupted by SIG{sig}", code=code)
    _intact(old_run, before)


@pytest.mark.parametrize("fault, env", [
    ("import:before-swap", {}), ("swap:after-exchange", {}),
    ("swap:between-renames", {"CIRCUITLAB_NO_RENAME_EXCHANGE": "1"}),
])
def test_kill_during_the_replacement_leaves_one_complete_run(sources, old_run: Path, fault, env):
    old = tensors_sha256(old_run / "model.safetensors")
    proc = run_cli("import-oai", str(sources[1]), "--out", str(old_run), "--overwrite",
                   env={"CIRCUITLAB_FAULT": fault, **env, **BUILTINS_ONLY})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    again = run_cli("import-oai", str(sources[1]), "--out", str(old_run), "--overwrite", env=env)  # recovers, sweeps
    assert again.returncode == 0, again.stderr[-2000:]
    new = tensors_sha256(old_run / "model.safetensors")
    assert new != old and has_marker(old_run, "run") and leftovers(old_run.parent) == []


def test_read_only_folder_is_one_line_before_work(sources, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        proc = subprocess.run(_without_dac([sys.executable, "-m", "circuitlab", "import-oai", str(sources[0]),
                                            "--out", str(locked / "run")]), capture_output=True, text=True,
                              timeout=300, env={**os.environ, **BUILTINS_ONLY})
        one_line(proc, "not writable", "EACCES")
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o755)
