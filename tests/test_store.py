"""Activation stores: round trip, plain-xarray reopen, recording, top examples, concurrency, bad input."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import run_cli

N_WINDOWS, WINDOW = 24, 32
TASKS = "python:bracket_counting,if_equals,for_while"
_RECORDED: dict[str, Path] = {}


def record_once(tiny_run: Path, base: Path) -> Path:
    """One store recorded from the shared tiny run (cached for the whole session, read-only for tests)."""
    key = str(tiny_run)
    if key not in _RECORDED:
        out = base / "shared-store" / "acts.zarr"
        run_cli("record", "--model", str(tiny_run), "--tasks", TASKS, "--pairs", "2", "--splits", "test",
                "--corpus-windows", str(N_WINDOWS), "--window", str(WINDOW), "--out", str(out), "--quiet",
                check=True)
        _RECORDED[key] = out
    return _RECORDED[key]


@pytest.fixture(scope="module")
def store(tiny_run: Path, tmp_path_factory) -> Path:
    return record_once(tiny_run, tmp_path_factory.getbasetemp())


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("error: "), err
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in err, (n, err)
    return err


# ---------------------------------------------------------------------------------------------
# Round trip without a model


def _small_space():
    from circuitlab.config import ModelConfig
    from circuitlab.model.nodes import NodeSpace

    return NodeSpace.from_config(ModelConfig(vocab_size=16, n_ctx=8, d_model=2, n_layer=1, n_head=1, d_head=1,
                                             d_mlp=3))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 11), tokens=st.integers(1, 4), chunk_rows=st.integers(1, 4), batch=st.integers(1, 5),
       zeros=st.floats(0, 1), seed=st.integers(0, 2**16), nan_tail=st.booleans())
def test_round_trip_random_activations(tmp_path_factory, n, tokens, chunk_rows, batch, zeros, seed, nan_tail):
    from circuitlab.store import (
        ExampleBatch,
        base_attributes,
        node_coords,
        open_store,
        to_torch,
        write_dataset,
    )

    space = _small_space()
    N = space.num_nodes
    rng = np.random.default_rng(seed)
    act = rng.standard_normal((n, tokens, N)).astype(np.float32)
    act[rng.random(act.shape) < zeros] = 0
    if nan_tail:  # all-NaN chunks equal the fill value; they must still be written (open_store checks)
        act[n // 2:] = np.nan
    cols = {"token_ids": rng.integers(-1, 16, (n, tokens)), "length": rng.integers(1, tokens + 1, n),
            "task": rng.integers(-1, 2, n), "side": rng.integers(0, 3, n), "split": rng.integers(0, 2, n),
            "pair": rng.integers(-1, 5, n), "target": rng.integers(-1, 16, n), "contrast": rng.integers(-1, 16, n),
            "offset": rng.integers(-1, 1000, n)}
    if nan_tail:  # keep those rows all NaN: positions with token_ids -1 are stored as zeros
        cols["token_ids"][n // 2:] = np.abs(cols["token_ids"][n // 2:])
    mean = rng.standard_normal(N).astype(np.float32)
    batches = [ExampleBatch(activation=act[i:i + batch], **{k: v[i:i + batch] for k, v in cols.items()})
               for i in range(0, n, batch)]
    row = tokens * N * 4
    path = tmp_path_factory.mktemp("rt") / "s.zarr"
    attrs = base_attributes(codes={"task": ["t0", "t1"], "split": ["train", "test"]}, record={"n": n})
    from circuitlab.store.io import Chunking, StoreLayout

    layout = StoreLayout(num_examples=n, tokens=tokens, nodes=node_coords(space), node_mean=mean, attributes=attrs)
    write_dataset(path, iter(batches), layout,
                  chunking=Chunking(chunk_bytes=chunk_rows * row, flush_bytes=2 * chunk_rows * row, min_chunk_bytes=1))
    ds = open_store(path)
    assert ds.sizes == {"example": n, "token": tokens, "node": N}
    act[cols["token_ids"] < 0] = 0.0  # after an example's end: exact zeros, whatever was given
    np.testing.assert_array_equal(ds["activation"].values, act)
    assert to_torch(ds["activation"]).numpy().tobytes() == act.tobytes()
    for k, v in cols.items():
        np.testing.assert_array_equal(ds[k].values, v, err_msg=k)
    np.testing.assert_array_equal(ds["node_mean"].values, mean)
    np.testing.assert_array_equal(ds["example"].values, np.arange(n))
    for c, v in node_coords(space).items():
        np.testing.assert_array_equal(ds[c].values, v)
    assert ds.attrs["codes"]["task"] == ["t0", "t1"] and ds.attrs["schema_version"] == 1
    assert ds.attrs["record"] == {"n": n}
    if n:
        assert ds["activation"].encoding["chunks"] == (min(n, chunk_rows), tokens, N)


def test_chunks_are_at_least_one_megabyte():
    from circuitlab.store import chunk_examples

    for tokens, nodes in [(64, 736), (256, 6272), (1, 1), (32, 100)]:
        ce = chunk_examples(tokens, nodes)
        assert ce * tokens * nodes * 4 >= 1 << 20
    assert chunk_examples(64, 736, total=3) == 3  # a smaller array is one chunk


# ---------------------------------------------------------------------------------------------
# A recorded store


def test_record_writes_a_labelled_compressed_store(store: Path, tiny_run: Path):
    import torch

    from circuitlab.model.nodes import NodeSpace, record_activations
    from circuitlab.store import SIDES, node_space, open_store, to_torch
    from circuitlab.train.runs import load_model

    ds = open_store(store)
    model, tok, info = load_model(tiny_run)
    space = NodeSpace.from_config(model.config)
    assert ds.sizes["node"] == space.num_nodes and node_space(ds) == space
    enc = ds["activation"].encoding
    used = ds.attrs["storage"]["activation_codec"]  # --codec auto: picked by the share of zeros (docs/store.md)
    assert [type(c).__name__ for c in enc["compressors"]] == ["ZstdCodec" if used == "zstd-1" else "BloscCodec"]
    ce, T, N = enc["chunks"]
    assert ce == ds.sizes["example"] or ce * T * N * 4 >= 1 << 20
    assert ds.attrs["schema"] == "circuitlab-store" and ds.attrs["schema_version"] == 1
    assert ds.attrs["model"]["weights_sha256"] and ds.attrs["model"]["corpus_hash"]
    assert len(ds.attrs["token_text"]) == tok.get_vocab_size()
    side = ds["side"].values
    assert (side == SIDES.index("corpus")).sum() == N_WINDOWS
    n_task = int((side != SIDES.index("corpus")).sum())
    assert n_task == 2 * 2 * len(ds.attrs["codes"]["task"])  # both prompts of 2 test pairs per task
    assert (ds["task"].values[side == SIDES.index("corpus")] == -1).all()
    # The node means are the pruning engineer's mean-ablation values.
    from circuitlab.prune.ablation import node_means

    np.testing.assert_allclose(ds["node_mean"].values, node_means(model, tok, info).numpy(), rtol=1e-6)
    # Stored activations are what the model computes on the stored tokens (valid positions only).
    for ex in [int(np.flatnonzero(side == 2)[0]), *np.flatnonzero(side != 2)[:1].tolist()]:
        n = int(ds["length"].values[ex])
        ids = torch.from_numpy(ds["token_ids"].values[ex, :n].astype(np.int64))[None]
        want = record_activations(model, ids)[0]
        got = to_torch(ds["activation"].isel(example=ex))[:n]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert (ds["token_ids"].values[ex, n:] == -1).all() and (ds["activation"].values[ex, n:] == 0).all()
    # A selection by coordinate converts in one call.
    neurons = to_torch(ds["activation"].isel(example=slice(0, 3)).where(ds.site == 6, drop=True))
    assert neurons.shape == (3, T, int((ds.site.values == 6).sum()))


def test_plain_xarray_reopens_the_store_without_circuitlab(store: Path):
    from circuitlab.store import open_store

    script = textwrap.dedent("""
        import json, sys
        import xarray
        ds = xarray.open_zarr(sys.argv[1])
        act = ds["activation"].values
        corpus = ds["side"].values == ds.attrs["codes"]["side"].index("corpus")
        sites = [ds.attrs["codes"]["site"][c] for c in ds["site"].values[:2]]
        leaked = sorted(m for m in sys.modules if m.startswith(("circuitlab", "torch")))
        print(json.dumps({"shape": list(act.shape), "sum": float(abs(act).sum()), "corpus": int(corpus.sum()),
                          "sites": sites, "dims": list(ds["activation"].dims), "leaked": leaked}))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(store)], capture_output=True, text=True, timeout=120,
                          cwd=str(store.parent))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    ds = open_store(store)
    assert got["leaked"] == []
    assert got["shape"] == list(ds["activation"].shape) and got["dims"] == ["example", "token", "node"]
    assert got["sum"] == pytest.approx(float(np.abs(ds["activation"].values).sum()), rel=1e-6)
    assert got["corpus"] == N_WINDOWS and got["sites"] == ["attn.in", "attn.in"]


