"""The Python API (docs/api.md): circuitlab.load, tasks, prune, record, compare, and what a Circuit offers a
notebook. The tutorial notebook is executed in an ipykernel (nbclient) as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import circuitlab
from circuitlab.errors import CircuitlabError, UnknownNameError

from .conftest import run_main
from .test_view import browser  # noqa: F401  (the headless Chromium fixture)

ROOT = Path(__file__).resolve().parents[1]
TASK = "python:if_equals"
# No model quality is assumed of the tiny run: min_accuracy 0 prunes an unsolved task.
FAST = {"min_accuracy": 0, "steps": 15, "n_train": 24, "n_test": 12, "target_loss": 0.6}


@pytest.fixture(scope="module")
def model(tiny_run):
    return circuitlab.load(tiny_run)


@pytest.fixture(scope="module")
def circuit(model):
    return circuitlab.prune(model, TASK, **FAST)


def test_importing_circuitlab_and_naming_the_api_imports_no_torch():
    code = ("import sys, circuitlab\n"
            "names = [circuitlab.load, circuitlab.tasks, circuitlab.prune, circuitlab.record, circuitlab.compare, "
            "circuitlab.Circuit]\n"
            "assert all(callable(n) for n in names)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_callable_modules_are_still_the_modules():
    import circuitlab.tasks

    assert circuitlab.tasks.resolve_tasks is not None and circuitlab.prune.circuit.Circuit is circuitlab.Circuit
    assert circuitlab.compare.jaccard({1}, {1, 2}) == 0.5


def test_load_shows_the_run(model, tiny_run):
    assert model.path == Path(tiny_run) and model.tokenizer is not None
    assert f"{model.num_nodes} nodes" in repr(model) and "tokenizer" in repr(model)


def test_prune_is_the_circuit_of_the_command_line(model, circuit, tiny_run, tmp_path, capsys):
    """One task, the same settings: the API and 'circuitlab prune' choose the same nodes and edges."""
    args = ["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", TASK, "--out", tmp_path, "--min-accuracy",
            "0", "--steps", "15", "--n-train", "24", "--n-test", "12", "--target-loss", "0.6", "--json"]
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    cli = circuitlab.Circuit.load(tmp_path / "circuits" / "python.if_equals.json")
    assert cli.node_names == circuit.node_names and cli.edge_pairs == circuit.edge_pairs
    assert cli.loss == pytest.approx(circuit.loss) and cli.method == circuit.method == "heaviside"
    assert circuit.provenance["task"] == TASK and circuit.provenance["solved"]["threshold"] == 0


def test_a_task_can_be_named_by_task_or_by_record(model, circuit):
    task = next(t for t in circuitlab.tasks(TASK, model=model))
    again = circuitlab.prune(model, task, **FAST)
    bare = circuitlab.prune(model, "if_equals", **FAST)
    assert again.node_names == bare.node_names == circuit.node_names


def test_prune_settings_are_checked(model):
    with pytest.raises(UnknownNameError, match="unknown prune setting 'stepz'; did you mean 'steps'"):
        circuitlab.prune(model, TASK, stepz=10)
    with pytest.raises(CircuitlabError, match="does not take the setting 'tasks'"):
        circuitlab.prune(model, TASK, tasks="python")
    with pytest.raises(CircuitlabError, match="--target-loss"):
        circuitlab.prune(model, TASK, target_loss=-1)
    with pytest.raises(UnknownNameError, match="did you mean .heaviside."):
        circuitlab.prune(model, TASK, pruner="heavyside")


def test_an_unsolved_task_is_skipped_with_its_reason(model):
    with pytest.raises(circuitlab.TaskSkipped) as info:
        circuitlab.prune(model, TASK, min_accuracy=1.0, n_test=12)
    assert "below 1" in info.value.reason and "min_accuracy=0" in str(info.value)
    assert info.value.record.verdict == "unsolved" and info.value.task == TASK


def test_tasks_take_the_tasks_syntax(model):
    chosen = circuitlab.tasks("python:if_equals,var_if", model=model)
    assert chosen.names == ["python:if_equals", "python:var_if"]
    assert list(chosen.table().columns) == ["suite", "task", "description"] and len(chosen.table()) == 2
    assert "if_equals" in chosen._repr_html_()
    assert {t.suite for t in circuitlab.tasks("python", model=model)} == {"python"}
    with pytest.raises(UnknownNameError, match="did you mean 'python'"):
        circuitlab.tasks("pyhton")


def test_circuit_tables_match_its_counts(circuit, model):
    nodes, edges = circuit.nodes, circuit.edges
    assert list(nodes.columns) == ["name", "layer", "site", "index", "score"]
    assert len(nodes) == circuit.node_count and tuple(nodes["name"]) == circuit.node_names
    assert nodes["score"].notna().all()
    final = nodes[nodes["site"] == "final"]
    assert final["layer"].isna().all() and (nodes.loc[nodes["site"] != "final", "layer"] < model.config.n_layer).all()
    assert list(edges.columns) == ["source", "destination", "kind"] and len(edges) == circuit.edge_count
    counts = edges["kind"].value_counts().to_dict()
    assert counts.get("weight", 0) == circuit.edge_counts["weight"]
    assert counts.get("residual", 0) == circuit.edge_counts["residual"]
    assert set(edges["source"]) | set(edges["destination"]) <= set(nodes["name"])


def test_circuit_as_a_graph(circuit):
    g = circuit.to_networkx()
    assert g.number_of_nodes() == circuit.node_count and g.number_of_edges() == circuit.edge_count
    name = circuit.node_names[0]
    assert g.nodes[name]["site"] == circuit.nodes["site"][0] and g.graph["task"] == circuit.task
    for a, b in circuit.edge_pairs[:20]:
        assert g.edges[a, b]["kind"] in ("weight", "residual")


def test_circuit_file_round_trip(circuit, tmp_path):
    path = circuit.save(tmp_path / "sub" / "c.json")
    back = circuitlab.Circuit.load(path)
    assert back == circuit and bool((back.kept == circuit.kept).all())
    assert json.loads(path.read_text())["nodes"] == list(circuit.node_names)
    assert back.scores.tolist() == pytest.approx(circuit.scores.tolist(), rel=1e-5, abs=1e-12)
    circuit.save(path)  # a circuit file is replaced
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    with pytest.raises(CircuitlabError, match="not a circuit file"):
        circuit.save(other)
    assert other.read_text() == '{"mine": 1}'
    with pytest.raises(CircuitlabError, match="is not a circuit"):
        circuitlab.Circuit.load(other)


def test_a_circuit_whose_run_is_gone_loads_without_its_layout(circuit, tmp_path):
    doc = circuit.to_json()
    doc["provenance"] = {**doc["provenance"], "run": str(tmp_path / "gone")}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    back = circuitlab.Circuit.load(path)
    assert back.kept is None and back.node_names == circuit.node_names and back.nodes["score"].isna().all()
    with pytest.raises(CircuitlabError, match="no node layout"):
        circuitlab.compare(tmp_path / "store", back)


def test_an_imported_checkpoint_without_tokenizer_loads_for_logits(tmp_path):
    """A real 'circuitlab import-oai' of an OpenAI-format checkpoint, imported without a tokenizer."""
    import torch

    from .test_oai_import import WITH_SINK_AND_POS, _import

    run, _ = _import(tmp_path, WITH_SINK_AND_POS)
    m = circuitlab.load(run)
    assert m.tokenizer is None and "imported" in repr(m) and "no tokenizer (logits only)" in repr(m)
    with torch.no_grad():
        logits = m.model(torch.zeros(1, 5, dtype=torch.long))
    logits = logits[0] if isinstance(logits, tuple) else logits
    assert logits.shape == (1, 5, WITH_SINK_AND_POS["vocab_size"]) and torch.isfinite(logits).all()
    for needs_text in (lambda: circuitlab.prune(m, TASK, **FAST), lambda: circuitlab.tasks("python", model=m),
                       lambda: circuitlab.record(m, tmp_path / "store")):
        with pytest.raises(CircuitlabError, match="no tokenizer.json.*--tokenizer"):
            needs_text()


def test_record_and_compare_two_pruners(model, circuit, tmp_path):
    other = circuitlab.prune(model, TASK, pruner="sigmoid", **FAST)
    store = circuitlab.record(model, tmp_path / "acts.zarr", tasks=TASK, pairs=4, corpus_windows=4)
    assert store == tmp_path / "acts.zarr" and store.is_dir()
    with pytest.raises(UnknownNameError, match="record setting"):
        circuitlab.record(model, tmp_path / "x.zarr", windows=3)
    result = circuitlab.compare(store, circuit, other)
    assert sorted(result.methods["method"]) == ["heaviside", "sigmoid"]
    assert result.methods.set_index("method").loc["sigmoid", "nodes"] == other.node_count
    (pair,) = result.pairs.itertuples(index=False)
    a, b = set(circuit.node_names), set(other.node_names)
    assert pair.node_jaccard == pytest.approx(len(a & b) / len(a | b) if a | b else 1.0)
    assert "heaviside vs sigmoid" in repr(result)
    with pytest.raises(CircuitlabError, match="already has"):
        circuitlab.compare(store, circuit)
    with pytest.raises(CircuitlabError, match="two circuits of one method and task"):
        circuitlab.compare(store, circuit, circuit, overwrite=True)
    assert circuitlab.compare(store).pairs.equals(result.pairs)  # the store alone: what is stored


def test_the_inline_page_draws_the_circuit_in_chromium(circuit, browser, tmp_path):  # noqa: F811
    """What Jupyter shows for a circuit (``circuit_html``, which ``_repr_html_`` returns): the page of
    'circuitlab view' in a sandboxed iframe; it draws every node and edge and fetches nothing."""
    from circuitlab.config import ViewConfig
    from circuitlab.view import circuit_html

    out = tmp_path / "notebook.html"
    inline = circuit_html(circuit.to_json(), config=ViewConfig(ablation_pairs=2))
    out.write_text(f"<!doctype html><html><body><h1>a notebook cell</h1>{inline}</body></html>")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: requests.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: requests.append(f"page error: {e}"))
    page.goto(out.resolve().as_uri())
    frame = page.frame_locator("iframe.circuitlab-circuit")
    assert frame.locator("#graph circle.node").count() == circuit.node_count > 0
    assert frame.locator("#graph path.edge").count() == circuit.edge_count
    assert circuit.task in frame.locator("h1").inner_text()
    assert page.locator("h1").inner_text() == "a notebook cell"  # the page's styles and ids stay inside
    assert requests == [out.resolve().as_uri()], requests
    page.close()


@pytest.mark.slow
def test_the_tutorial_notebook_runs_and_shows_a_circuit_page(tmp_path, monkeypatch):
    """docs/tutorial.ipynb, executed top to bottom in an ipykernel of this Python; its assert cells pass
    and the circuit's cell shows the page of 'circuitlab view' inline."""
    import nbclient
    import nbformat

    # Only this interpreter's kernel: no user-level kernelspec named python3 may shadow it.
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "text/html" in o.get("data", {})]
    pages = [h for h in html if 'class="circuitlab-circuit"' in h]
    assert pages and "circuit-data" in pages[0] and "Content-Security-Policy" in pages[0]
    assert any("node_jaccard" in h for h in html)  # the comparison's table
