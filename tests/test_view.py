"""``circuitlab view``: circuit pages and a bench index, opened in real headless Chromium.

Chromium is Debian's ``chromium`` package (``make test`` installs it when missing), driven through
the Chrome DevTools Protocol by Playwright with ``executable_path`` (Playwright downloads no browser).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from circuitlab import plugins

from .test_prune_cli import ToyPlugin, assert_one_line_error, run_main

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--steps", "15", "--n-train", "24", "--n-test", "12", "--seed", "1"]
# The tiny test model is at chance on the toy task (loss ~0.697), so the two targets give two different
# real circuits: 0.6 is out of reach (the circuit is the whole model), 0.75 is met by the empty circuit.
TARGETS = {"heaviside": "0.6", "sigmoid": "0.75"}


@pytest.fixture(scope="module")
def toy():
    """The toy suite of test_prune_cli (digits after "print("), registered for this module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugins.registry, "_registry", plugins.make_registry(extra_plugins=(ToyPlugin,), entrypoints=False))
        yield


@pytest.fixture(scope="module")
def bench(tiny_run, tmp_path_factory, toy) -> Path:
    """Two methods pruned on the toy task of the tiny run, both added to one small store."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("bench")
    store = root / "store.zarr"
    commands = [["record", "--model", str(tiny_run), "--tasks", "none", "--corpus-windows", "24", "--window", "32",
                 "--out", str(store), "--quiet"]]
    commands += [["prune", "--model", str(tiny_run), "--pruner", pruner, "--tasks", "toy", "--store", str(store),
                  "--target-loss", target, "--out", str(root / "bench" / pruner), *FAST]
                 for pruner, target in TARGETS.items()]
    for args in commands:
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as done:
            from circuitlab.cli import main

            main(args)
            raise SystemExit(0)
        assert done.value.code == 0, args
    return root


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: 'make test' installs it (apt-get install -y chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, path: Path):
    """A page at ``path`` that records every request it makes (the page's own file: URL included).

    A request the page's Content-Security-Policy blocks never becomes a request event, so CSP
    violations and page errors count as requests too."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: requests.append(f"console: {m.text}") if "Content Security Policy" in m.text
            else None)
    page.on("pageerror", lambda e: requests.append(f"page error: {e}"))
    page.goto(path.resolve().as_uri())
    return page, requests


def test_circuit_page_in_chromium(bench, browser, tmp_path, capsys):
    circuit_file = bench / "bench" / "heaviside" / "circuits" / "toy.copy_digit.json"
    circuit = json.loads(circuit_file.read_text())
    out = tmp_path / "circuit.html"
    code, stdout, err = run_main(["view", str(circuit_file), "--store", str(bench / "store.zarr"), "--out", str(out),
                                  "--examples", "3", "--ablation-pairs", "8", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["methods"] == ["heaviside", "sigmoid"]
    html = out.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        '"http://www.w3.org/2000/svg"', "") and "https://" not in html and "<link" not in html

    page, requests = open_page(browser, out)
    assert page.locator("#graph circle.node").count() == circuit["node_count"] > 0
    assert not page.locator("#legend-diff").is_visible()  # the diff legend shows only in the diff view
    assert page.locator("#graph path.edge").count() == circuit["edge_count"]
    assert page.locator("#graph path.edge.pos, #graph path.edge.neg").count() == circuit["edge_count"]  # weights known
    first = page.locator("#graph circle.node").first
    name = first.get_attribute("data-name")
    first.hover()
    tip = page.locator("#tip")
    assert tip.is_visible() and name in tip.inner_text() and "mask score" in tip.inner_text()
    first.click()
    assert page.locator("#details h2").inner_text() == name
    examples = page.locator("#examples li.example")
    assert examples.count() == 3 and examples.first.locator("mark").count() == 1
    assert "task-loss change when ablated alone: " in page.locator("#details .delta").inner_text()
    assert "not computed" not in page.locator("#details .delta").inner_text()
    # The diff view: the union of both methods, each node coloured by membership, either way round.
    a = set(circuit["nodes"])
    b = set(json.loads((bench / "bench" / "sigmoid" / "circuits" / "toy.copy_digit.json").read_text())["nodes"])
    for first, second, kept_a, kept_b in (("0", "1", a, b), ("1", "0", b, a), ("0", "0", a, a)):
        page.select_option("#method-a", first)
        page.select_option("#method-b", second)
        assert page.locator("#graph circle.node").count() == len(kept_a | kept_b)
        assert page.locator("#graph circle.node.both").count() == len(kept_a & kept_b)
        assert page.locator("#graph circle.node.only-a").count() == len(kept_a - kept_b)
        assert page.locator("#graph circle.node.only-b").count() == len(kept_b - kept_a)
    assert a != b and page.locator("#legend-diff").is_visible()
    page.select_option("#method-b", "1")
    shot = tmp_path / "circuit.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert requests == [out.resolve().as_uri()]  # the page itself, and nothing else
    page.close()


def test_bench_index_links_every_circuit(bench, browser, tmp_path, capsys):
    out = tmp_path / "view" / "index.html"
    code, stdout, err = run_main(["view", "--bench", str(bench / "bench"), "--store", str(bench / "store.zarr"),
                                  "--out", str(out), "--ablation-pairs", "0", "--examples", "2"], capsys)
    assert code == 0, err
    page, requests = open_page(browser, out)
    rows = page.locator("table.bench tbody tr")
    assert rows.count() == 2
    assert {rows.nth(i).locator("td").nth(2).inner_text() for i in range(2)} == {"heaviside", "sigmoid"}
    assert {rows.nth(i).locator("td").nth(1).inner_text() for i in range(2)} == {"toy:copy_digit"}
    page.locator("table.bench tbody tr td.name a").first.click()
    page.wait_for_selector("#graph circle.node")
    assert page.locator("#graph circle.node").count() > 0
    assert all(u.startswith("file://") for u in requests) and len(requests) == 2
    page.screenshot(path=str(tmp_path / "index-then-circuit.png"))
    page.close()


def test_page_without_store_or_run_says_what_it_lacks(bench, tmp_path, capsys):
    circuit = json.loads((bench / "bench" / "heaviside" / "circuits" / "toy.copy_digit.json").read_text())
    circuit["provenance"]["run"] = str(tmp_path / "gone")
    path = tmp_path / "circuits" / "toy.copy_digit.json"
    path.parent.mkdir()
    path.write_text(json.dumps(circuit))
    code, stdout, err = run_main(["view", str(path), "--out", str(tmp_path / "c.html")], capsys)
    assert code == 0, err
    assert "edge weights and ablations are not shown" in err and "no --store" in err
    data = (tmp_path / "c.html").read_text()
    assert "not shown" in data


@pytest.mark.parametrize("args, needle", [
    ([], "either CIRCUIT.json or --bench"),
    (["--bench", "."], "either CIRCUIT.json or --bench"),  # with a circuit as well: added below
    (["--out-of-place"], "No such option"),
])
def test_view_bad_input_is_one_line(tmp_path, capsys, args, needle):
    extra = [str(tmp_path / "c.json")] if args == ["--bench", "."] else []
    code, _, err = run_main(["view", *extra, *args, "--out", str(tmp_path / "x.html")], capsys)
    assert_one_line_error(code, err, needle)


def test_view_refuses_a_file_that_is_not_a_circuit(tmp_path, capsys):
    bad = tmp_path / "summary.json"
    bad.write_text('{"kind": "circuitlab-prune-summary"}')
    code, _, err = run_main(["view", str(bad), "--out", str(tmp_path / "x.html")], capsys)
    assert_one_line_error(code, err, "is not a circuit")
