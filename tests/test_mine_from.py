"""Tasks mined from any code: ``--mine-from DIR`` (tasks, prune, bench specs) and ``prune --eval-on DIR``.

The other folder is real Python the tiny run never saw: a handful of the stdlib's ``email`` modules
(the run's corpus is other stdlib modules, tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
import shutil
import sysconfig
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuitlab.config import PruneConfig, to_dict
from circuitlab.data.corpus import load_code_folder

from .conftest import assert_one_line_error, run_main

pytestmark = pytest.mark.usefixtures("one_thread")

EMAIL = ["_parseaddr.py", "feedparser.py", "generator.py", "header.py", "message.py", "quoprimime.py", "utils.py"]
FAST = ["--min-accuracy", "0", "--steps", "15", "--n-train", "24", "--n-test", "12", "--target-loss", "0.6"]


def copy_email(folder: Path, names=EMAIL) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"]) / "email"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(src / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def other_code(tmp_path_factory) -> Path:
    return copy_email(tmp_path_factory.mktemp("other") / "email")





def test_the_setting_is_left_out_of_configs_while_unset():
    """Cell keys and finished circuits of earlier releases keep matching."""
    assert "mine_from" not in to_dict(PruneConfig()) and "eval_on" not in to_dict(PruneConfig())
    assert to_dict(PruneConfig(mine_from="d"))["mine_from"] == "d"


def test_tasks_side_by_side_in_and_out_of_distribution(tiny_run: Path, other_code: Path, capsys):
    from circuitlab.tasks import load_pairs, resolve_tasks, task_context_for_run
    from circuitlab.train.runs import read_run

    code, out, err = run_main(["tasks", "--model", tiny_run, "--mine-from", other_code, "--n", "8", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    folder = load_code_folder(other_code)
    assert doc["out_of_distribution"]["folder"] == str(other_code.resolve())
    assert doc["out_of_distribution"]["folder_hash"] == folder.hash and doc["out_of_distribution"]["n_files"] == 7
    assert doc["out_of_distribution"]["n_files_trained_on"] == 0
    assert doc["in_distribution"]["corpus_hash"] and doc["in_distribution"]["corpus_hash"] != folder.hash
    assert {r["task"] for r in doc["tasks"]} == {"mined_quote", "mined_bracket"}  # only the mined tasks move
    for row in doc["tasks"]:
        for side in ("in_distribution", "out_of_distribution"):
            f = row[side]
            assert f["usable"] and 0 < f["n_pairs"] <= 8, (row, side)
            assert f["loss"] > 0 and 0 <= f["accuracy"] <= 1
    # The out-of-distribution pairs are cut from the folder: every prompt's source is one of its files.
    context = task_context_for_run(read_run(tiny_run), str(other_code))
    for task in resolve_tasks("mined", context):
        pairs = load_pairs(task, "test", 8, context)
        assert pairs and {p.source_a.split(":")[0] for p in pairs} <= set(EMAIL)
    code, out, err = run_main(["tasks", "--model", tiny_run, "--mine-from", other_code, "--n", "8"], capsys)
    assert code == 0, err
    header, columns, *rows = out.splitlines()
    assert "held-out corpus" in header and "--mine-from" in header and columns.split().count("acc") == 2
    assert rows[0].startswith("mined:mined_quote") and len(rows[0].split()) == 9  # name + pairs, loss, acc, [interval] per side
    assert str(other_code.resolve()) in out and folder.hash[:12] in out


def test_a_folder_with_files_the_model_trained_on_is_counted(tiny_run: Path, small_corpus: Path, tmp_path: Path,
                                                            capsys):
    from circuitlab.tasks import task_context_for_run
    from circuitlab.train.runs import read_run

    manifest = json.loads((tiny_run / "corpus_manifest.json").read_text())
    trained = next(f["path"] for f in manifest["files"] if f["split"] == "train")
    folder = copy_email(tmp_path / "mixed")
    shutil.copy(small_corpus / trained, folder / "copied.py")  # another name, the same content
    context = task_context_for_run(read_run(tiny_run), str(folder))
    assert context.mine_from.n_trained_on == 1 and context.mine_from.n_files == 8
    assert "1 of the 8 files" in capsys.readouterr().err


@pytest.mark.parametrize("make, needles", [
    (lambda p: p / "missing", ["--mine-from folder", "does not exist"]),
    (lambda p: (p / "file.py").write_text("x = 1\n") and p / "file.py", ["is not a folder"]),
    (lambda p: (p / "empty").mkdir() or p / "empty", ["has no usable .py files"]),
    (lambda p: (p / "few").mkdir() or (p / "few" / "a.py").write_text("x = 1\n") and p / "few",
     ["too few code positions", "pass a folder with more Python code"]),
    (lambda p: "", ["--mine-from is empty"]),
])
def test_bad_folders_are_one_line_errors(tiny_run: Path, tmp_path: Path, capsys, make, needles):
    folder = make(tmp_path)
    code, out, err = run_main(["tasks", "--model", tiny_run, "--mine-from", folder], capsys)
    assert_one_line_error(code, err, *needles)
    code, out, err = run_main(["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "mined",
                               "--mine-from", folder, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, *needles)
    code, out, err = run_main(["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "mined",
                               "--eval-on", folder, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, *[n.replace("--mine-from", "--eval-on") for n in needles])
    assert not (tmp_path / "o" / "circuits").exists()  # refused before any pruning


def test_run_refuses_a_bad_folder_before_training(tmp_path: Path, capsys):
    code, _, err = run_main(["run", "--sparsity", "topk", "--pruner", "heaviside", "--preset", "tiny",
                             "--eval-on", tmp_path / "missing", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "--eval-on folder", "does not exist")


def test_listing_without_a_model_cuts_the_tasks_from_the_folder(tiny_run: Path, other_code: Path, capsys,
                                                              monkeypatch):
    """Without --model the listing uses the default context's tokenizer (the stdlib's, trained on
    first use); the tiny run's stands in for it here, to keep the test fast."""
    from circuitlab.data.tokenizer import load_tokenizer
    from circuitlab.tasks import TaskContext, suites

    tokenizer = load_tokenizer(tiny_run / "tokenizer.json")
    monkeypatch.setattr(suites, "_context_for_corpus", lambda *a: TaskContext(tokenizer=tokenizer))
    code, out, err = run_main(["tasks", "--mine-from", other_code, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mine_from"]["folder_hash"] == load_code_folder(other_code).hash
    assert [r["task"] for r in doc["tasks"]] == ["mined_quote", "mined_bracket"]
    for row in doc["tasks"]:
        assert row["example"]["source_a"].split(":")[0] in EMAIL and row["usable"], row
    code, out, err = run_main(["tasks", "--mine-from", other_code], capsys)
    assert code == 0 and out.startswith("mined:mined_quote") and "mined from " in out.splitlines()[-1]


def test_mine_from_with_no_mined_task_selected(tiny_run: Path, other_code: Path, capsys):
    code, _, err = run_main(["tasks", "--model", tiny_run, "--mine-from", other_code, "--suite", "python"], capsys)
    assert_one_line_error(code, err, "--mine-from changes only the tasks mined from code")


def test_prune_mine_from_records_the_folder_and_its_hash(tiny_run: Path, other_code: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    args = ["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "mined:mined_quote",
            "--mine-from", other_code, "--out", out, "--json", *FAST]
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err
    summary, folder = json.loads(stdout), load_code_folder(other_code)
    assert summary["provenance"]["mine_from"]["folder"] == str(other_code.resolve())
    assert summary["provenance"]["mine_from"]["folder_hash"] == folder.hash
    assert summary["provenance"]["prune_config"]["mine_from"] == str(other_code)
    circuit = json.loads((out / "circuits" / "mined.mined_quote.json").read_text())
    pairs = circuit["provenance"]["pairs"]
    assert pairs["source"] == "mined" and pairs["folder_hash"] == folder.hash and pairs["n_files"] == 7
    assert circuit["provenance"]["prune_config"]["mine_from"] == str(other_code)
    assert "differs from this model's" not in err  # the shipped set is not meant for another folder
    # Changed code in the folder is another pair source: the circuit is pruned again, not reused.
    (other_code / "header.py").write_text((other_code / "header.py").read_text() + "\nX = ['a', \"b\"]\n")
    try:
        code, _, err = run_main(args, capsys)
        assert code == 0 and "kept from an earlier run" not in err, err
    finally:
        copy_email(other_code, ["header.py"])


def test_prune_eval_on_records_whether_the_circuit_transfers(tiny_run: Path, other_code: Path, tmp_path: Path,
                                                            capsys):
    from circuitlab.tasks import check_tokens, evaluate, load_pairs, resolve_tasks, task_context_for_run
    from circuitlab.train.runs import load_model

    out = tmp_path / "out"
    args = ["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "mined:mined_quote",
            "--eval-on", other_code, "--out", out, *FAST]
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err
    circuit = json.loads((out / "circuits" / "mined.mined_quote.json").read_text())
    t = circuit["transfer"]
    assert t["folder"] == str(other_code.resolve()) and t["folder_hash"] == load_code_folder(other_code).hash
    assert t["pairs"]["source"] == "mined" and 0 < t["n_pairs"] <= 12
    assert t["loss"] > 0 and 0 <= t["accuracy"] <= 1
    # The full model's figures there are those of 'circuitlab tasks' on the same pairs.
    model, tok, info = load_model(tiny_run)
    context = task_context_for_run(info, str(other_code))
    (task,) = resolve_tasks("mined:mined_quote", context)
    full = evaluate(model, tok, list(check_tokens(load_pairs(task, "test", 12, context), tok).pairs))
    assert full["n_pairs"] == t["n_pairs"] and full["accuracy"] == t["full_model_accuracy"]
    assert t["full_model_loss"] == pytest.approx(full["loss"], abs=1e-5)
    # The circuit's own pairs are still the held-out corpus ones; the summary names the folder.
    assert circuit["provenance"]["pairs"]["source"] != "mined"
    assert json.loads((out / "summary.json").read_text())["provenance"]["eval_on"]["folder_hash"] == t["folder_hash"]
    assert "--eval-on" in stdout and "mined_quote" in stdout.split("--eval-on: circuit")[1]
    code, stdout, err = run_main(args, capsys)  # a rerun keeps the circuit and its transfer figures
    assert code == 0 and "kept from an earlier run" in err and "--eval-on" in stdout
    code, _, err = run_main(["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "python:for_while",
                             "--eval-on", other_code, "--out", tmp_path / "o2", *FAST], capsys)
    assert code == 0 and "python:for_while: not mined from code" in err, err
    assert "transfer" not in json.loads((tmp_path / "o2" / "circuits" / "python.for_while.json").read_text())


@settings(max_examples=10)
@given(st.sets(st.sampled_from(EMAIL), min_size=1))
def test_mined_positions_of_any_folder_split_into_disjoint_train_and_test(names):
    """All of the folder's files are used; a position's split is a hash of where it is, so train and
    test pairs never share a position, and the folder's hash names exactly its content."""
    from circuitlab.tasks import TaskContext, mined_context, resolve_tasks

    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_email(Path(tmp) / "code", sorted(names))
        context = mined_context(TaskContext(), str(folder))
        assert context.mine_from.n_files == len(names)
        assert context.corpus_hash == load_code_folder(folder).hash
        for task in resolve_tasks("mined", context):
            train = task.make_pairs(64, 0, "train")
            test = task.make_pairs(64, 1, "test")
            where = {split: {s for p in pairs for s in (p.source_a, p.source_b)}
                     for split, pairs in (("train", train), ("test", test))}
            assert not where["train"] & where["test"]
            assert {s.split(":")[0] for s in where["train"] | where["test"]} <= names


def test_bench_spec_mine_from_pins_the_folder_hash(tiny_run: Path, other_code: Path, tmp_path: Path):
    import attrs
    import tomllib

    from circuitlab.bench.plan import cells_for, model_specs, prune_config
    from circuitlab.bench.spec import parse_spec
    from circuitlab.bench.work import _evaluate_tasks
    from circuitlab.errors import CircuitlabError
    from circuitlab.prune.task import LoadedModel

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "benchmarks" / "quick.toml").read_text())
    shutil.copytree(other_code, tmp_path / "code")
    data["prune"]["mine_from"] = "code"  # relative to the spec file
    data["tasks"]["mined:mined_quote"] = "0" * 64
    source = str(tmp_path / "spec.toml")
    with pytest.raises(CircuitlabError) as err:
        parse_spec(copy.deepcopy(data), source)
    folder_hash = load_code_folder(tmp_path / "code").hash
    assert 'tasks."mined:mined_quote"' in str(err.value) and folder_hash in str(err.value)
    data["tasks"]["mined:mined_quote"] = folder_hash
    spec = parse_spec(copy.deepcopy(data), source)
    assert spec.prune.mine_from == str((tmp_path / "code").resolve())
    model = model_specs(spec)[0]
    (cell, *_) = cells_for(spec, model, ["mined:mined_quote"])
    assert prune_config(spec, cell).mine_from == spec.prune.mine_from
    # A model's task evaluation cuts the pinned mined task from the folder (pins checked per model).
    figures = _evaluate_tasks(LoadedModel.load(tiny_run), attrs.evolve(spec, tasks={"mined:mined_quote": folder_hash}))
    assert figures["mined:mined_quote"].pairs["folder_hash"] == folder_hash
    assert figures["mined:mined_quote"].usable
    data["prune"]["mine_from"] = "nowhere"
    with pytest.raises(CircuitlabError, match=r"spec.toml: prune.mine_from: .*does not exist"):
        parse_spec(copy.deepcopy(data), source)
