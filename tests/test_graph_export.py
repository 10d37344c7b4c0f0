"""``circuitlab export-graph --format circuit-tracer``: circuit-tracer's own schema accepts it, its viewer serves it."""

from __future__ import annotations

import functools
import json
import threading
import urllib.request

import pytest
from circuit_tracer.frontend.graph_models import Model
from circuit_tracer.frontend.local_server import (
    DEFAULT_FRONTEND_DIR,
    CircuitGraphHandler,
    ReusableTCPServer,
    Server,
)

from .conftest import assert_one_line_error, run_main
from .test_oai_circuits import _viz

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tiny):
    return tiny.run()


@pytest.fixture()
def circuit(tmp_path, run, capsys):
    path, _ = _viz(tmp_path, run)
    code, _, err = run_main(["import-oai-circuit", path, "--model", run, "--out", tmp_path / "c"], capsys)
    assert code == 0, err
    return tmp_path / "c" / "bracket_counting.prune_v2.17.json"


def _serve_local(data_dir):
    """circuit-tracer's viewer server (its handler and Server), bound to loopback on a free port."""
    handler = functools.partial(CircuitGraphHandler, frontend_dir=DEFAULT_FRONTEND_DIR, data_dir=str(data_dir))
    httpd = ReusableTCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return Server(httpd, thread), httpd.server_address[1]


def test_export_validates_and_is_served(tmp_path, run, circuit, capsys):
    store = tmp_path / "store.zarr"
    code, _, err = run_main(["record", "--model", run, "--tasks", "none", "--corpus-windows", "4", "--out", store,
                             "--quiet"], capsys)
    assert code == 0, err
    out = tmp_path / "graphs" / "quote.json"
    code, stdout, err = run_main(["export-graph", circuit, "--format", "circuit-tracer", "--out", out,
                                  "--store", store, "--pair", "1", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    graph = Model.model_validate(doc)  # circuit-tracer's own schema
    cdoc = json.loads(circuit.read_text())
    features = [n for n in graph.nodes if n.feature_type == "cross layer transcoder"]
    assert {n.clerp.split(" | ")[0] for n in features} == set(cdoc["nodes"])
    assert all(" | top: " in n.clerp for n in features)  # top-activating tokens from the store
    assert len({n.ctx_idx for n in graph.nodes}) == 1 and all(n.activation is not None for n in features)
    logits = [n for n in graph.nodes if n.feature_type == "logit"]
    assert sorted(n.is_target_logit for n in logits) == [False, True]
    ids = {n.node_id for n in graph.nodes}
    assert graph.links and all(ln["source"] in ids and ln["target"] in ids for ln in graph.links)
    feature_ids = {n.node_id for n in features}
    assert any(ln["source"] in feature_ids and ln["target"] in feature_ids for ln in graph.links)
    index = json.loads((out.parent / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["quote"]
    assert json.loads(stdout)["nodes"] == len(graph.nodes)
    # The viewer serves the graph and its index over loopback.
    server, port = _serve_local(out.parent)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/graph_data/quote.json", timeout=10) as r:
            served = json.loads(r.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/graph-metadata.json", timeout=10) as r:
            listed = json.loads(r.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as r:
            assert r.status == 200
    finally:
        server.stop()
    assert served == doc and listed["graphs"][0]["slug"] == "quote"


def test_export_bad_input(tmp_path, run, circuit, capsys):
    code, _, err = run_main(["export-graph", circuit, "--out", tmp_path / "g.txt"], capsys)
    assert_one_line_error(code, err, "must end in .json")
    code, _, err = run_main(["export-graph", circuit, "--out", tmp_path / "g.json", "--pair", "-1"], capsys)
    assert_one_line_error(code, err, "--pair")
    (tmp_path / "trunc.json").write_text(circuit.read_text()[:200])
    code, _, err = run_main(["export-graph", tmp_path / "trunc.json", "--out", tmp_path / "g.json"], capsys)
    assert_one_line_error(code, err, "trunc.json")
    doc = json.loads(circuit.read_text())
    (tmp_path / "other.json").write_text(json.dumps({**doc, "total_nodes": doc["total_nodes"] + 7}))
    code, _, err = run_main(["export-graph", tmp_path / "other.json", "--out", tmp_path / "g.json"], capsys)
    assert_one_line_error(code, err, "nodes but the circuit's model", "--model")
    (tmp_path / "foreign.json").write_text(json.dumps({"graphs": []}))
    code, _, err = run_main(["export-graph", tmp_path / "foreign.json", "--out", tmp_path / "g.json"], capsys)
    assert_one_line_error(code, err, "foreign.json", "not a circuit")
    (tmp_path / "graph-metadata.json").write_text("[1, 2]")
    code, _, err = run_main(["export-graph", circuit, "--out", tmp_path / "g.json"], capsys)
    assert_one_line_error(code, err, "graph index")
    assert not (tmp_path / "g.txt").exists() and not (tmp_path / "g.json").exists()
