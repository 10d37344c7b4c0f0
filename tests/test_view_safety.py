"""``circuitlab view`` on hostile and malformed documents.

Hostile strings go through every field of every document ``view`` reads (circuit files, bench cells,
summaries, and the store-derived parts of a page's data); the pages are opened in real headless
Chromium, where no injected element may appear, no dialog may open and no Content-Security-Policy
violation or console error may be logged. A document that does not fit its schema is one line naming
the file and the key, exit 2.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from circuitlab.prune.circuit import CircuitDocument
from circuitlab.view.html import bench_page, circuit_page

from .conftest import assert_one_line_error, run_main

#: Each tries a different way out of its context; every element one would create has the class "pwn".
HOSTILE = [
    "<script class=pwn>alert(1)</script>",
    '"><img class=pwn src=x onerror=alert(2)>',
    "</script><script class=pwn>alert(3)</script>",
    "'><svg class=pwn onload=alert(4)>",
    "<style class=pwn>*{display:none}</style><!--",
    "javascript:alert(5)//<b class=pwn>",
    "]]><iframe class=pwn srcdoc='<script>alert(6)</script>'>\u2028",
]
#: File and folder names cannot hold "/": these do not.
HOSTILE_NAMES = ['"><img class=pwn src=x onerror=alert(7)>', "<svg class=pwn onload=alert(8)>"]


def minimal_circuit(**changes) -> dict:
    """A small well-formed circuit document, as ``Circuit.to_json`` writes one (no run, no store)."""
    doc = {"kind": "circuitlab-circuit", "task": "copy_digit", "suite": "toy", "method": "heaviside/binary_ce",
           "node_count": 2, "edge_count": 1, "edge_counts": {"weight": 1, "residual": 0, "total": 1},
           "total_nodes": 40, "loss": 0.5, "accuracy": 0.75, "train_loss": 0.4, "target_loss": 0.6, "reached": True,
           "full_model_loss": 0.3, "full_model_accuracy": 1.0, "calibration": None, "mask_nodes": 2,
           "bisection": [[2, 0.4]], "validations": {"sufficiency": 0.5, "necessity": 0.9, "random": 0.8,
                                                    "random_draws": [0.8], "full_model": 0.3, "all_ablated": 1.2},
           "seconds": 1.0, "nodes": ["0.mlp.neuron.1", "final.0"], "edges": [["0.mlp.neuron.1", "final.0"]],
           "scores": [], "effect_scores": False, "provenance": {"run": "nowhere", "ablation": "mean"}}
    doc.update(changes)
    return doc


def hostile_circuit(h: str) -> dict:
    """Every free string of a circuit document set to ``h`` (node names have a grammar: tested apart)."""
    return minimal_circuit(task=h, suite=h, method=h, provenance={"run": h, "ablation": h,
                                                                  "prune_config": {"ablation": h, "mine_from": h}},
                           calibration={"scale": h}, **{h: h})


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: 'make test' installs it (apt-get install -y chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Watched:
    """A page with every dialog, console error, CSP violation and page error recorded as a problem."""

    def __init__(self, browser, path: Path):
        self.problems: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") or "Content Security Policy" in m.text else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.goto(path.resolve().as_uri())

    def check(self, scripts: int) -> None:
        """No injected element, only the page's own scripts, and nothing went wrong."""
        page = self.page
        page.wait_for_timeout(50)  # an onerror= of a broken image would fire by now
        assert page.locator(".pwn").count() == 0
        assert page.locator("img, iframe, object, embed, [onerror], [onload]").count() == 0
        assert page.locator("script").count() == scripts
        assert self.problems == [], self.problems
        self.page.close()


def _all_strings(page) -> str:
    return page.locator("body").inner_text()


def test_hostile_circuit_fields_stay_text(browser, tmp_path, capsys):
    for i, h in enumerate(HOSTILE):
        path = tmp_path / f"c{i}.json"
        path.write_text(json.dumps(hostile_circuit(h)))
        out = tmp_path / f"c{i}.html"
        code, _, err = run_main(["view", path, "--out", out], capsys)
        assert code == 0, err
        page = Watched(browser, out)
        assert h.strip() in page.page.locator("h1").inner_text()  # shown as text, not parsed
        assert h.strip() in page.page.locator("#summary").inner_text()
        assert h.strip() in page.page.locator("#notes").inner_text()  # the run named in provenance
        page.page.locator("#graph circle.node").first.click()
        page.check(scripts=2)  # the data block and circuit.js


