"""``circuitlab prune`` / ``run``: bad input (one line, exit 2) and an end-to-end prune of a tiny run."""

from __future__ import annotations

import json
import shutil

import pytest

from circuitlab import hookimpl, plugins
from circuitlab.tasks import PromptPair, Task

from .conftest import assert_one_line_error, run_main

pytestmark = pytest.mark.usefixtures("one_thread")





# ------------------------------------------------------------------------------------------------
# A toy suite whose contrast tokens exist in any byte-level BPE: digits after "(".


def _copy_digit(n: int, seed: int) -> list[PromptPair]:
    import random

    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        name = rng.choice(["x", "y", "value", "item", "count"])
        a, b = rng.sample("123456789", 2)
        pre = f"{rng.choice(['total', 'size', 'n', 'k'])} = {rng.randint(10, 999)}\n"
        pairs.append(PromptPair(prompt_a=f"{pre}{name} = {a}\nprint(", prompt_b=f"{pre}{name} = {b}\nprint(",
                                token_a=a, token_b=b))
    return pairs


class ToySuite:
    def __init__(self, context):
        self.context = context

    def tasks(self):
        return [Task(name="copy_digit", description="print( the digit assigned above", generate=_copy_digit,
                     suite="toy")]


class ToyPlugin:
    @hookimpl
    def register_task_suites(register):
        register("toy", ToySuite)


@pytest.fixture
def toy_registry(monkeypatch):
    reg = plugins.make_registry(extra_plugins=(ToyPlugin,), entrypoints=False)
    monkeypatch.setattr(plugins.registry, "_registry", reg)
    yield reg


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("args, needles", [
    (["--pruner", "heavyside"], ["heavyside", "did you mean 'heaviside'"]),
    (["--pruner", "heaviside", "--objective", "binary-ce"], ["binary-ce", "did you mean 'binary_ce'"]),
    (["--pruner", "heaviside", "--target-loss", "0"], ["--target-loss", "positive"]),
    (["--pruner", "heaviside", "--target-loss", "-0.5"], ["--target-loss", "positive"]),
    (["--pruner", "heaviside", "--target-loss", "nan"], ["--target-loss", "positive"]),
    (["--pruner", "heaviside", "--min-accuracy", "1.5"], ["--min-accuracy"]),
])
def test_prune_bad_flags_are_one_line_errors(tmp_path, capsys, args, needles):
    code, out, err = run_main(["prune", "--model", str(tmp_path), *args], capsys)
    assert_one_line_error(code, err, *needles)
    assert out == ""


def test_prune_model_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"kind": "something-else"}')
    code, out, err = run_main(["prune", "--model", str(tmp_path), "--pruner", "heaviside"], capsys)
    assert_one_line_error(code, err, "is not a circuitlab run")
    code, out, err = run_main(["prune", "--model", str(tmp_path / "missing"), "--pruner", "sigmoid"], capsys)
    assert_one_line_error(code, err, "is not a circuitlab run")


def test_run_bad_names_are_one_line_errors(capsys):
    code, _, err = run_main(["run", "--sparsity", "topkk", "--pruner", "heaviside"], capsys)
    assert_one_line_error(code, err, "did you mean 'topk'")
    code, _, err = run_main(["run", "--sparsity", "topk", "--pruner", "hardconcret"], capsys)
    assert_one_line_error(code, err, "did you mean 'hardconcrete'")
    code, _, err = run_main(["run", "--sparsity", "topk", "--pruner", "sigmoid", "--target-loss", "-1"], capsys)
    assert_one_line_error(code, err, "--target-loss")


def test_unknown_suite_and_task(tiny_run, capsys):
    code, _, err = run_main(["prune", "--model", str(tiny_run), "--pruner", "heaviside", "--tasks", "pyhton"], capsys)
    assert_one_line_error(code, err, "pyhton", "did you mean 'python'")
    code, _, err = run_main(["prune", "--model", str(tiny_run), "--pruner", "heaviside",
                             "--tasks", "python:single_double_qoute"], capsys)
    assert_one_line_error(code, err, "single_double_qoute", "did you mean 'single_double_quote'")


# ------------------------------------------------------------------------------------------------
# End to end on the tiny trained run (no model quality is assumed: --min-accuracy 0)


FAST = ["--steps", "15", "--n-train", "24", "--n-test", "12"]


