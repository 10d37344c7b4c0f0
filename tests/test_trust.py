"""Circuits checked beyond their loss: seed distributions, interchange, backup circuits, circuits over training.

The planted model of ``test_planted`` has a known 7-node circuit; the tiny trained run checks the
commands end to end (no model quality assumed)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from circuitlab.config import PruneConfig  # noqa: E402
from circuitlab.model.nodes import NodeSpace  # noqa: E402
from circuitlab.prune.interchange import interchange  # noqa: E402
from circuitlab.prune.seeds import jaccard, prune_seeds  # noqa: E402

from .conftest import assert_one_line_error, run_main  # noqa: E402
from .test_planted import PLANTED, build_planted, corpus_windows, make_batch  # noqa: E402
from .test_prune_cli import FAST, toy_registry  # noqa: E402, F401 (a fixture)
from .test_view import browser, open_page  # noqa: E402, F401 (browser: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

PLANTED_FAST = PruneConfig(steps=120, retries=0)


@pytest.fixture(scope="module")
def planted():
    from circuitlab.prune.ablation import compute_node_means

    model = build_planted()
    return model, make_batch(64, 1), make_batch(32, 2), compute_node_means(model, corpus_windows())


def _kept(model, names) -> torch.Tensor:
    space = NodeSpace.from_config(model.config)
    kept = torch.zeros(space.num_nodes, dtype=torch.bool)
    kept[[space.index(n) for n in names]] = True
    return kept


def test_planted_nodes_are_kept_by_every_seed(planted):
    model, train, test, means = planted
    result = prune_seeds(model, train, test, means, PruneConfig(seeds=3, seed=5, steps=120, retries=0))
    dist = result.distribution
    assert dist["n"] == 3 and dist["seeds"] == [5, 6, 7] and result.circuit.provenance["prune_config"]["seed"] == 5
    assert all(dist["frequency"][name] == 1.0 for name in PLANTED), dist["frequency"]
    assert set(PLANTED) <= set(dist["core"]) <= set(dist["union"])
    assert dist["sizes"] == [c.node_count for c in result.circuits]
    assert all(dist["jaccard"][i][i] == 1.0 for i in range(3)) and dist["jaccard_min"] >= 7 / 9
    assert jaccard([], []) == 1.0 and jaccard(["a"], ["b"]) == 0.0


def test_interchange_flips_with_the_planted_circuit_and_not_with_random_nodes(planted):
    model, _, test, _ = planted
    figures = interchange(model, test, _kept(model, PLANTED), draws=5)
    assert figures["clean_accuracy"] == 1.0 and figures["n_pairs"] == 32
    assert figures["circuit"]["accuracy"] == 1.0 and figures["circuit"]["shift_fraction"] == pytest.approx(1.0)
    assert figures["random_pool"] == "outside the circuit" and len(figures["random"]["draws"]) == 5
    assert figures["random"]["accuracy"] == 0.0 and abs(figures["random"]["shift_fraction"]) < 0.05
    # Half the circuit on a serial path still flips; no nodes flips nothing.
    none = interchange(model, test, _kept(model, []))
    assert none["circuit"]["accuracy"] == 0.0 and none["circuit"]["logit_diff_shift"] == 0.0


def test_interchange_aligns_prompts_of_different_lengths_from_the_end(planted):
    """Prompt b gets a filler token in front: patching every node still hands over b's answer."""
    model, _, test, _ = planted
    b = make_batch(4, 3)
    ids = torch.zeros(8, 4, dtype=torch.long)
    ids[0::2, :3] = b.ids[0::2]
    ids[1::2] = torch.cat([torch.full((4, 1), 5), b.ids[1::2]], dim=1)
    last = torch.tensor([2, 3] * 4)
    from circuitlab.tasks import TaskBatch

    batch = TaskBatch(ids=ids, last=last, target=b.target, contrast=b.contrast)
    figures = interchange(model, batch, _kept(model, PLANTED))
    assert figures["circuit"]["accuracy"] == 1.0


