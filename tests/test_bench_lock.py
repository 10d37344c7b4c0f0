"""One bench client per folder: a second ``bench`` on the same ``--out`` is refused with one line naming the
running one (pid and host); the lock of a client that died is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuitlab.errors import CircuitlabError
from circuitlab.outputs import LOCK_NAME, folder_lock

from .conftest import run_cli

QUICK = Path(__file__).resolve().parents[1] / "benchmarks" / "quick.toml"


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until it is killed."""
    code = ("import sys, time\nfrom circuitlab.outputs import folder_lock\n"
            "with folder_lock(sys.argv[1], 'circuitlab bench'):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_bench_on_the_same_folder_is_refused(tmp_path: Path):
    out = tmp_path / "bench"
    holder = _holder(out)
    try:
        t0 = time.perf_counter()
        proc = run_cli("bench", str(QUICK), "--out", str(out), env={"CIRCUITLAB_LOAD_PLUGINS": ""})
        assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"pid {holder.pid}" in lines[0] and f"host {socket.gethostname()}" in lines[0]
        assert "another 'circuitlab bench' is running" in lines[0]
        assert time.perf_counter() - t0 < 120  # refused before any model or cell
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written by the refused one
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_dead_client_is_taken_over(tmp_path: Path):
    out = tmp_path / "bench"
    holder = _holder(out)
    os.kill(holder.pid, signal.SIGKILL)  # as a kill -9 during a bench
    holder.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # its record is still there
    with folder_lock(out, "circuitlab bench"):
        doc = json.loads((out / LOCK_NAME).read_text())
        assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()
        with pytest.raises(CircuitlabError, match=f"pid {os.getpid()} on host"):
            with folder_lock(out, "circuitlab bench"):  # a second holder, even in the same process
                pass
    with folder_lock(out, "circuitlab bench"):  # released when the block ends
        pass
