"""``circuitlab tasks``: listing, evaluating a run, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import run_cli


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_listing_json_has_both_suites_and_at_least_14_tasks():
    proc = run_cli("tasks", "--json", check=True)
    doc = json.loads(proc.stdout)
    assert doc["count"] == len(doc["tasks"]) >= 14
    suites = {row["suite"] for row in doc["tasks"]}
    assert {"python", "mined"} <= suites
    for row in doc["tasks"]:
        ex = row["example"]
        assert row["description"] and ex["token_a"] != ex["token_b"]
        assert row["usable"] is True, row
    mined = [row["example"] for row in doc["tasks"] if row["suite"] == "mined"]
    assert all(":" in ex["source_a"] and ":" in ex["source_b"] for ex in mined)


def test_human_listing_of_one_task():
    proc = run_cli("tasks", "--suite", "python:var_swap", check=True)
    assert proc.stdout.startswith("python:var_swap  ")
    assert "    A: " in proc.stdout and "    B: " in proc.stdout


def test_unknown_suite_and_task_suggest_names():
    _one_line_error(run_cli("tasks", "--suite", "pyhton"), "unknown task suite 'pyhton'", "did you mean 'python'")
    _one_line_error(run_cli("tasks", "--suite", "python:bracket_countin"), "unknown task 'bracket_countin'",
                    "did you mean 'bracket_counting'")


def test_model_that_is_not_a_run(tmp_path: Path):
    _one_line_error(run_cli("tasks", "--model", str(tmp_path)), "is not a circuitlab run")


def test_malformed_benchmark_file_names_file_and_line(tmp_path: Path):
    folder = tmp_path / "python"
    folder.mkdir()
    (folder / "for_while.jsonl").write_text(
        '{"kind": "circuitlab-taskset", "suite": "python", "task": "for_while", "seed_train": 0, "seed_test": 1}\n'
        '{"split": "train", "prompt_a": "for x"\n')
    proc = run_cli("tasks", "--suite", "python:for_while", env={"CIRCUITLAB_TASKSETS": str(tmp_path)})
    _one_line_error(proc, f"{folder / 'for_while.jsonl'}:2:", "not valid JSON")


def test_evaluate_a_run_on_every_task(tiny_run: Path):
    proc = run_cli("tasks", "--model", str(tiny_run), "--n", "8", "--json", check=True)
    doc = json.loads(proc.stdout)
    rows = {f"{r['suite']}:{r['task']}": r for r in doc["tasks"]}
    assert len(rows) >= 14 and "2x" in doc["loss_convention"]
    for name, row in rows.items():
        if not row["usable"]:
            assert row["problem"], name  # an unusable task says why; the others still ran
            continue
        assert 0 < row["n_pairs"] <= 8
        assert row["loss"] > 0 and 0.0 <= row["accuracy"] <= 1.0
        assert row["pair_loss"] == 2 * row["loss"]
    assert sum(r["usable"] for r in rows.values()) >= 12
    human = run_cli("tasks", "--model", str(tiny_run), "--suite", "python:for_while", "--n", "4", check=True)
    assert human.stdout.splitlines()[1].startswith("python:for_while")


def test_run_whose_corpus_is_gone_still_scores_the_templated_tasks(tiny_run: Path, tmp_path: Path):
    """Mined tasks need the run's corpus; without it they are reported, and the other tasks still run."""
    run = tmp_path / "moved-run"
    run.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "corpus_manifest.json"):
        shutil.copy(tiny_run / name, run / name)
    config = json.loads((tiny_run / "config.json").read_text())
    config["train"]["corpus"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(config))
    proc = run_cli("tasks", "--model", str(run), "--n", "4", "--json", check=True)
    rows = {r["task"]: r for r in json.loads(proc.stdout)["tasks"]}
    assert not rows["mined_quote"]["usable"] and "no test pairs" in rows["mined_quote"]["problem"]
    assert rows["for_while"]["usable"] and rows["for_while"]["n_pairs"] == 4
    assert "does not exist" in proc.stderr