def test_hostile_file_names_stay_text(browser, tmp_path, capsys):
    for name in HOSTILE_NAMES:
        folder = tmp_path / name
        folder.mkdir()
        path = folder / f"{name}.json"
        path.write_text(json.dumps(minimal_circuit()))
        out = tmp_path / "page.html"
        code, _, err = run_main(["view", path, "--out", out], capsys)
        assert code == 0, err
        Watched(browser, out).check(scripts=2)


def test_hostile_page_data_from_the_store_stays_text(browser, tmp_path):
    """Every string of a page's data (method labels and sources from the store, examples, notes, node keys,
    the run and store paths) set to hostile text, then every view of the page drawn."""
    for i, h in enumerate(HOSTILE):
        node = {"layer": 0, "site": "mlp.neuron", "index": 1, "mean": h, "delta": h,
                "examples": [{"activation": h, "before": h, "token": h, "after": h, "task": h}]}
        final = {**node, "layer": None, "site": "final", "index": 0}
        method = {"label": h, "source": h, "nodes": ["0.mlp.neuron.1", "final.0"], "scores": {"0.mlp.neuron.1": h},
                  "edges": [["0.mlp.neuron.1", "final.0", None]], "loss": h, "node_count": h, "edge_count": h}
        data = {"kind": "circuitlab-view", "circuit": {k: h for k in (
                    "task", "suite", "method", "node_count", "edge_count", "loss", "accuracy", "train_loss",
                    "target_loss", "reached", "full_model_loss", "full_model_accuracy", "total_nodes")},
                "file": h, "run": h, "store": h, "n_layer": 1, "sites": ["mlp.neuron", "final"],
                "nodes": {"0.mlp.neuron.1": node, "final.0": final},
                "methods": [method, {**copy.deepcopy(method), "nodes": ["final.0"]}],
                "ablation": {"base_loss": h, "pairs": h, "ablation": h}, "notes": {"weights": h, h: h}}
        data["circuit"]["validations"] = {"sufficiency": h, "necessity": h, "random": h}
        out = tmp_path / f"data{i}.html"
        out.write_text(circuit_page(data))
        page = Watched(browser, out)
        p = page.page
        circle = p.locator("#graph circle.node").first
        circle.hover()
        assert h.strip() in p.locator("#tip").inner_text()
        circle.click()
        assert h.strip() in p.locator("#examples").inner_text()
        p.select_option("#method-b", "1")
        assert h.strip() in p.locator("#shown").inner_text()
        assert h.strip() in _all_strings(p)
        page.check(scripts=2)