def test_prune_end_to_end_json(tiny_run, tmp_path, capsys, toy_registry):
    import torch

    from circuitlab.model.nodes import NodeSpace
    from circuitlab.prune.ablation import MEANS_FILE
    from circuitlab.prune.edges import count_edges
    from circuitlab.train.runs import load_model

    out = tmp_path / "out"
    code, stdout, err = run_main(["prune", "--model", str(tiny_run), "--pruner", "heaviside", "--tasks", "toy",
                                  "--target-loss", "0.6", "--seed", "1", "--out", str(out), "--json", *FAST], capsys)
    assert code == 0, err
    doc = json.loads(stdout)  # stdout is exactly one JSON document; progress went to stderr
    assert "prune toy:copy_digit" in err
    assert {"tasks", "geomean_edges", "geomean_nodes", "skipped"} <= set(doc)
    (row,) = doc["tasks"]
    assert {"task", "nodes", "edges", "loss", "target_loss", "reached", "seconds"} <= set(row)
    assert row["task"] == "copy_digit" and row["target_loss"] == 0.6
    circuit = json.loads((out / "circuits" / "toy.copy_digit.json").read_text())
    assert json.loads((out / "summary.json").read_text())["tasks"][0]["nodes"] == row["nodes"]
    for key in ("nodes", "edges", "node_count", "edge_count", "loss", "accuracy", "target_loss", "reached",
                "seconds", "provenance", "validations"):
        assert key in circuit
    assert set(circuit["validations"]) >= {"sufficiency", "necessity", "random"}
    assert circuit["provenance"]["plugins"][0]["name"] == "heaviside"
    assert circuit["node_count"] == len(circuit["nodes"]) == row["nodes"]
    assert circuit["edge_count"] == len(circuit["edges"]) == row["edges"]
    # Recount the edges from the stored node names.
    model, _, _ = load_model(tiny_run)
    space = NodeSpace.from_config(model.config)
    kept = torch.zeros(space.num_nodes, dtype=torch.bool)
    kept[[space.index(n) for n in circuit["nodes"]]] = True
    assert count_edges(model, kept)["total"] == row["edges"]
    assert (tiny_run / MEANS_FILE).exists()  # node means cached in the run folder
    # Same seed, same circuit.
    code, stdout2, _ = run_main(["prune", "--model", str(tiny_run), "--pruner", "heaviside", "--tasks", "toy",
                                 "--target-loss", "0.6", "--seed", "1", "--out", str(tmp_path / "o2"), "--json",
                                 *FAST], capsys)
    assert code == 0
    again = json.loads((tmp_path / "o2" / "circuits" / "toy.copy_digit.json").read_text())
    assert again["nodes"] == circuit["nodes"] and again["loss"] == circuit["loss"]


def test_unreachable_target_is_a_not_reached_row(tiny_run, tmp_path, capsys, toy_registry):
    code, stdout, err = run_main(["prune", "--model", str(tiny_run), "--pruner", "sigmoid", "--tasks", "toy:copy_digit",
                                  "--target-loss", "1e-9", "--out", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    assert "not reached: toy:copy_digit" in stdout
    doc = json.loads((tmp_path / "summary.json").read_text())
    (row,) = doc["tasks"]
    assert row["reached"] is False and row["loss"] == pytest.approx(row["full_model_loss"])
    assert doc["geomean_edges"] is None


def test_min_accuracy_skips_unsolved_tasks(tiny_run, tmp_path, capsys, toy_registry):
    code, stdout, err = run_main(["prune", "--model", str(tiny_run), "--pruner", "hardconcrete", "--tasks", "toy",
                                  "--min-accuracy", "1.0", "--out", str(tmp_path), "--json", *FAST], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    acc = doc["skipped"][0]["accuracy"] if doc["skipped"] else None
    if acc is not None:  # a 60-step model does not copy digits perfectly: listed, with its accuracy
        assert doc["tasks"] == [] and acc < 1.0 and "copy_digit" == doc["skipped"][0]["task"]
    else:
        assert doc["tasks"][0]["task"] == "copy_digit"


def test_run_reuses_a_cached_model(tiny_run, tmp_path, capsys, toy_registry, monkeypatch):
    """``run`` trains once per config hash; a second run reuses the cached model."""
    import circuitlab.train.loop as train_mod  # where ensure_model finds train_run

    calls = []

    def fake_train_run(config, out, *, model_config=None, resume=False, progress=True):
        calls.append(out)
        shutil.copytree(tiny_run, out)
        return out

    monkeypatch.setattr(train_mod, "train_run", fake_train_run)
    args = ["run", "--sparsity", "topk", "--pruner", "heaviside", "--preset", "tiny", "--tasks", "toy",
            "--min-accuracy", "0", "--target-loss", "0.6", "--json", *FAST]
    code, stdout, err = run_main([*args, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    first = json.loads(stdout)
    assert len(calls) == 1 and first["model_reused"] is False
    code, stdout, err = run_main([*args, "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    second = json.loads(stdout)
    assert len(calls) == 1 and second["model_reused"] is True
    assert first["tasks"][0]["nodes"] == second["tasks"][0]["nodes"]
    assert (tmp_path / "b" / "circuits" / "toy.copy_digit.json").exists()


class _ChattySuite(ToySuite):
    def tasks(self):
        print("a plugin printing to stdout")  # exactly what --json must survive
        return super().tasks()


class ChattyPlugin:
    @hookimpl
    def register_task_suites(register):
        register("chatty", _ChattySuite)


def test_json_stdout_holds_only_the_document_when_a_plugin_prints(monkeypatch, capsys):
    monkeypatch.setattr(plugins.registry, "_registry",
                        plugins.make_registry(extra_plugins=(ChattyPlugin,), entrypoints=False))
    code, out, err = run_main(["tasks", "--suite", "chatty", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["count"] == 1
    assert "a plugin printing to stdout" in err