def test_top_finds_the_largest_activations(store: Path):
    from circuitlab.store import SIDES, node_space, open_store

    ds = open_store(store)
    node = "1.mlp.neuron.3"
    idx = node_space(ds).index(node)
    proc = run_cli("top", "--store", str(store), "--node", node, "--k", "4", "--json", check=True)
    res = json.loads(proc.stdout)
    vals = [h["activation"] for h in res["top"]]
    assert len(vals) == 4 and vals == sorted(vals, reverse=True)
    corpus = ds["side"].values == SIDES.index("corpus")
    col = ds["activation"].values[corpus][:, :, idx]
    assert vals[0] == pytest.approx(float(col.max()))
    h = res["top"][0]
    assert ds["activation"].values[h["example"], h["position"], idx] == pytest.approx(h["activation"])
    tid = int(ds["token_ids"].values[h["example"], h["position"]])
    assert h["token"] == ds.attrs["token_text"][tid]
    text = run_cli("top", "--store", str(store), "--node", node, "--k", "2", check=True).stdout
    assert f"[[{h['token']}]]".replace("\n", "\\n") in text and len(text.strip().splitlines()) == 3


# ---------------------------------------------------------------------------------------------
# Method results and concurrent writers


def _copy_store(store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(store, dst)
    return dst


def _result(seed: int, n: int, p: float = 0.1):
    rng = np.random.default_rng(seed)
    scores = rng.random(n).astype(np.float32)
    kept = scores < p
    idx = np.flatnonzero(kept)
    edges = [(int(a), int(b)) for a, b in zip(idx[:-1], idx[1:], strict=True)]
    return scores, kept, edges


def _writer(path: str, method: str, n_nodes: int, tasks: list[str], barrier) -> None:
    from circuitlab.store import MethodResult, add_method_result

    barrier.wait(timeout=60)
    for i, t in enumerate(tasks):
        scores, kept, edges = _result(zlib.crc32(f'{method}/{i}'.encode()), n_nodes)
        add_method_result(path, MethodResult(method=method, task=t, scores=scores, kept=kept, loss=0.1 * i,
                                             edges=len(edges), nodes=int(kept.sum()),
                                             provenance={"writer": method}, edge_list=edges))


def test_two_processes_write_different_methods_at_once(store: Path, tmp_path: Path):
    import xarray as xr

    from circuitlab.store import MethodResult, add_method_result, list_methods, open_method, open_store

    path = _copy_store(store, tmp_path)
    n = open_store(path).sizes["node"]
    s, k, e = _result(7, n)
    add_method_result(path, MethodResult(method="old", task="t0", scores=s, kept=k, loss=1.0, edges=len(e),
                                         nodes=int(k.sum()), provenance={}, edge_list=e))
    before = {p: p.read_bytes() for p in (path / "methods" / "old").rglob("*") if p.is_file()}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    tasks = [f"t{i}" for i in range(4)]
    procs = [ctx.Process(target=_writer, args=(str(path), m, n, tasks, barrier)) for m in ("alpha", "beta")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert list_methods(path) == sorted([("old", "t0")] + [(m, t) for m in ("alpha", "beta") for t in tasks])
    for m in ("alpha", "beta"):
        for i, t in enumerate(tasks):
            scores, kept, edges = _result(zlib.crc32(f'{m}/{i}'.encode()), n)
            r = open_method(path, m, t)
            np.testing.assert_array_equal(r["score"].values, scores)
            np.testing.assert_array_equal(r["kept"].values, kept)
            assert list(zip(r["edge_src"].values.tolist(), r["edge_dst"].values.tolist(), strict=True)) == edges
            assert r.attrs["provenance"] == {"writer": m} and r.attrs["loss"] == pytest.approx(0.1 * i)
    after = {p: p.read_bytes() for p in (path / "methods" / "old").rglob("*") if p.is_file()}
    assert after == before  # adding methods never rewrote another method's data
    tree = xr.open_datatree(path, engine="zarr", consolidated=False, chunks=None)
    assert tree["methods/beta/t3"]["kept"].shape == (n,)


def test_method_result_checks_before_writing(store: Path, tmp_path: Path):
    from circuitlab.errors import CircuitlabError
    from circuitlab.store import MethodResult, add_method_result, list_methods, open_method, open_store

    path = _copy_store(store, tmp_path)
    n = open_store(path).sizes["node"]
    s, k, e = _result(1, n)
    kw = dict(method="m", task="t", loss=0.5, provenance={"x": 1})
    with pytest.raises(CircuitlabError, match="nodes"):
        add_method_result(path, MethodResult(scores=s[:-1], kept=k[:-1], edges=len(e), nodes=int(k[:-1].sum()), **kw))
    with pytest.raises(CircuitlabError, match="edge_list has"):
        add_method_result(path, MethodResult(scores=s, kept=k, edges=len(e) + 1, nodes=int(k.sum()), edge_list=e,
                                             **kw))
    with pytest.raises(CircuitlabError, match="cannot name"):
        add_method_result(path, MethodResult(scores=s, kept=k, edges=len(e), nodes=int(k.sum()), edge_list=e,
                                             **{**kw, "method": "../evil"}))
    assert list_methods(path) == []  # nothing half-written
    add_method_result(path, MethodResult(scores=s, kept=k, edges=len(e), nodes=int(k.sum()), edge_list=e, **kw))
    with pytest.raises(CircuitlabError, match="already has a result"):
        add_method_result(path, MethodResult(scores=s, kept=k, edges=len(e), nodes=int(k.sum()), edge_list=e, **kw))
    s2, k2, e2 = _result(2, n)
    add_method_result(path, MethodResult(scores=s2, kept=k2, edges=len(e2), nodes=int(k2.sum()), edge_list=e2,
                                         **kw), overwrite=True)
    np.testing.assert_array_equal(open_method(path, "m", "t")["kept"].values, k2)
    assert list_methods(path) == [("m", "t")]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2


def test_not_a_store_and_unsupported_schema(store: Path, tmp_path: Path):
    import xarray as xr

    plain = tmp_path / "plain"
    plain.mkdir()
    _one_line_error(run_cli("compare", str(plain)), "not a circuitlab store")
    _one_line_error(run_cli("top", "--store", str(tmp_path / "missing"), "--node", "0.attn.q.0"), "does not exist")
    other = tmp_path / "other.zarr"
    xr.Dataset({"a": ("x", np.zeros(3))}).to_zarr(other, zarr_format=3, consolidated=False)
    _one_line_error(run_cli("compare", str(other)), "not a circuitlab store")
    future = _copy_store(store, tmp_path)
    meta = json.loads((future / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 99
    (future / "zarr.json").write_text(json.dumps(meta))
    _one_line_error(run_cli("top", "--store", str(future), "--node", "0.attn.q.0"), "schema version 99")


def test_store_of_another_model_is_refused(store: Path, tiny_run: Path, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    from circuitlab.errors import CircuitlabError
    from circuitlab.store import MethodResult, add_method_result, open_store

    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("checkpoint.safetensors", "node_means*"))
    weights = load_file(str(other / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.5
    save_file(weights, str(other / "model.safetensors"))
    err = _one_line_error(run_cli("record", "--model", str(other), "--out", str(store), "--corpus-windows", "2"),
                          "different model")
    assert str(other.resolve()) in err
    n = open_store(store).sizes["node"]
    s, k, e = _result(3, n)
    with pytest.raises(CircuitlabError, match="different model"):
        add_method_result(store, MethodResult(method="m", task="t", scores=s, kept=k, loss=0.1, edges=len(e),
                                              nodes=int(k.sum()), provenance={}, edge_list=e), run=other)


def test_unknown_node_for_top(store: Path):
    _one_line_error(run_cli("top", "--store", str(store), "--node", "0.mlp.neurn.3"), "unknown node",
                    "did you mean '0.mlp.neuron.N'")
    _one_line_error(run_cli("top", "--store", str(store), "--node", "0.mlp.neuron.99999"), "out of range")


def test_corrupt_chunk_names_the_variable_and_the_rest_stays_readable(store: Path, tmp_path: Path):
    from circuitlab.errors import CircuitlabError
    from circuitlab.store import open_store, read_values

    path = _copy_store(store, tmp_path)
    chunk = path / "activation" / "c" / "0" / "0" / "0"
    assert chunk.exists()
    chunk.write_bytes(b"not zstd at all" * 7)
    err = _one_line_error(run_cli("top", "--store", str(path), "--node", "0.mlp.neuron.1", "--source", "all"),
                          "'activation'", "corrupt")
    assert "token_ids" not in err
    ds = open_store(path)
    with pytest.raises(CircuitlabError, match="'activation' is corrupt"):
        read_values(ds["activation"])
    good = open_store(store)
    for var in ("token_ids", "node_mean", "length", "task", "side"):
        np.testing.assert_array_equal(read_values(ds[var]), good[var].values)


def test_ensure_store_records_a_missing_store_and_checks_an_existing_one(store: Path, tiny_run: Path,
                                                                          tmp_path: Path):
    from circuitlab.config import RecordConfig
    from circuitlab.errors import CircuitlabError
    from circuitlab.store import MethodResult, add_method_result, ensure_store, list_methods, open_store

    fresh = tmp_path / "fresh.zarr"
    n = open_store(store).sizes["node"]
    s, k, e = _result(5, n)
    # What 'circuitlab run --store' needs: the first result of a new model records the store.
    ensure_store(fresh, tiny_run, config=RecordConfig(tasks="none", corpus_windows=3, window=8))
    ds = open_store(fresh)
    assert ds.sizes["example"] == 3 and ds.attrs["model"] == open_store(store).attrs["model"]
    add_method_result(fresh, MethodResult(method="m", task="t", scores=s, kept=k, loss=0.2, edges=len(e),
                                          nodes=int(k.sum()), provenance={}, edge_list=e), run=tiny_run)
    assert list_methods(fresh) == [("m", "t")]
    assert ensure_store(store, tiny_run) == store  # existing store of the same model: accepted as is
    with pytest.raises(CircuitlabError, match="does not exist"):
        add_method_result(tmp_path / "none.zarr", MethodResult(method="m", task="t", scores=s, kept=k, loss=0.2,
                                                               edges=len(e), nodes=int(k.sum()), provenance={},
                                                               edge_list=e))


def test_deleted_chunk_is_an_error_not_nan(store: Path, tmp_path: Path):
    path = _copy_store(store, tmp_path)
    chunk = path / "activation" / "c" / "0" / "0" / "0"
    chunk.unlink()
    err = _one_line_error(run_cli("top", "--store", str(path), "--node", "0.mlp.neuron.1"), "damaged",
                          "activation/c/0/0/0")
    assert "--overwrite" in err
