"""The output guard: no command writes over, into or in place of a folder that is not its own kind of output.

A table of every writing command x hostile ``--out`` paths: the working folder (``.``, ``..``, its
absolute path), the home folder (``~``), a folder of a user's files, and links to them. Each is refused
before any work with one stderr line and exit 2, even with ``--overwrite``, and every file is still
there afterwards, with nothing added.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitlab.errors import CircuitlabError
from circuitlab.outputs import guard_output, has_marker

from .conftest import assert_one_line_error, run_main
from .oai_reference import make_state, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
TASK = "python:if_equals"
# A small checkpoint without training-only keys (an import then prints nothing but its result).
OAI_CONFIG = {"block_size": 16, "vocab_size": 64, "n_layer": 1, "n_head": 2, "d_head": 8, "d_model": 16,
              "d_mlp": 32, "bias": True, "ln_bias": True, "rms_norm": True, "tied_unembed": False,
              "residual_activation_type": "identity", "activation_type": "gelu", "afrac": None,
              "enable_bigram_table": False, "sink": False}


#: Third-party plugins installed beside circuitlab may print warnings of their own: these tests load none.
BUILTINS_ONLY = {"CIRCUITLAB_LOAD_PLUGINS": ""}


@pytest.fixture(autouse=True)
def builtins_only(monkeypatch):
    """The built-in plugins only, for commands run in this process (as BUILTINS_ONLY does for subprocesses)."""
    from circuitlab import plugins

    monkeypatch.setattr(plugins.registry, "_registry", plugins.make_registry(entrypoints=False))


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, run folder imported from it): a real run folder in a second."""
    from circuitlab.interop import import_oai

    root = tmp_path_factory.mktemp("guard")
    src = write_checkpoint(root / "oai", OAI_CONFIG, make_state(OAI_CONFIG, seed=1))
    import_oai(src, root / "run")
    return src, root / "run"


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` (hidden ones too) with its bytes or link target."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.fixture()
def place(tmp_path: Path, monkeypatch) -> Path:
    """The working folder ``tmp/work`` and the home folder ``tmp/home``, each holding a user's file, a
    folder of user files (``mine``), and links to the working folder and to ``mine``."""
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home):
        (folder / "mine").mkdir(parents=True)
        (folder / "notes.txt").write_text("the user's notes\n")
        (folder / "mine" / "data.csv").write_text("1,2,3\n")
    (work / "notes.html").write_text("<html>the user's page</html>\n")
    (work / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\n the user's figure")
    (work / "notes.json").write_text('{"the user\'s": "data"}\n')
    (work / "mine.html").mkdir()
    (work / "link-to-work").symlink_to(work, target_is_directory=True)
    (work / "link-to-mine").symlink_to(work / "mine", target_is_directory=True)
    (work / "link.html").symlink_to(work / "notes.html")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    return tmp_path


FOLDERS = {
    "dot": ".", "dotdot": "..", "cwd": "{work}", "home": "~", "home-slash": "~/", "user-folder": "mine",
    "link-to-cwd": "link-to-work", "link-to-user-folder": "link-to-mine", "root": "/",
}
FILES = {"user-file": "notes.{ext}", "link-to-user-file": "link.html", "folder": "mine.html", "dot": ".",
         "cwd": "{work}"}


def command(name: str, out: str, src: Path, run: Path, root: Path) -> list[str]:
    return {
        "train": ["train", "--preset", "tiny", "--sparsity", "topk", "--out", out],
        "train-resume": ["train", "--preset", "tiny", "--sparsity", "topk", "--resume", "--out", out],
        "prune": ["prune", "--model", run, "--pruner", "heaviside", "--tasks", TASK, "--out", out],
        "prune-store": ["prune", "--model", run, "--pruner", "heaviside", "--tasks", TASK, "--out",
                        root / "pruned", "--store", out, "--overwrite"],
        "run": ["run", "--sparsity", "topk", "--pruner", "heaviside", "--preset", "tiny", "--out", out],
        "record": ["record", "--model", run, "--out", out, "--overwrite"],
        "bench": ["bench", REPO / "benchmarks" / "quick.toml", "--out", out],
        "export-mib": ["bench", "export-mib", root / "bench", "--to", out],
        "import-oai": ["import-oai", src, "--out", out, "--overwrite"],
        "import-replication": ["import-replication", src, "--out", out, "--overwrite"],
        "import-oai-circuit": ["import-oai-circuit", root / "viz_data.pt", "--model", run, "--out", out, "--overwrite"],
        "export-graph": ["export-graph", root / "c.json", "--out", out],
        "view": ["view", root / "c.json", "--out", out],
        "view-bench": ["view", "--bench", root / "bench", "--out", out],
        "plot": ["compare", root / "store.zarr", "--plot", out],
        "backups": ["backups", "--model", run, "--task", TASK, "--seeds", "2", "--rounds", "1", "--out", out],
        "prune-checkpoints": ["prune", "--model", run, "--pruner", "heaviside", "--tasks", TASK, "--checkpoints",
                              "--out", out],
    }[name]


FOLDER_COMMANDS = ["train", "train-resume", "prune", "prune-store", "run", "record", "bench", "export-mib",
                   "import-oai", "import-replication", "import-oai-circuit", "backups", "prune-checkpoints"]
FILE_COMMANDS = ["view", "view-bench", "plot", "export-graph"]


def _refused(place: Path, cmd: list, capsys) -> None:
    before = snapshot(place)
    code, out, err = run_main(cmd, capsys)
    assert_one_line_error(code, err)
    assert out == ""
    assert snapshot(place) == before  # nothing deleted, nothing added


@pytest.mark.parametrize("path", list(FOLDERS), ids=list(FOLDERS))
@pytest.mark.parametrize("name", FOLDER_COMMANDS)
def test_folder_outputs_refuse_hostile_paths(name, path, place: Path, imported, capsys):
    src, run = imported
    out = FOLDERS[path].format(work=place / "work")
    _refused(place, command(name, out, src, run, place), capsys)


@pytest.mark.parametrize("path", list(FILES), ids=list(FILES))
@pytest.mark.parametrize("name", FILE_COMMANDS)
def test_file_outputs_refuse_hostile_paths(name, path, place: Path, imported, capsys):
    src, run = imported
    out = FILES[path].format(work=place / "work", ext={"plot": "png", "export-graph": "json"}.get(name, "html"))
    _refused(place, command(name, out, src, run, place), capsys)


def test_the_input_is_never_the_output(place: Path, imported, capsys):
    src, run = imported
    _refused(place, ["import-oai", src, "--out", src, "--overwrite"], capsys)
    _refused(place, ["import-oai", src, "--out", src.parent, "--overwrite"], capsys)  # contains the input
    _refused(place, ["prune", "--model", run, "--pruner", "heaviside", "--tasks", TASK, "--out", run], capsys)
    _refused(place, ["record", "--model", run, "--out", run, "--overwrite"], capsys)


def test_overwrite_replaces_only_the_same_kind(place: Path, imported, capsys):
    """--overwrite replaces a run folder with a run folder; a store or a user's folder is never replaced."""
    src, run = imported
    again = place / "again"
    assert run_main(["import-oai", src, "--out", again], capsys)[0] == 0
    (again / "extra.txt").write_text("inside the old run: goes with it")
    code, _, err = run_main(["import-oai", src, "--out", again, "--overwrite"], capsys)
    assert code == 0, err
    assert not (again / "extra.txt").exists() and has_marker(again, "run")
    assert sorted(p.name for p in place.iterdir() if p.name.startswith(".")) == []  # no debris beside it
    store_like = place / "store.zarr"
    store_like.mkdir()
    (store_like / "zarr.json").write_text('{"zarr_format": 3, "attributes": {"schema": "circuitlab-store"}}')
    _refused(place, ["import-oai", src, "--out", store_like, "--overwrite"], capsys)


def test_empty_folders_and_new_paths_are_fine(place: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    for kind in ("run", "store", "pruned", "bench", "mib"):
        assert guard_output(tmp_path / "empty", kind) == tmp_path / "empty"
        assert guard_output(tmp_path / "new" / "deeper", kind) == tmp_path / "new" / "deeper"
    assert guard_output(tmp_path / "page.html", "page") == tmp_path / "page.html"
    with pytest.raises(CircuitlabError, match="is or contains the input"):
        guard_output(tmp_path / "empty", "run", inputs=(tmp_path / "empty" / "x.py",))


def test_a_page_circuitlab_wrote_may_be_replaced(tmp_path: Path):
    from circuitlab.view.html import bench_page

    page = tmp_path / "index.html"
    page.write_text(bench_page("t", [], [], []))
    assert has_marker(page, "page") and guard_output(page, "page") == page


def test_backups_and_track_folders_are_recognised_by_their_own_files(tmp_path: Path):
    """A rerun of `backups` or `prune --checkpoints` continues in its own folder; any other folder is refused."""
    import json

    finished, partial, track, partial_track = (tmp_path / n for n in ("b1", "b2", "t1", "t2"))
    for folder in (finished, partial, track, partial_track / "step-000100" / "circuits"):
        folder.mkdir(parents=True)
    (finished / "backups.json").write_text(json.dumps({"kind": "circuitlab-backups"}))
    (partial / "round-000.json").write_text(json.dumps({"kind": "circuitlab-backup-round"}))
    (track / "track.json").write_text(json.dumps({"kind": "circuitlab-track"}))
    assert has_marker(finished, "backups") and has_marker(partial, "backups")
    assert has_marker(track, "track") and has_marker(partial_track, "track")
    assert not has_marker(track, "backups") and not has_marker(finished, "track")
    (partial / "round-001.json").write_text('{"kind": "something else"}')
    assert not has_marker(partial, "backups")
    for folder, kind in ((partial, "backups"), (finished, "track")):
        with pytest.raises(CircuitlabError, match="--out"):
            guard_output(folder, kind)