@pytest.mark.usefixtures("toy_registry")
def test_prune_seeds_on_the_tiny_run_writes_the_distribution_and_interchange(tiny_run, tmp_path, capsys,
                                                                           request):
    out = tmp_path / "out"
    code, stdout, err = run_main(["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "toy",
                                  "--target-loss", "0.6", "--seeds", "2", "--out", out, *FAST], capsys)
    assert code == 0, err
    assert "interchange" in stdout and "jaccard" in stdout
    doc = json.loads((out / "circuits" / "toy.copy_digit.json").read_text())
    seeds, ic = doc["seeds"], doc["interchange"]
    assert seeds["n"] == 2 and seeds["seeds"] == [0, 1] and seeds["sizes"][0] == doc["node_count"]
    assert set(seeds["core"]) <= set(seeds["union"]) and set(doc["nodes"]) <= set(seeds["union"])
    assert all(0 < f <= 1 for f in seeds["frequency"].values())
    assert {"accuracy", "logit_diff_shift", "shift_fraction"} <= set(ic["circuit"])
    assert len(ic["random"]["draws"]) >= 3 and ic["nodes"] == doc["node_count"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"][0]["seeds"]["n"] == 2
    # The page shades the circuit's nodes by their keep frequency.
    doc["provenance"]["run"] = str(tmp_path / "gone")  # no ablations: faster, and not what this checks
    (tmp_path / "c.json").write_text(json.dumps(doc))
    code, _, err = run_main(["view", tmp_path / "c.json", "--out", tmp_path / "c.html"], capsys)
    assert code == 0, err
    page = (tmp_path / "c.html").read_text()
    assert '"n_seeds":2' in page and "fill-opacity" in page and "pruning seeds" in page
    if doc["node_count"]:  # in a real browser: every node shaded, the share in the tooltip, no page error
        tab, requests = open_page(request.getfixturevalue("browser"), tmp_path / "c.html")
        circles = tab.locator("#graph circle.node")
        assert circles.count() == doc["node_count"]
        want = f"{0.2 + 0.8 * seeds['frequency'][doc['nodes'][0]]:.2f}"
        assert tab.locator(f'#graph circle.node[data-name="{doc["nodes"][0]}"]').get_attribute("fill-opacity") == want
        circles.first.hover()
        assert "pruning seeds" in tab.locator("#tip").inner_text()
        assert requests == [(tmp_path / "c.html").resolve().as_uri()]
        tab.close()
    # The figures again, from the written circuit; a circuit of another model is refused.
    code, stdout, err = run_main(["interchange", out / "circuits" / "toy.copy_digit.json", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout) == ic
    doc["provenance"]["run_config_hash"] = "0" * 16
    (tmp_path / "other.json").write_text(json.dumps(doc))
    code, _, err = run_main(["interchange", tmp_path / "other.json", "--model", tiny_run], capsys)
    assert_one_line_error(code, err, "another model")


@pytest.mark.parametrize("flag, value", [("--seeds", "0"), ("--seeds", "-2"), ("--core-share", "0")])
def test_bad_seed_counts_are_one_line_errors(tmp_path, capsys, flag, value):
    code, out, err = run_main(["prune", "--model", tmp_path, "--pruner", "heaviside", flag, value], capsys)
    assert_one_line_error(code, err, flag)


def _planted_task(planted):
    from circuitlab.prune.backups import PreparedTask
    from circuitlab.prune.search import TaskData
    from circuitlab.tasks import Task

    model, train, test, means = planted
    task = Task(name="planted", description="the planted cue", generate=lambda n, seed: [], suite="test")
    data = TaskData(train=train, test=test, values=means, task="planted", suite="test", provenance={})
    return PreparedTask(run=None, model=model, task=task, data=data, provenance={"task": "test:planted"})


def test_backups_stop_when_the_target_is_unreachable(planted, tmp_path):
    """Every planted node is necessary: excluding the first one the seeds agree on leaves no backup."""
    from circuitlab.prune.backups import backup_rounds

    config = PruneConfig(seeds=2, steps=120, retries=0)
    summary = backup_rounds(_planted_task(planted), config, 5, tmp_path)
    first, second = summary["rounds"]
    assert first["reached"] and first["excluded"] in PLANTED and first["excluded_frequency"] == 1.0
    assert not second["reached"] and second["excluded"] is None
    assert summary["depth"] == summary["failed_round"] == 1 and summary["stop"] == "target not reached"
    # Without a planted node the whole model misses too: the same round.
    assert summary["model_misses_round"] == 1 and second["full_model_loss"] > config.target_loss
    assert summary["excluded"] == [first["excluded"]]
    assert (tmp_path / "backups.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "round-001.json").read_text())["excluded_before"] == [first["excluded"]]


@pytest.mark.usefixtures("toy_registry")
def test_backups_command_resumes_after_its_last_finished_round(tiny_run, tmp_path, capsys):
    out = tmp_path / "b"
    args = ["backups", "--model", tiny_run, "--task", "toy:copy_digit", "--seeds", "2", "--target-loss", "0.6",
            "--out", out, *FAST]
    code, stdout, err = run_main([*args, "--rounds", "1", "--json"], capsys)
    assert code == 0, err
    one = json.loads(stdout)
    assert len(one["rounds"]) == 1 and (out / "round-000.json").exists()
    first = (out / "round-000.json").read_bytes()
    code, stdout, err = run_main([*args, "--rounds", "2"], capsys)
    assert code == 0, err
    assert "continuing after 1 finished round" in err and "backup depth" in stdout
    assert (out / "round-000.json").read_bytes() == first  # kept, not pruned again
    code, stdout, err = run_main(["view", out / "backups.json", "--out", tmp_path / "b.html"], capsys)
    assert code == 0 and "with the plot" in stdout, err
    assert "backup depth" in (tmp_path / "b.html").read_text()
    code, _, err = run_main(["view", out / "backups.json", "--model", tiny_run, "--out", tmp_path / "c.html"], capsys)
    assert_one_line_error(code, err, "--model apply to a circuit")
    two = json.loads((out / "backups.json").read_text())
    assert [r["round"] for r in two["rounds"]][:2] == [0, 1] or two["failed_round"] == 0
    if two["rounds"][0]["reached"]:
        assert json.loads((out / "round-001.json").read_text())["excluded_before"] == [two["rounds"][0]["excluded"]]
    # Other flags on the same folder: refused, the rounds kept.
    code, _, err = run_main([*args[:-len(FAST)], "--steps", "16", "--n-train", "24", "--n-test", "12",
                             "--rounds", "3"], capsys)
    assert_one_line_error(code, err, "other settings")


@pytest.mark.parametrize("args, needle", [
    (["--task", "toy:nope"], "nope"),
    (["--task", "toy:copy_digit", "--seeds", "0"], "--seeds"),
    (["--task", "toy:copy_digit", "--rounds", "0"], "--rounds"),
])
@pytest.mark.usefixtures("toy_registry")
def test_backups_bad_input_is_one_line(tiny_run, tmp_path, capsys, args, needle):
    code, _, err = run_main(["backups", "--model", tiny_run, "--out", tmp_path, *args], capsys)
    assert_one_line_error(code, err, needle)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, small_corpus):
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("tracked") / "run"
    run_cli("train", "--preset", "tiny", "--sparsity", "topk", "--density", "0.0625", "--steps", "30",
            "--keep-checkpoints", "10", "--corpus", str(small_corpus), "--out", str(out), "--quiet", check=True)
    return out


@pytest.mark.usefixtures("toy_registry")
def test_prune_checkpoints_gives_one_row_per_kept_checkpoint(tracked_run, tmp_path, capsys):
    from circuitlab.train.runs import read_run

    kept = sorted(p.name for p in (tracked_run / "checkpoints").iterdir())
    assert kept == ["step-000010", "step-000020"]  # the final step is the run itself
    assert read_run(tracked_run / "checkpoints" / "step-000010").meta["final"]["val_loss"] > 0
    code, stdout, err = run_main(["prune", "--model", tracked_run, "--checkpoints", "--pruner", "heaviside",
                                  "--tasks", "toy", "--target-loss", "0.6", "--out", tmp_path, "--json", *FAST], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["steps"] == [10, 20, 30] and [r["step"] for r in doc["rows"]] == [10, 20, 30]
    assert all(r["task"] == "copy_digit" and r["val_loss"] > 0 for r in doc["rows"])
    assert doc["rows"][-1]["jaccard_final"] == 1.0
    assert (tmp_path / "track.png").exists() and (tmp_path / "step-000010" / "circuits" / "toy.copy_digit.json").exists()
    # view shows the table and the plot: one row per checkpoint.
    page = tmp_path / "track.html"
    code, stdout, err = run_main(["view", tmp_path / "track.json", "--out", page], capsys)
    assert code == 0 and "3 rows, with the plot" in stdout, err
    html = page.read_text()
    assert html.count("<tr>") == 1 + 3 and 'src="data:image/png;base64,' in html and "copy_digit" in html


@pytest.mark.usefixtures("toy_registry")
def test_prune_checkpoints_of_a_run_without_them_is_one_line(tiny_run, capsys):
    code, _, err = run_main(["prune", "--model", tiny_run, "--checkpoints", "--pruner", "heaviside"], capsys)
    assert_one_line_error(code, err, "no kept checkpoints", "--keep-checkpoints")


@pytest.mark.usefixtures("toy_registry")
def test_compare_shows_the_stored_seed_distribution_and_interchange(tiny_run, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    code, _, err = run_main(["prune", "--model", tiny_run, "--pruner", "heaviside", "--tasks", "toy", "--target-loss",
                             "0.6", "--seeds", "2", "--out", tmp_path / "out", "--store", store, *FAST], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "circuits" / "toy.copy_digit.json").read_text())
    code, stdout, err = run_main(["compare", store, "--json"], capsys)
    assert code == 0, err
    shown = json.loads(stdout)["tasks"]["toy:copy_digit"]["methods"]["heaviside"]
    assert shown["seeds"]["n"] == 2 and shown["seeds"]["sizes"] == doc["seeds"]["sizes"]
    assert shown["seeds"]["core"] == len(doc["seeds"]["core"]) and shown["seeds"]["union"] == len(doc["seeds"]["union"])
    assert shown["interchange"]["accuracy"] == doc["interchange"]["circuit"]["accuracy"]
    assert shown["interchange"]["random_accuracy"] == doc["interchange"]["random"]["accuracy"]
    code, stdout, err = run_main(["compare", store], capsys)
    assert code == 0, err
    assert "interchange acc (random)" in stdout and "core/union" in stdout


@pytest.mark.usefixtures("toy_registry")
def test_the_python_api_reaches_seeds_interchange_backups_and_track(tiny_run, tracked_run, tmp_path):
    import circuitlab
    from circuitlab.errors import CircuitlabError

    settings = {"target_loss": 0.6, "steps": 15, "n_train": 24, "n_test": 12, "min_accuracy": 0.0}
    m = circuitlab.load(tiny_run)
    s = circuitlab.seeds(m, "toy:copy_digit", n=2, pruner="heaviside", **settings)
    assert [c.provenance["prune_config"]["seed"] for c in s.circuits] == [0, 1]
    assert s.distribution["sizes"] == [c.node_count for c in s.circuits] and s.circuit is s.circuits[0]
    ic = circuitlab.interchange(m, s.circuit)
    assert ic["nodes"] == s.circuit.node_count and len(ic["random"]["draws"]) >= 3
    b = circuitlab.backups(m, "toy:copy_digit", tmp_path / "b", seeds=2, rounds=1, pruner="heaviside", **settings)
    assert b["task"] == "toy:copy_digit" and len(b["rounds"]) == 1 and (tmp_path / "b" / "backups.json").exists()
    t = circuitlab.track(tracked_run, "toy", tmp_path / "t", pruner="heaviside", **settings)
    assert t["steps"] == [10, 20, 30] and (tmp_path / "t" / "track.json").exists()
    with pytest.raises(CircuitlabError, match="--out"):
        circuitlab.backups(m, "toy:copy_digit", tmp_path, seeds=2, rounds=1, pruner="heaviside", **settings)
