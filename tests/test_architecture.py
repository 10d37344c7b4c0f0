"""The structure holds: every module imports on its own, imports flow one way (import-linter), files
and functions stay small, and an installed wheel prunes on the task sets it ships."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "circuitlab"
ROOT = SRC.parents[1]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":  # running it starts the CLI
            names.append(".".join(parts))
    return names


def test_every_module_imports_on_its_own():
    """A fresh interpreter imports each module with every circuitlab module forgotten before it, so an
    import cycle or a module that only works after another was imported fails here."""
    script = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "circuitlab" or m.startswith("circuitlab.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=3)
print(json.dumps(failures))
"""
    modules = _modules()
    assert len(modules) > 40, modules
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(modules)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_imports_flow_one_way():
    """The import-linter contracts in pyproject.toml: the layers, prune never importing the store,
    and built-ins reached only through the registry."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


def test_files_and_functions_stay_small():
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: "
                                    f"{node.end_lineno - start + 1} lines")
    assert not too_long, "\n".join(too_long)


@pytest.mark.slow
def test_installed_wheel_prunes_with_the_shipped_task_sets(tiny_run: Path, tmp_path: Path):
    """Build the wheel, install it into a fresh venv (dependencies borrowed from this environment, the
    source tree nowhere on the path), and prune a standard task: its pairs come from the shipped file."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("circuitlab-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # This environment's pip installs into the fresh one (pip --python), which saves bootstrapping a pip there.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    # torch, zarr, ... from this environment; a path added by a .pth line is not itself a site dir, so
    # the editable install's own .pth (which points at the source tree) is not processed there.
    Path(fresh_site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIRCUITLAB_TASKSETS")}
    env["CIRCUITLAB_LOAD_PLUGINS"] = ""  # third-party plugins of this environment are editable installs
    where = subprocess.run([str(python), "-c", "import circuitlab; print(circuitlab.__file__)"], check=True,
                           capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(fresh_site), where
    out = tmp_path / "pruned"
    proc = subprocess.run(
        [str(python), "-m", "circuitlab", "prune", "--model", str(tiny_run), "--pruner", "heaviside",
         "--tasks", "python:if_equals", "--min-accuracy", "0", "--steps", "20", "--n-train", "16",
         "--n-test", "8", "--out", str(out), "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "in memory" not in proc.stderr and "generat" not in proc.stderr, proc.stderr
    circuit = json.loads((out / "circuits" / "python.if_equals.json").read_text())
    pairs = circuit["provenance"]["pairs"]
    shipped = SRC / "tasks" / "sets" / "python" / "if_equals.jsonl"
    assert pairs == {"source": "shipped", "file": "python/if_equals.jsonl",
                     "sha256": hashlib.sha256(shipped.read_bytes()).hexdigest()}
