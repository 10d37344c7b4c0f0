"""Bounded inputs: what circuitlab reads, and how much, whatever a folder, a config or a flag holds.

Code folders are read file by file, regular files only and never past the size cap (a ``.py`` link to
/dev/zero reports 0 bytes; a FIFO never ends); an imported config is bounded and checked against the
weights before a model is built from it; thread, job and worker counts are bounded by the cores.
"""

from __future__ import annotations

import json
import os
import socket
import sysconfig
from pathlib import Path

import pytest

from circuitlab.checks import max_parallel
from circuitlab.data.corpus import MAX_FILE_BYTES, load_code_folder
from circuitlab.files import read_regular

from .conftest import assert_one_line_error, run_cli, run_main
from .oai_reference import make_state, write_checkpoint
from .test_output_guard import BUILTINS_ONLY, OAI_CONFIG, builtins_only  # noqa: F401 (an autouse fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def hostile_code(tmp_path: Path) -> Path:
    """Two real modules next to every kind of special file named ``*.py``, and links to them."""
    folder = tmp_path / "code"
    folder.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("textwrap.py", "csv.py"):
        (folder / name).write_bytes((stdlib / name).read_bytes())
    (folder / "zero.py").symlink_to("/dev/zero")
    (folder / "null.py").symlink_to("/dev/null")
    os.mkfifo(folder / "fifo.py")
    (folder / "fifo-link.py").symlink_to(folder / "fifo.py")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "socket.py"))
    sock.close()
    (folder / "dangling.py").symlink_to(folder / "nowhere.py")
    return folder


def test_code_folders_read_regular_files_only(hostile_code: Path):
    code = load_code_folder(hostile_code)
    assert sorted(f.relpath for f in code.files) == ["csv.py", "textwrap.py"]
    assert sorted(code.skipped_special) == ["fifo-link.py", "fifo.py", "null.py", "socket.py", "zero.py"]
    assert code.skipped_counts()["not_regular"] == 5
    assert code.skipped_binary == ("dangling.py",)  # cannot be opened: skipped as before


def test_tasks_mine_from_counts_what_it_skipped(hostile_code: Path):
    proc = run_cli("tasks", "--mine-from", str(hostile_code), "--json", timeout=300, env=BUILTINS_ONLY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    source = json.loads(proc.stdout)["mine_from"]
    assert source["n_files"] == 2 and source["skipped"]["not_regular"] == 5
    text = run_cli("tasks", "--mine-from", str(hostile_code), timeout=300, env=BUILTINS_ONLY)
    assert "5 not regular" in text.stdout


def test_reads_stop_at_the_cap_whatever_the_size_says(tmp_path: Path):
    assert read_regular("/dev/zero", 1 << 20) is None  # a device: never read
    big = tmp_path / "big.py"
    big.write_bytes(b"x" * 1001)
    assert read_regular(big, 1000) is None and read_regular(big, 1001) == b"x" * 1001
    assert MAX_FILE_BYTES == 1 << 20


# ----------------------------------------------------------------------------------------------------
# import-oai: the config is bounded and checked against the weights before anything is built


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("oai") / "oai", OAI_CONFIG, make_state(OAI_CONFIG, seed=2))


@pytest.mark.parametrize("key, value, needles", [
    ("n_layer", 100_000_000, ["n_layer=100000000", "larger than the 1024"]),
    ("d_model", 2**40, ["d_model=1099511627776", "larger than"]),
    ("vocab_size", 2**40, ["vocab_size", "larger than"]),
    ("n_layer", 3, ["n_layer=3", "layers 0..0"]),
    ("d_mlp", 33, ["mlp.c_fc.weight", "(32, 16)", "(33, 16)"]),
    ("vocab_size", 65, ["wte.weight", "(64, 16)"]),
    ("block_size", 17, ["wpe.weight"]),
])
def test_hostile_configs_are_refused_before_a_model_is_built(checkpoint: Path, tmp_path: Path, key, value,
                                                             needles, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "final_model.pt").symlink_to(checkpoint / "final_model.pt")
    (src / "beeg_config.json").write_text(json.dumps({**OAI_CONFIG, key: value}))
    code, out, err = run_main(["import-oai", src, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "run").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]


# ----------------------------------------------------------------------------------------------------
# Thread, job and worker counts


@pytest.mark.parametrize("args", [
    ["prune", "--model", "RUN", "--pruner", "heaviside", "--threads", "1000000000"],
    ["prune", "--model", "RUN", "--pruner", "heaviside", "--jobs", "1000000000"],
    ["run", "--sparsity", "topk", "--pruner", "heaviside", "--threads", "1000000000"],
    ["bench", str(REPO / "benchmarks" / "quick.toml"), "--out", "OUT", "--workers", "1000000000"],
])
def test_thread_and_worker_counts_are_bounded(args, tmp_path: Path, capsys):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, f"at most {max_parallel()}", "per CPU core")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("section, key, value", [
    ("bench", "threads", 1_000_000_000), ("bench", "retries", 10**6), ("prune", "n_train", 10**9),
    ("prune", "n_test", 10**9), ("prune", "steps", 10**12), ("prune", "random_draws", 10**6),
    ("prune", "batch_pairs", 10**9),
])
def test_every_count_in_a_spec_is_bounded(section, key, value, tmp_path: Path, capsys):
    lines, current = (REPO / "benchmarks" / "quick.toml").read_text().splitlines(), ""
    for i, line in enumerate(lines):
        current = line.strip("[] ") if line.startswith("[") else current
        if current == section and line.split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        lines.insert(lines.index(f"[{section}]") + 1, f"{key} = {value}")
    spec = tmp_path / "spec.toml"
    spec.write_text("\n".join(lines) + "\n")
    code, _, err = run_main(["bench", spec, "--out", tmp_path / "out", "--dry-run"], capsys)
    assert_one_line_error(code, err, f"{section}.{key}", "must be at most")


@pytest.mark.parametrize("special", ["fifo", "zero"])
def test_a_document_that_is_not_a_regular_file_is_one_line(special, tmp_path: Path, capsys):
    """A run folder whose config.json is a FIFO (reading it would block forever) or a link to /dev/zero."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    if special == "fifo":
        os.mkfifo(run / "config.json")
    else:
        (run / "config.json").symlink_to("/dev/zero")
    code, _, err = run_main(["tasks", "--model", run], capsys)
    assert_one_line_error(code, err, "config.json", "not a regular file")
