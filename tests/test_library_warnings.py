"""stderr belongs to circuitlab: a library's warning raised while it is imported (numcodecs >= 0.16.4 warns
``crc32c usage is deprecated`` when zarr 3.0 brings in the old crc32c package) is not shown, unless
``--verbose`` or ``CIRCUITLAB_VERBOSE=1`` asks for it; circuitlab's own one-line error is all a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# What numcodecs.checksum32 does at import: a 'once' filter overrides Python's default of ignoring it.
NOISY = '''import warnings
warnings.filterwarnings("once", message="noisy usage is deprecated.*", category=DeprecationWarning)
warnings.warn("noisy usage is deprecated since noisy_lib 0.16.4. Install another package.", DeprecationWarning,
              stacklevel=2)
'''


# A command that imports such a library, as commands import zarr lazily, then fails with bad input.
SCRIPT = '''import sys
import click
from circuitlab.cli import cli, main
from circuitlab.errors import CircuitlabError

@click.command("noisy-test")
def noisy():
    import noisy_lib
    raise CircuitlabError("bad input named here; the fix named here")

cli.add_command(noisy)
main(sys.argv[1:])
'''


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    (tmp_path / "noisy_lib.py").write_text(NOISY)
    (tmp_path / "noisy_cli.py").write_text(SCRIPT)
    return tmp_path / "noisy_cli.py"


def _run(script: Path, *args: str, verbose_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CIRCUITLAB_VERBOSE"}
    env["CIRCUITLAB_LOAD_PLUGINS"] = ""  # third-party plugins installed beside circuitlab may warn: load none
    env["PYTHONPATH"] = os.pathsep.join([str(script.parent), env.get("PYTHONPATH", "")])
    if verbose_env:
        env["CIRCUITLAB_VERBOSE"] = verbose_env
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_library_warnings_stay_off_stderr(script: Path):
    proc = _run(script, "noisy-test")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: bad input named here; the fix named here\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbose_shows_them(script: Path, how):
    proc = _run(script, *(["--verbose"] if how == "flag" else []), "noisy-test",
                verbose_env="1" if how == "env" else None)
    assert proc.returncode == 2
    assert "DeprecationWarning: noisy usage is deprecated" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: bad input named here; the fix named here"