def test_hostile_bench_documents_stay_text(browser, tmp_path, capsys):
    """A bench folder whose folder names, circuit files, prune summary (keys, rows and figures) and bench
    cells all carry hostile strings; then its index and each circuit page in Chromium."""
    root = tmp_path / "bench"
    for j, name in enumerate(HOSTILE_NAMES):
        run = root / name
        (run / "circuits").mkdir(parents=True)
        (run / "cells").mkdir()
        for i, h in enumerate(HOSTILE):
            (run / "circuits" / f"t{i}.json").write_text(json.dumps(hostile_circuit(h)))
            cell = {"kind": "circuitlab-bench-cell", "status": "done", "circuit": hostile_circuit(h),
                    "cell": {"model_id": h, "control": h, "seed": h}, "result": {"beats_full_model": h},
                    "faithfulness": {"nodes": {"cpr": h, "cmd": h}}}
            (run / "cells" / f"{name}-{i}.json").write_text(json.dumps(cell))
        rows = [{"file": str(run / "circuits" / f"t{i}.json"), h: h, "task": h, "extra": h}
                for i, h in enumerate(HOSTILE)]
        summary = {"kind": "circuitlab-prune-summary", "n_circuits": len(rows), "n_reached": j,
                   "geomean_edges": 1.5, "geomean_nodes": None, "tasks": rows, HOSTILE[0]: HOSTILE[1]}
        (run / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "view" / "index.html"
    code, _, err = run_main(["view", "--bench", root, "--out", out, "--ablation-pairs", "0"], capsys)
    assert code == 0, err
    page = Watched(browser, out)
    p = page.page
    assert p.locator("table.bench tbody tr").count() == 2 * 2 * len(HOSTILE)
    text = _all_strings(p)
    assert all(h.strip() in text for h in HOSTILE) and all(n in text for n in HOSTILE_NAMES)
    assert "0 of 7 circuits reached the target; geomean edges 1.5, nodes n/a" in text
    links = [a.get_attribute("href") for a in p.locator("a").all()]
    assert links and all(link.startswith(("./", "../")) for link in links)
    page.check(scripts=0)  # the index runs no script at all
    for page_file in sorted((out.parent / "circuits").glob("*.html"))[:4]:
        Watched(browser, page_file).check(scripts=2)


def test_hostile_backups_and_track_documents_stay_text(browser, tmp_path, capsys):
    """backups.json and track.json with hostile values in every shown field, and a plot file that is not a PNG."""
    for kind, key, image in (("circuitlab-backups", "rounds", "backups.png"), ("circuitlab-track", "rows", "track.png")):
        folder = tmp_path / kind
        folder.mkdir()
        columns = ("round", "reached", "size_min", "excluded", "task", "step", "nodes", "loss", "jaccard_final")
        rows = [{c: h for c in columns} for h in HOSTILE]
        doc = {"kind": kind, key: rows, "task": HOSTILE[0], "model": HOSTILE[1], "steps": HOSTILE[2],
               "depth": HOSTILE[3], "target_loss": HOSTILE[4], "model_misses_round": HOSTILE[5]}
        (folder / "doc.json").write_text(json.dumps(doc))
        (folder / image).write_text('<script>alert(1)</script>')  # not a PNG: left out
        out = tmp_path / f"{kind}.html"
        code, stdout, err = run_main(["view", folder / "doc.json", "--out", out], capsys)
        assert code == 0 and f"{len(HOSTILE)} rows" in stdout and "plot" not in stdout, err
        page = Watched(browser, out)
        assert page.page.locator("table.bench tbody tr").count() == len(HOSTILE)
        text = _all_strings(page.page)
        assert all(h.strip() in text for h in HOSTILE)
        page.check(scripts=0)


def test_pages_allow_only_their_own_scripts_and_styles(browser, tmp_path):
    html = circuit_page({"circuit": {"task": "t"}, "nodes": {}, "methods": [{"label": "m", "nodes": [], "edges": []}],
                         "n_layer": 1, "sites": ["final"], "notes": {}})
    policy = html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'sha256-" in policy and "style-src 'sha256-" in policy and "default-src 'none'" in policy
    assert "script-src 'none'" in bench_page("t", [], [], []).split("</head>")[0]
    # The policy holds even if markup got in by some other way: an inline script, a handler, a style
    # attribute are refused (each a CSP violation), and the page's own script still runs.
    planted = html.replace("<body>", '<body><script>alert("inline")</script><img src=x onerror="alert(1)">'
                                     '<p id="styled" style="color: red">x</p>', 1)
    path = tmp_path / "planted.html"
    path.write_text(planted)
    page = Watched(browser, path)
    page.page.wait_for_timeout(100)
    assert not any(p.startswith("dialog") for p in page.problems), page.problems
    refused = [p for p in page.problems if "Content Security Policy" in p]
    assert len(refused) >= 3, page.problems
    assert page.page.locator("#styled").evaluate("e => getComputedStyle(e).color") != "rgb(255, 0, 0)"
    assert page.page.locator("#method-a option").count() == 1  # circuit.js ran
    page.page.close()


# ---------------------------------------------------------------------------------------------------
# Documents that do not fit their schema: one line naming the file and the key, exit 2.


@pytest.mark.parametrize(("change", "key"), [
    ({"nodes": None}, "'nodes': the key is missing"),
    ({"method": None}, "'method': the key is missing"),
    ({"nodes": 5}, "'nodes': expected a list, got 5"),
    ({"nodes": "0.mlp.neuron.1"}, "'nodes': expected a list"),
    ({"nodes": ["<script>alert(1)</script>"]}, "'nodes[0]'"),
    ({"nodes": ["99999999.mlp.neuron.1"]}, "'nodes[0]'"),
    ({"edges": [[1, 2, 3]]}, "'edges[0]': expected a list of 2 items, got 3"),
    ({"edges": [["0.mlp.neuron.1", "0.mlp.nope.1"]]}, "'edges[0][1]'"),
    ({"provenance": "x"}, "'provenance': expected an object, got 'x'"),
    ({"provenance": {"run": 5}}, "'provenance.run': expected a string, got 5"),
    ({"loss": float("nan")}, "'loss': expected a finite number, got nan"),
    ({"scores": [0.1, float("inf")]}, "'scores[1]': expected a finite number"),
    ({"validations": {"sufficiency": "x"}}, "'validations."),
    ({"reached": "yes"}, "'reached': expected true or false"),
    ({"node_count": 2.5}, "'node_count': expected an integer"),
])
def test_a_circuit_that_does_not_fit_is_one_line(tmp_path, capsys, change, key):
    doc = minimal_circuit()
    for k, v in change.items():
        if v is None:
            del doc[k]
        else:
            doc[k] = v
    path = tmp_path / "circuits" / "bad.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))  # NaN and Infinity as Python's json writes them
    code, _, err = run_main(["view", path, "--out", tmp_path / "x.html"], capsys)
    assert_one_line_error(code, err, f"circuit {str(path)!r} does not fit its schema", key)
    assert not (tmp_path / "x.html").exists()
    # The same file in a bench folder: the index is not written with a silent gap.
    code, _, err = run_main(["view", "--bench", tmp_path, "--out", tmp_path / "index.html"], capsys)
    assert_one_line_error(code, err, str(path), key)


def test_a_bench_cell_whose_circuit_does_not_fit_is_one_line(tmp_path, capsys):
    path = tmp_path / "cells" / "a.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"kind": "circuitlab-bench-cell", "circuit": minimal_circuit(edges=[["final.0"]])}))
    code, _, err = run_main(["view", "--bench", tmp_path, "--out", tmp_path / "index.html"], capsys)
    assert_one_line_error(code, err, f"{path}: circuit", "'edges[0]': expected a list of 2 items, got 1")


@pytest.mark.parametrize(("change", "key"), [
    ({"geomean_edges": "many"}, "'geomean_edges': expected a number, got 'many'"),
    ({"n_reached": "<b>3</b>"}, "'n_reached': expected an integer"),
    ({"tasks": {"file": "x"}}, "'tasks': expected a list"),
    ({"tasks": [{"file": 3}]}, "'tasks[0].file': expected a string, got 3"),
    ({"tasks": ["x"]}, "'tasks[0]': expected an object"),
])
def test_a_summary_that_does_not_fit_is_one_line(tmp_path, capsys, change, key):
    (tmp_path / "circuits").mkdir()
    (tmp_path / "circuits" / "copy_digit.json").write_text(json.dumps(minimal_circuit()))
    summary = {"kind": "circuitlab-prune-summary", "n_circuits": 1, "n_reached": 1, "geomean_edges": 1.0,
               "geomean_nodes": 2.0, "tasks": [{"file": str(tmp_path / "circuits" / "copy_digit.json")}], **change}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    code, _, err = run_main(["view", "--bench", tmp_path, "--out", tmp_path / "view" / "index.html"], capsys)
    assert_one_line_error(code, err, f"prune summary {str(tmp_path / 'summary.json')!r} does not fit its schema", key)


def test_old_and_newer_documents_still_read(tmp_path, capsys):
    """Only kind, task, method and nodes are required; keys the schema does not know are ignored."""
    old = {"kind": "circuitlab-circuit", "task": "t", "method": "heaviside/binary_ce", "nodes": ["final.0"]}
    newer = minimal_circuit(future_key={"anything": [1, "two"]}, transfer={"folder": "x", "loss": 0.1})
    for i, doc in enumerate((old, newer)):
        assert CircuitDocument.from_json(doc).task == doc["task"]
        path = tmp_path / f"c{i}.json"
        path.write_text(json.dumps(doc))
        code, _, err = run_main(["view", path, "--out", tmp_path / f"c{i}.html"], capsys)
        assert code == 0, err
    # A summary of another kind (a bench's) and one of an earlier version (no kind) are both fine.
    (tmp_path / "circuits").mkdir()
    (tmp_path / "circuits" / "t.json").write_text(json.dumps(old))
    (tmp_path / "summary.json").write_text(json.dumps({"n_circuits": 1, "n_reached": 0, "geomean_edges": None}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"kind": "circuitlab-bench-summary", "cells": "x"}))
    code, _, err = run_main(["view", "--bench", tmp_path, "--out", tmp_path / "view" / "index.html"], capsys)
    assert code == 0, err
    assert "0 of 1 circuits reached" in (tmp_path / "view" / "index.html").read_text()


def test_a_non_finite_figure_from_the_store_is_null_on_the_page():
    data = {"circuit": {"task": "t"}, "methods": [{"label": "m", "loss": float("nan"), "scores": {"final.0": 1e400}}]}
    block = circuit_page(data).split('id="circuit-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(block)["methods"][0] == {"label": "m", "loss": None, "scores": {"final.0": None}}
