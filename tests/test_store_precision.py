"""Storage precision and codecs of activation stores, and the writer thread that overlaps the model.

Each precision keeps its stated error bound (hypothesis), reads back as float32, and leaves ``top``,
``compare`` and the task loss computed from the store working; the writer thread overlaps the
producer, bounds its queue, and hands errors and interrupts back without leaving anything behind.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from .conftest import run_cli

PRECISIONS = ["float32", "float16", "bfloat16", "bitround-1", "bitround-4", "bitround-10", "bitround-22"]
TASKS = "python:bracket_counting,if_equals"


def _finite32(limit: float):
    limit = float(np.float32(limit))
    return st.floats(-limit, limit, width=32, allow_nan=False, allow_infinity=False)


def _check_bound(original: np.ndarray, stored: np.ndarray, precision: str) -> None:
    from circuitlab.store.encoding import error_bound

    rel, floor = error_bound(precision)
    x = original.astype(np.float64)
    err = np.abs(stored.astype(np.float64) - x)
    assert (err <= rel * np.maximum(np.abs(x), floor)).all(), (precision, float(err.max()))
    assert (np.signbit(stored) == np.signbit(original))[stored != 0].all()


@settings(max_examples=60, deadline=None)
@given(precision=st.sampled_from(PRECISIONS), data=st.data())
def test_every_precision_keeps_its_error_bound(precision, data):
    from circuitlab.store.encoding import apply_precision

    limit = 65000.0 if precision == "float16" else 1e37
    x = data.draw(arrays(np.float32, st.integers(1, 64), elements=_finite32(limit)))
    stored = apply_precision(x.copy(), precision)
    assert stored.dtype == np.float32
    _check_bound(x, stored, precision)
    np.testing.assert_array_equal(apply_precision(stored.copy(), precision), stored)  # rounding is idempotent
    if precision == "float32":
        assert stored.tobytes() == x.tobytes()


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float32, st.integers(1, 64), elements=_finite32(3e38)))
def test_bfloat16_is_torchs_bfloat16_bit_for_bit(x):
    import torch

    from circuitlab.store.encoding import apply_precision

    want = torch.from_numpy(x.copy()).to(torch.bfloat16).float().numpy()
    assert apply_precision(x.copy(), "bfloat16").tobytes() == want.tobytes()


def _space():
    from circuitlab.config import ModelConfig
    from circuitlab.model.nodes import NodeSpace

    return NodeSpace.from_config(ModelConfig(vocab_size=16, n_ctx=8, d_model=2, n_layer=1, n_head=1, d_head=1,
                                             d_mlp=3))


def _batches(act: np.ndarray, ids: np.ndarray, size: int = 3):
    from circuitlab.store import ExampleBatch

    n = len(act)
    z = np.zeros(n, np.int64)
    return [ExampleBatch(activation=act[i:i + size], token_ids=ids[i:i + size], length=(ids[i:i + size] >= 0).sum(1),
                         task=z[i:i + size] - 1, side=z[i:i + size] + 2, split=z[i:i + size], pair=z[i:i + size] - 1,
                         target=z[i:i + size] - 1, contrast=z[i:i + size] - 1, offset=z[i:i + size])
            for i in range(0, n, size)]


def _write(path: Path, batches, n: int, T: int, **kwargs) -> Path:
    from circuitlab.store import base_attributes, node_coords, write_dataset

    space = _space()
    from circuitlab.store.io import Chunking, StoreLayout

    layout = StoreLayout(num_examples=n, tokens=T, nodes=node_coords(space), node_mean=np.zeros(space.num_nodes, np.float32),
                         attributes=base_attributes(codes={"task": [], "split": ["val"]}))
    chunking = Chunking(chunk_bytes=2 * T * 4 * 8, flush_bytes=4 * T * 4 * 8, min_chunk_bytes=1)
    return write_dataset(path, batches, layout, chunking=chunking, **kwargs)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("codec", ["auto", "zstd-3", "blosc-zstd-shuffle"])
def test_stores_read_back_float32_within_the_bound(tmp_path: Path, precision: str, codec: str):
    from circuitlab.store import open_store

    rng = np.random.default_rng(len(precision))
    N, T, n = _space().num_nodes, 5, 11
    act = (rng.standard_normal((n, T, N)) * 10.0 ** rng.integers(-6, 4, (n, T, N))).astype(np.float32)
    act[rng.random(act.shape) < 0.5] = 0
    ids = rng.integers(0, 16, (n, T))
    ids[0, 3:] = -1
    ds = open_store(_write(tmp_path / "s.zarr", _batches(act, ids), n, T, precision=precision, codec=codec))
    stored = ds["activation"].values
    assert stored.dtype == np.float32
    act[ids < 0] = 0
    _check_bound(act, stored, precision)
    storage = ds.attrs["storage"]
    assert storage["precision"] == precision and ds["activation"].attrs["precision"] == precision
    assert storage["activation_codec"] == ("zstd-1" if codec == "auto" else codec)  # 50% zeros: zstd
    bits = {"float32": 23, "float16": 10, "bfloat16": 7}
    assert ds["activation"].attrs["mantissa_bits"] == (bits.get(precision) or int(precision.split("-")[-1]))


def test_auto_codec_follows_the_zeros_on_real_tokens_only():
    from circuitlab.store.encoding import choose_codec

    rng = np.random.default_rng(0)
    act = rng.standard_normal((4, 10, 50)).astype(np.float32)
    assert choose_codec("auto", act, np.ones((4, 10), bool)) == ("blosc-lz4-bitshuffle", 0.0)
    assert choose_codec("zstd-3", act, np.ones((4, 10), bool)) == ("zstd-3", None)
    act[:, 8:] = 0  # padding after each example's end: not the model's zeros
    tokens = np.broadcast_to(np.arange(10) < 8, (4, 10))
    assert choose_codec("auto", act, tokens) == ("blosc-lz4-bitshuffle", 0.0)
    act[:, :8, :10] = 0  # 20% of the real tokens' values
    assert choose_codec("auto", act, tokens) == ("zstd-1", 0.2)
    assert choose_codec("auto", act, tokens, "bfloat16")[0] == "blosc-lz4-bitshuffle"  # rounded: zstd from 35%


def test_float16_overflow_is_an_error_from_the_writer_thread(tmp_path: Path):
    from circuitlab.errors import CircuitlabError

    N, T, n = _space().num_nodes, 2, 9
    act = np.ones((n, T, N), np.float32)
    act[7, 1, 0] = 7e4
    with pytest.raises(CircuitlabError, match=r"70000 does not fit float16.*--precision bfloat16"):
        _write(tmp_path / "s.zarr", iter(_batches(act, np.zeros((n, T), np.int64))), n, T, precision="float16")
    assert not [t for t in threading.enumerate() if t.name == "circuitlab-store-writer"]


# ---------------------------------------------------------------------------------------------
# The writer thread


def test_the_producer_runs_ahead_while_the_writer_works_and_no_further_than_the_queue():
    from circuitlab.store.background import consume_in_thread

    produced, consumed = [], []
    second_made = threading.Event()

    def items():
        for i in range(8):
            produced.append(i)
            if i == 1:
                second_made.set()
            yield i

    def consume(it):
        for i in it:
            if i == 0:  # still "writing" item 0 when the producer makes item 1: the two overlap
                assert second_made.wait(10)
                time.sleep(0.2)  # a slow write: the producer fills the queue and waits
                assert len(produced) <= 2 + 2  # item 0, the queue's 2 and the one waiting to go in
            consumed.append(i)
        return len(consumed)

    assert consume_in_thread(consume, items(), depth=2) == 8
    assert consumed == list(range(8))


def test_a_writer_error_stops_the_producer_and_is_raised_unchanged():
    from circuitlab.store.background import consume_in_thread

    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    def consume(it):
        for i in it:
            if i == 3:
                raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        consume_in_thread(consume, items(), depth=2)
    assert len(produced) < 10


def test_interrupt_while_recording_leaves_nothing(tiny_run: Path, tmp_path: Path):
    import signal

    from circuitlab.config import RecordConfig
    from circuitlab.interrupts import Interrupted
    from circuitlab.model.nodes import NodeSpace
    from circuitlab.store import record_store
    from circuitlab.store.record import RecordInputs
    from circuitlab.train.runs import load_model

    model, tok, info = load_model(tiny_run)
    ids = np.arange(4000, dtype=np.int64) % tok.get_vocab_size()

    def progress(done: int, total: int) -> None:
        if done >= 16:  # a few batches in, with more queued for the writer
            raise Interrupted(signal.SIGINT)

    out = tmp_path / "acts.zarr"
    with pytest.raises(Interrupted):
        record_store(out, model, tok, info, RecordConfig(corpus_windows=64, window=16, batch_size=4),
                     inputs=RecordInputs(corpus_ids=ids, node_mean=np.zeros(NodeSpace.from_config(model.config).num_nodes)),
                     progress=progress)
    assert list(tmp_path.iterdir()) == []  # no store, no temporary folder
    assert not [t for t in threading.enumerate() if t.name == "circuitlab-store-writer"]


def test_an_interrupt_after_rows_are_on_disk_waits_for_the_writer(tmp_path: Path):
    """The caller's clean-up may delete the folder as soon as the exception arrives: nothing is written
    after that (the writer has stopped)."""
    N, T, n = _space().num_nodes, 2, 60
    path = tmp_path / "s.zarr"

    def items():
        for i, batch in enumerate(_batches(np.ones((n, T, N), np.float32), np.zeros((n, T), np.int64))):
            if i == 6:
                deadline = time.time() + 30
                while not (path / "activation" / "c").exists() and time.time() < deadline:
                    time.sleep(0.01)  # the first rows reach the disk while this thread waits
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        _write(path, items(), n, T)
    assert not [t for t in threading.enumerate() if t.name == "circuitlab-store-writer"]
    files = sorted(p for p in path.rglob("*"))
    assert files and not (path / "zarr.json").read_text().count("circuitlab-store")  # never finished
    time.sleep(0.3)
    assert sorted(p for p in path.rglob("*")) == files  # and nothing more arrives


# ---------------------------------------------------------------------------------------------
# Recorded stores at each precision: top, compare and the task loss


@pytest.fixture(scope="module")
def stores(tiny_run: Path, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("precision")
    out = {}
    for precision, codec in [("float32", "auto"), ("bfloat16", "blosc-zstd-bitshuffle"), ("bitround-3", "zstd-1")]:
        out[precision] = base / f"{precision}.zarr"
        run_cli("record", "--model", str(tiny_run), "--tasks", TASKS, "--pairs", "4", "--corpus-windows", "16",
                "--window", "32", "--precision", precision, "--codec", codec, "--out", str(out[precision]),
                "--quiet", check=True)
    return out


def test_recorded_precision_is_in_the_attrs_and_within_the_bound(stores: dict[str, Path]):
    from circuitlab.store import open_store

    exact = open_store(stores["float32"])
    assert exact.attrs["storage"]["precision"] == "float32"
    for precision in ("bfloat16", "bitround-3"):
        ds = open_store(stores[precision])
        assert ds.attrs["storage"]["precision"] == precision and ds["activation"].dtype == np.float32
        _check_bound(exact["activation"].values, ds["activation"].values, precision)
        np.testing.assert_array_equal(ds["node_mean"].values, exact["node_mean"].values)  # kept exact


def test_top_and_the_task_loss_work_at_every_precision(stores: dict[str, Path], tiny_run: Path):
    import torch

    from circuitlab.store import open_store, stored_task_losses, top_examples
    from circuitlab.store.encoding import apply_precision
    from circuitlab.tasks.loss import task_loss
    from circuitlab.train.runs import load_model

    model, _, _ = load_model(tiny_run)
    exact = stored_task_losses(stores["float32"], model)
    ds = open_store(stores["float32"])
    # The float32 store's loss is the model's own on the stored prompts.
    for name, got in exact.items():
        rows = np.flatnonzero(ds["task"].values == ds.attrs["codes"]["task"].index(name))
        last = ds["length"].values[rows] - 1
        ids = torch.from_numpy(ds["token_ids"].values[rows].clip(0).astype(np.int64))
        with torch.no_grad():
            logits = model(ids)[0][torch.arange(len(rows)), torch.from_numpy(last)]
        want = task_loss(logits, *(torch.from_numpy(ds[v].values[rows].astype(np.int64)) for v in ("target", "contrast")))
        assert got["loss"] == pytest.approx(float(want), rel=1e-4, abs=1e-6) and got["prompts"] == len(rows)
    top_exact = top_examples(stores["float32"], "1.mlp.neuron.3", k=5, source="all")
    for precision in ("bfloat16", "bitround-3"):
        rounded = stored_task_losses(stores[precision], model)
        assert rounded.keys() == exact.keys()
        for name in exact:
            assert rounded[name]["loss"] == pytest.approx(exact[name]["loss"], rel=0.25, abs=0.05), (precision, name)
        top = top_examples(stores[precision], "1.mlp.neuron.3", k=5, source="all")
        # Rounding is monotonic, so the k-th largest stored value is the k-th largest exact one, rounded.
        want = apply_precision(np.array([h["activation"] for h in top_exact["top"]], np.float32), precision)
        assert [h["activation"] for h in top["top"]] == want.tolist()
        assert top["top"][0]["example"] in [h["example"] for h in top_exact["top"]]


def test_compare_statistics_stay_within_the_bound(stores: dict[str, Path]):
    from circuitlab.compare import _node_stats
    from circuitlab.store import open_store
    from circuitlab.store.encoding import error_bound

    exact = open_store(stores["float32"])
    bases = {"corpus": np.flatnonzero(exact["task"].values == -1)}
    mean_exact, freq_exact, _ = _node_stats(exact, bases)["corpus"]
    mean, freq, _ = _node_stats(open_store(stores["bitround-3"]), bases)["corpus"]
    np.testing.assert_allclose(mean, mean_exact, rtol=error_bound("bitround-3")[0] + 1e-6)
    np.testing.assert_array_equal(freq, freq_exact)  # rounding keeps a nonzero value nonzero


@pytest.mark.parametrize("args, needle", [
    (["--precision", "float8"], "unknown precision 'float8'"),
    (["--precision", "bitround-23"], "did you mean"),
    (["--codec", "gzip"], "unknown codec 'gzip'"),
])
def test_bad_precision_or_codec_is_one_line(tiny_run: Path, tmp_path: Path, args, needle):
    proc = run_cli("record", "--model", str(tiny_run), "--out", str(tmp_path / "s.zarr"), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "s.zarr").exists()
