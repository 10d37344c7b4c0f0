"""``circuitlab import-oai-circuit``: OpenAI's viz_data.pt circuits become circuitlab circuits (view, compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitlab.interop.oai_circuit import circuitlab_node
from circuitlab.train.runs import read_run

from .conftest import assert_one_line_error, run_main
from .oai_viz_layout import OAI_SITE, file_edge_count, make_viz_data, oai_location, write_viz_data

pytestmark = pytest.mark.usefixtures("one_thread")

KEPT = {"0.attn.act_in": [1, 5], "0.attn.q": [3], "0.attn.k": [3, 20], "0.attn.v": [3, 17],
        "0.attn.resid_delta": [2, 5], "1.mlp.act_in": [2, 9], "1.mlp.post_act": [7, 40, 60],
        "1.mlp.resid_delta": [4, 2], "final_resid": [4]}
OTHER = {"0.attn.act_in": [1], "0.attn.v": [3], "0.attn.resid_delta": [2], "1.mlp.post_act": [7, 41],
         "final_resid": [4, 6]}
EXPECTED = {"0.attn.in.1", "0.attn.in.5", "0.attn.q.3", "0.attn.k.3", "0.attn.k.20", "0.attn.v.3", "0.attn.v.17",
            "0.attn.out.2", "0.attn.out.5", "1.mlp.in.2", "1.mlp.in.9", "1.mlp.neuron.7", "1.mlp.neuron.40",
            "1.mlp.neuron.60", "1.mlp.out.4", "1.mlp.out.2", "final.4"}


def _beeg(model) -> dict:
    return {"n_layer": model.n_layer, "d_model": model.d_model, "n_head": model.n_head, "d_head": model.d_head,
            "d_mlp": model.d_mlp, "vocab_size": model.vocab_size, "tokenizer_name": "tinypython_2k"}


@pytest.fixture(scope="module")
def run(tiny) -> Path:
    return tiny.run()


def _viz(tmp: Path, run: Path, kept=KEPT, sweep="prune_v2", k="17", **kw) -> tuple[Path, dict]:
    viz = make_viz_data(_beeg(read_run(run).model), kept, **kw)
    return write_viz_data(tmp / "viz" / "tiny" / "bracket_counting" / sweep / k / "viz_data.pt", viz), viz


def test_node_ids_map_to_circuitlab_names():
    assert circuitlab_node("3.mlp.post_act:17") == "3.mlp.neuron.17"
    assert circuitlab_node("0.attn.act_in:5") == "0.attn.in.5"
    assert circuitlab_node("11.attn.resid_delta:83") == "11.attn.out.83"
    assert circuitlab_node("2.attn.k:9") == "2.attn.k.9"
    assert circuitlab_node("final_resid:7") == "final.7"
    assert circuitlab_node("2.resid_in:3") is None and circuitlab_node("2.attn.y:3") is None
    assert circuitlab_node("2.mlp.post_act") is None


@given(layer=st.integers(0, 63), site=st.sampled_from(sorted(OAI_SITE) + ["final"]), index=st.integers(0, 10**6))
def test_every_node_site_round_trips(layer, site, index):
    name = f"final.{index}" if site == "final" else f"{layer}.{site}.{index}"
    assert circuitlab_node(f"{oai_location(layer, site)}:{index}") == name


def test_import_view_and_compare(tmp_path, run, capsys):
    path, viz = _viz(tmp_path, run)
    path2, _ = _viz(tmp_path, run, kept=OTHER, sweep="prune_v4", k="k_optim", seed=1)
    store = tmp_path / "store.zarr"
    code, out, err = run_main(["record", "--model", run, "--tasks", "python:bracket_counting", "--pairs", "2",
                               "--corpus-windows", "4", "--out", store, "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run_main(["import-oai-circuit", path, path2, "--model", run, "--out", tmp_path / "c",
                               "--store", store, "--json"], capsys)
    assert code == 0, err
    summaries = json.loads(out)["circuits"]
    assert [s["task"] for s in summaries] == ["bracket_counting"] * 2
    doc = json.loads((tmp_path / "c" / "bracket_counting.prune_v2.17.json").read_text())
    assert doc["kind"] == "circuitlab-circuit" and set(doc["nodes"]) == EXPECTED
    assert doc["node_count"] == sum(map(len, KEPT.values())) == len(EXPECTED)
    # Every stored loss is two-sided; circuitlab's is the per-prompt mean: halved, and said so.
    assert doc["loss"] == pytest.approx(0.15) and doc["full_model_loss"] == pytest.approx(0.4)
    src = doc["provenance"]["imported_from"]
    assert src["losses_halved"] is True and "halved" in src["loss_note"]
    loc_losses = viz["importances"]["ch_interv_losses"]["1.mlp.post_act"]
    assert src["node_ablation_losses"]["1.mlp.neuron.40"] == pytest.approx(loc_losses[1] / 2)
    # The file's own edges (nonzero within-block entries, bias rows left out) beside circuitlab's count.
    assert src["file_edges"] == file_edge_count(viz) == summaries[0]["file_edges"] > 0
    assert all(e[0] in EXPECTED and e[1] in EXPECTED for e in src["file_edge_list"])
    assert doc["edge_count"] == doc["edge_counts"]["weight"] + doc["edge_counts"]["residual"] == len(doc["edges"])
    assert src["node_ids"]["1.mlp.neuron.60"] == "1.mlp.post_act:60"
    # compare: both imported circuits side by side, Jaccard of their node sets.
    code, out, err = run_main(["compare", store, "--json"], capsys)
    assert code == 0, err
    task = json.loads(out)["tasks"]["python:bracket_counting"]
    assert set(task["methods"]) == {"openai-prune_v2", "openai-prune_v4"}
    assert task["methods"]["openai-prune_v2"]["nodes"] == len(EXPECTED)
    other = {circuitlab_node(f"{loc}:{i}") for loc, idx in OTHER.items() for i in idx}
    (pair,) = task["pairs"]
    assert pair["node_jaccard"] == pytest.approx(len(EXPECTED & other) / len(EXPECTED | other))
    # view: the page draws the imported circuit on the run.
    page = tmp_path / "page.html"
    code, out, err = run_main(["view", tmp_path / "c" / "bracket_counting.prune_v2.17.json", "--out", page,
                               "--store", store, "--ablation-pairs", "0", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["nodes"] == len(EXPECTED) and page.stat().st_size > 1000
    assert set(result["methods"]) == {"openai-prune_v2", "openai-prune_v4"}  # the other one from the store


def _bad(tmp_path, run, capsys, path, *needles, extra=()):
    code, _, err = run_main(["import-oai-circuit", path, "--model", run, "--out", tmp_path / "bad", *extra], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


class _Payload:
    """Unpickling this would create a file: weights-only loading must refuse it first."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_viz_data_is_one_line(tmp_path, run, capsys):
    path, viz = _viz(tmp_path, run)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    _bad(tmp_path, run, capsys, tmp_path / "truncated.pt", "truncated.pt", "not a readable torch file")
    (tmp_path / "foreign.pt").write_text('{"nodes": []}')
    _bad(tmp_path, run, capsys, tmp_path / "foreign.pt", "foreign.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "weights.pt")
    _bad(tmp_path, run, capsys, tmp_path / "weights.pt", "no circuit_data and importances")
    marker = tmp_path / "pwned"
    torch.save({"circuit_data": _Payload(marker), "importances": {}}, tmp_path / "payload.pt")
    _bad(tmp_path, run, capsys, tmp_path / "payload.pt", "weights-only loading refused")
    assert not marker.exists()
    # Mismatched shapes: another model's circuit, a channel beyond the run's width.
    wrong = dict(viz)
    wrong["importances"] = dict(viz["importances"], beeg_model_config=dict(
        viz["importances"]["beeg_model_config"], n_layer=3, d_model=64))
    write_viz_data(tmp_path / "wrong" / "viz_data.pt", wrong)
    _bad(tmp_path, run, capsys, tmp_path / "wrong" / "viz_data.pt", "another model", "n_layer=3", extra=["--task", "t"])
    block = dict(viz)
    pairs = [list(p) for p in viz["importances"]["pair_data"]]
    pairs[0][0] = torch.zeros(len(pairs[0][1]) + 3, len(pairs[0][2]))
    block["importances"] = dict(viz["importances"], pair_data=pairs)
    write_viz_data(tmp_path / "block" / "viz_data.pt", block)
    _bad(tmp_path, run, capsys, tmp_path / "block" / "viz_data.pt", "pair_data block", "sources", extra=["--task", "t"])
    far, _ = _viz(tmp_path / "far", run, kept={"1.mlp.post_act": [10_000]})
    _bad(tmp_path, run, capsys, far, "1.mlp.post_act:10000", "outside the run's model")
    # A location circuitlab has no node for: refused, or imported without it when asked.
    odd, _ = _viz(tmp_path / "odd", run, kept={"1.mlp.post_act": [3], "1.resid_mid": [2]})
    _bad(tmp_path, run, capsys, odd, "1.resid_mid:2", "--skip-unmapped")
    code, out, err = run_main(["import-oai-circuit", odd, "--model", run, "--out", tmp_path / "ok",
                               "--skip-unmapped", "--json"], capsys)
    assert code == 0, err
    (s,) = json.loads(out)["circuits"]
    assert s["nodes"] == 1 and s["unmapped"] == ["1.resid_mid:2"] and "1.resid_mid:2" in err


def test_node_id_lists_and_file_order(tmp_path, run):
    from circuitlab.interop.oai_circuit import parse_viz_data

    viz = make_viz_data(_beeg(read_run(run).model), {"0.attn.v": [3]})
    viz["circuit_data"] = ["1.mlp.post_act:7", "final_resid:2", "0.attn.act_in:1"]  # a flat list of node IDs
    oai = parse_viz_data(viz, read_run(run).model, tmp_path / "x.pt")
    assert oai.nodes == ("1.mlp.neuron.7", "final.2", "0.attn.in.1")
    assert oai.source_ids == ("1.mlp.post_act:7", "final_resid:2", "0.attn.act_in:1")
