"""Benchmark: does the activation store keep up with the model, and how small can it be?

Figures, each printed with its goal and whether it is met:

1. **record overhead**: wall time of recording ``--windows`` corpus windows with
   ``circuitlab.store.record_store`` (forward passes in this thread; rounding, compression and
   writing in the store's writer thread) divided by the same forward passes with nothing written
   (``record_activations`` into numpy). Alternating, median of ``--repeats``. Goal <= 1.5. The
   process's user and system CPU seconds of each are printed too: on 2 cores they show what the
   writing costs beside the forward passes (docs/store.md, "Record overhead").
2. **stored size / raw float32** of the activation array, per precision (``record --precision``),
   with ``--codec auto``: on the model's real activations (a store written by ``record_run``: task
   prompts and corpus windows; the figure counts the chunks of corpus windows, dense like ``record
   --tasks none``, and the whole array is shown beside it), and on the same activations made 75% zero
   the way AbsTopK makes them (per token and site, the 25% largest |values| kept). Goals: <= 0.5x
   (with the error below) and <= 0.30x on 75% zeros.
3. **the error of each precision**: on the stored values (max abs; max relative where |x| >= 2^-14),
   on the task loss computed from the stored final residuals (``stored_task_losses``), and on ``top``
   (overlap of the top-10 (example, token) of ``--top-nodes`` sampled nodes with the float32 store's).

``--codecs`` adds the table behind ``--codec auto`` (docs/store.md): size and single-thread encode and
decode speed of zstd levels and Blosc (lz4, zstd; byte and bit shuffle) per precision, dense and 75%
zero, and of chunk shapes. It calls numcodecs directly: the same bytes zarr writes for each chunk.

    python benchmarks/store.py --model small          # the measurement: the small topk model of `circuitlab run`
    python benchmarks/store.py --model RUN --codecs   # any run folder; with the codec table
    python benchmarks/store.py --quick                # a tiny model at tiny sizes: checks that it works

Without --model a tiny model is trained (seconds): its figures check the code, they measure nothing.
Timings on a shared 2-core machine are noisy: run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OVERHEAD_GOAL, SIZE_GOAL, SPARSE_SIZE_GOAL = 1.5, 0.5, 0.30
PRECISIONS = ("float32", "float16", "bfloat16", "bitround-5", "bitround-3")


def folder_bytes(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def load(args, root: Path):
    from circuitlab.data.corpus import load_corpus
    from circuitlab.data.tokenizer import encode_split
    from circuitlab.prune.ablation import node_means
    from circuitlab.train.runs import load_model

    if args.model == "small":
        from circuitlab.config import TrainConfig
        from circuitlab.train import ensure_model

        run, _ = ensure_model(TrainConfig.for_preset("small", sparsity="topk"))
    elif args.model:
        run = Path(args.model)
    else:
        from circuitlab.testing.tiny import Tiny

        run = Tiny(root / "tiny").run()
    model, tok, info = load_model(run)
    corpus_ids = encode_split(load_corpus(info.train.corpus), tok, "val")
    return run, model, tok, info, corpus_ids, node_means(model, tok, info)  # means: cached in the run folder


# ----------------------------------------------------------------------------------------------------
# 1. record overhead


def overhead(model, tok, info, corpus_ids, means, args, root: Path, precision: str) -> dict:
    from circuitlab.config import RecordConfig
    from circuitlab.data.windows import window_starts
    from circuitlab.model.nodes import NodeSpace
    from circuitlab.store import record_store
    from circuitlab.store.record import (
        RecordInputs,
        _record_rows,  # the forward passes record makes, nothing else
    )

    window = min(args.window, model.config.n_ctx)
    starts = np.sort(window_starts(len(corpus_ids), args.windows, window, args.seed))
    ids = np.stack([corpus_ids[s:s + window] for s in starts]).astype(np.int32)
    space = NodeSpace.from_config(model.config)
    out = root / "overhead.zarr"

    def forward_only() -> None:
        for _ in _record_rows(model, ids, space, args.batch_size):
            pass

    def record(n: int = args.windows) -> None:
        config = RecordConfig(corpus_windows=n, window=window, seed=args.seed, batch_size=args.batch_size,
                              precision=precision)
        record_store(out, model, tok, info, config, inputs=RecordInputs(corpus_ids=corpus_ids, node_mean=means))

    record(min(args.windows, 8))  # warm up: imports, zarr's thread pool, the first-call costs of torch
    shutil.rmtree(out)  # deleting a store is not timed: after each record, outside the clock
    forward, recorded = [], []
    cpu: dict[str, list] = {"forward_user_s": [], "forward_sys_s": [], "record_user_s": [], "record_sys_s": []}
    for _ in range(args.repeats):
        for name, fn, walls in (("forward", forward_only, forward), ("record", record, recorded)):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process: the writer's too
            cpu[f"{name}_user_s"].append(r1.ru_utime - r0.ru_utime)
            cpu[f"{name}_sys_s"].append(r1.ru_stime - r0.ru_stime)
            if name == "record":
                result_bytes = folder_bytes(out / "activation")
                shutil.rmtree(out)
    ratio = statistics.median(recorded) / statistics.median(forward)
    raw = args.windows * window * space.num_nodes * 4
    result = {"precision": precision, "windows": args.windows, "window": window, "forward_s": forward,
              "record_s": recorded, **cpu, "ratio": ratio, "met": ratio <= OVERHEAD_GOAL, "raw_bytes": raw,
              "activation_bytes": result_bytes}
    return result


# ----------------------------------------------------------------------------------------------------
# 2 and 3. sizes and errors per precision


def abstopk_like(a: np.ndarray, space, keep: float = 0.25) -> np.ndarray:
    """``a`` (n, T, N) with, per token and site, all but the ``keep`` largest |values| set to zero."""
    a = a.copy()
    for loc in space.locations:
        s = a[:, :, loc.offset:loc.offset + loc.size]
        drop = loc.size - max(1, int(loc.size * keep))
        if drop > 0:
            idx = np.argpartition(np.abs(s), drop - 1, axis=-1)[..., :drop]
            np.put_along_axis(s, idx, 0.0, axis=-1)
    return a


def _blocks(ds, transform=None):
    """The store's examples as ExampleBatches, one activation chunk at a time."""
    from circuitlab.store import ExampleBatch

    n, ce = ds.sizes["example"], int(ds["activation"].encoding["chunks"][0])
    for lo in range(0, n, ce):
        sl = slice(lo, min(n, lo + ce))
        act = ds["activation"][sl].values
        fields = {v: ds[v][sl].values for v in ("token_ids", "length", "target", "contrast", "offset", "task",
                                               "side", "split", "pair")}
        yield ExampleBatch(activation=transform(act) if transform else act, **fields)


def _value_errors(exact, ds) -> dict:
    max_abs = max_rel = 0.0
    for a, b in zip(_blocks(exact), _blocks(ds), strict=True):
        x, r = a.activation.astype(np.float64), b.activation.astype(np.float64)
        err = np.abs(r - x)
        max_abs = max(max_abs, float(err.max(initial=0.0)))
        big = np.abs(x) >= 2.0 ** -14
        max_rel = max(max_rel, float((err[big] / np.abs(x[big])).max(initial=0.0)))
    return {"max_abs_error": max_abs, "max_rel_error": max_rel}


def corpus_size_ratio(path: Path) -> float:
    """Bytes on disk / raw float32 bytes of the activation chunks that hold corpus windows only: the
    dense rows, as ``record --tasks none`` stores them (task prompts are mostly zero padding)."""
    from circuitlab.store import SIDES, open_store

    ds = open_store(path)
    n, T, N = ds["activation"].shape
    ce = int(ds["activation"].encoding["chunks"][0])
    corpus = ds["side"].values == SIDES.index("corpus")
    on_disk = raw = 0
    for i in range(-(-n // ce)):
        rows = corpus[i * ce:(i + 1) * ce]
        if rows.all():
            on_disk += (path / "activation" / "c" / str(i) / "0" / "0").stat().st_size
            raw += len(rows) * T * N * 4
    return on_disk / raw if raw else float("nan")


def _top_overlap(exact_path: Path, path: Path, nodes: list[str]) -> float:
    from circuitlab.store import top_examples_many

    a = top_examples_many(exact_path, nodes, k=10, source="all")
    b = top_examples_many(path, nodes, k=10, source="all")
    same = [len({(h["example"], h["position"]) for h in a[n]["top"]} & {(h["example"], h["position"])
                                                                           for h in b[n]["top"]}) / max(1, len(a[n]["top"]))
            for n in nodes]
    return float(np.mean(same))


def sizes(run: Path, model, args, root: Path) -> dict:
    from circuitlab.config import RecordConfig
    from circuitlab.store import node_space, open_store, record_run, stored_task_losses, write_dataset
    from circuitlab.store.io import StoreLayout

    stores, seconds = {}, {}
    for p in args.precisions:
        stores[p] = root / f"size-{p}.zarr"
        config = RecordConfig(tasks=args.tasks, pairs=args.pairs, corpus_windows=args.size_windows,
                              window=args.window, precision=p)
        t0 = time.perf_counter()
        record_run(stores[p], run, config)
        seconds[p] = time.perf_counter() - t0
    exact = open_store(stores["float32"])
    space = node_space(exact)
    raw = int(exact["activation"].nbytes)
    losses = {p: stored_task_losses(stores[p], model) for p in args.precisions}
    rng = np.random.default_rng(args.seed)
    names = [space.node_name(int(i)) for i in rng.choice(space.num_nodes, min(args.top_nodes, space.num_nodes),
                                                    replace=False)]
    rows = {}
    for p in args.precisions:
        ds = open_store(stores[p])
        sparse = root / f"sparse-{p}.zarr"
        layout = StoreLayout(num_examples=exact.sizes["example"], tokens=exact.sizes["token"],
                             nodes={c: exact[c].values for c in ("layer", "site", "index")},
                             node_mean=exact["node_mean"].values, attributes=dict(exact.attrs))
        write_dataset(sparse, _blocks(exact, lambda a: abstopk_like(a, space)), layout, precision=p)
        sparse_ds = open_store(sparse)
        d_loss = [abs(losses[p][t]["loss"] - losses["float32"][t]["loss"]) for t in losses["float32"]]
        d_acc = [abs(losses[p][t]["accuracy"] - losses["float32"][t]["accuracy"]) for t in losses["float32"]]
        rows[p] = {"size_ratio": corpus_size_ratio(stores[p]),
                   "store_size_ratio": folder_bytes(stores[p] / "activation") / raw,
                   "codec": ds.attrs["storage"]["activation_codec"], "record_s": seconds[p],
                   "sparse_size_ratio": corpus_size_ratio(sparse),
                   "sparse_codec": sparse_ds.attrs["storage"]["activation_codec"],
                   "sparse_zeros": sparse_ds.attrs["storage"].get("zero_fraction"),
                   "bound": ds.attrs["storage"]["max_relative_error"], **_value_errors(exact, ds),
                   "max_task_loss_change": max(d_loss, default=0.0), "max_accuracy_change": max(d_acc, default=0.0),
                   "top10_overlap": _top_overlap(stores["float32"], stores[p], names)}
        rows[p]["met"] = rows[p]["size_ratio"] <= SIZE_GOAL
        rows[p]["sparse_met"] = rows[p]["sparse_size_ratio"] <= SPARSE_SIZE_GOAL
    return {"raw_bytes": raw, "examples": exact.sizes["example"], "tokens": exact.sizes["token"],
            "nodes": space.num_nodes, "task_losses_float32": losses["float32"], "precisions": rows}


# ----------------------------------------------------------------------------------------------------
# The codec table (--codecs)


def codec_table(store: Path, mb: float) -> list[dict]:
    import numcodecs.blosc
    from numcodecs import Blosc, Zstd

    from circuitlab.store import node_space, open_store
    from circuitlab.store.encoding import apply_precision

    numcodecs.blosc.use_threads = False  # one thread, as inside zarr's pool: per-core speed
    ds = open_store(store)
    n, T, N = ds["activation"].shape
    rows_wanted = max(1, min(n, int(mb * 2**20 // (T * N * 4))))
    dense = ds["activation"][-rows_wanted:].values  # the corpus windows: no padding
    variants = {"dense": dense, "75% zeros": abstopk_like(dense, node_space(ds))}
    codecs = {"zstd-1": Zstd(level=1), "zstd-3": Zstd(level=3), "zstd-9": Zstd(level=9)}
    for cname, level in (("lz4", 5), ("zstd", 1)):
        for name, shuffle in (("noshuffle", 0), ("shuffle", 1), ("bitshuffle", 2)):
            codecs[f"blosc-{cname}-{name}"] = Blosc(cname=cname, clevel=level, shuffle=shuffle, typesize=4)
    out = []

    def measure(a, codec, ce: int, width: int) -> tuple[float, float, float]:
        size, enc, dec = 0, 0.0, 0.0
        for i in range(0, len(a), ce):
            for j in range(0, a.shape[2], width):
                chunk = np.ascontiguousarray(a[i:i + ce, :, j:j + width])
                t0 = time.thread_time()
                b = codec.encode(chunk)
                t1 = time.thread_time()
                codec.decode(b)
                dec += time.thread_time() - t1
                enc += t1 - t0
                size += len(b)
        mbytes = a.nbytes / 1e6
        return size / a.nbytes, mbytes / max(enc, 1e-9), mbytes / max(dec, 1e-9)

    ce4 = max(1, round(4 * 2**20 / (T * N * 4)))
    for variant, a0 in variants.items():
        for p in ("float32", "float16", "bfloat16", "bitround-5"):
            a = apply_precision(a0.copy(), p)
            for name, codec in codecs.items():
                ratio, enc, dec = measure(a, codec, ce4, N)
                out.append({"data": variant, "precision": p, "codec": name, "chunk": "4 MiB, whole rows",
                            "size_ratio": ratio, "encode_mb_s": enc, "decode_mb_s": dec})
        for mib in (1, 16):
            for split in (1, 8):
                width = -(-N // split)
                ce = max(1, round(mib * 2**20 / (T * width * 4)))
                for name in ("zstd-1", "blosc-lz4-bitshuffle"):
                    ratio, enc, dec = measure(a0, codecs[name], ce, width)
                    out.append({"data": variant, "precision": "float32", "codec": name,
                                "chunk": f"{mib} MiB, {'whole rows' if split == 1 else f'nodes / {split}'}",
                                "size_ratio": ratio, "encode_mb_s": enc, "decode_mb_s": dec})
    return out


# ----------------------------------------------------------------------------------------------------


def report(doc: dict) -> None:
    m = "met" if doc["overhead"]["met"] else "NOT met"
    o = doc["overhead"]
    print(f"model {doc['model']} ({doc['cpus']} CPUs, {doc['torch_threads']} torch threads)"
          + ("  [--quick / tiny model: checks the code, measures nothing]" if doc["smoke"] else ""))
    print(f"1. record overhead ({o['windows']} windows x {o['window']} tokens, {o['raw_bytes'] / 1e6:.0f} MB float32, "
          f"precision {o['precision']}): record {statistics.median(o['record_s']):.2f} s / forward passes "
          f"{statistics.median(o['forward_s']):.2f} s = {o['ratio']:.3f} (goal <= {OVERHEAD_GOAL}: {m})")
    if "record_user_s" in o:
        med = {k: statistics.median(o[k]) for k in ("forward_user_s", "forward_sys_s", "record_user_s", "record_sys_s")}
        print(f"   CPU seconds (median): forward passes {med['forward_user_s']:.2f} user + {med['forward_sys_s']:.2f} system; "
              f"record {med['record_user_s']:.2f} user + {med['record_sys_s']:.2f} system")
    s = doc["sizes"]
    print(f"2-3. size and error per precision ({s['examples']} examples x {s['tokens']} tokens x {s['nodes']} nodes, "
          f"{s['raw_bytes'] / 1e6:.0f} MB float32; codec auto). size: corpus windows' chunks on disk / float32 "
          "(store: the whole array, padded task prompts included); 75%0: the same windows made 75% zero")
    print(f"  {'precision':<11} {'size':>6} {'<=0.5':>6} {'store':>6} {'75%0':>6} {'<=0.3':>6} {'codec':<21} {'bound':>8} "
          f"{'max abs':>9} {'max rel':>9} {'d loss':>8} {'d acc':>6} {'top10':>6}")
    for p, r in s["precisions"].items():
        print(f"  {p:<11} {r['size_ratio']:>6.3f} {'met' if r['met'] else 'no':>6} {r['store_size_ratio']:>6.3f} "
              f"{r['sparse_size_ratio']:>6.3f} "
              f"{'met' if r['sparse_met'] else 'no':>6} {r['codec'] + '/' + r['sparse_codec']:<21} {r['bound']:>8.2g} "
              f"{r['max_abs_error']:>9.2g} {r['max_rel_error']:>9.2g} {r['max_task_loss_change']:>8.2g} "
              f"{r['max_accuracy_change']:>6.3f} {r['top10_overlap']:>6.2f}")
    for row in doc.get("codecs", []):
        print(f"  codec {row['data']:<9} {row['precision']:<10} {row['codec']:<22} {row['chunk']:<20} "
              f"size {row['size_ratio']:.3f}  encode {row['encode_mb_s']:6.0f} MB/s  decode {row['decode_mb_s']:6.0f} MB/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="run folder, or 'small' (the small/topk model of `circuitlab run`, trained if "
                                    "missing); default: a tiny model trained here (checks the code only)")
    ap.add_argument("--windows", type=int, default=1024, help="corpus windows for the overhead figure")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32, help="record's forward batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--overhead-precision", default="float32")
    ap.add_argument("--size-windows", type=int, default=256, help="corpus windows of the size/error stores")
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--top-nodes", type=int, default=32)
    ap.add_argument("--codecs", action="store_true", help="also the codec and chunk-shape table")
    ap.add_argument("--codec-mb", type=float, default=48.0, help="MB of activations for the codec table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not a measurement")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one here)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if "float32" not in args.precisions:
        args.precisions.insert(0, "float32")  # the reference of every error
    if args.quick:
        args.windows, args.size_windows, args.repeats, args.pairs = 32, 16, 1, 2
        args.top_nodes, args.codec_mb = 8, 1.0
    import torch

    root = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir or Path.cwd()))
    try:
        run, model, tok, info, corpus_ids, means = load(args, root)
        doc = {"model": str(run), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "smoke": bool(args.quick or not args.model)}
        doc["overhead"] = overhead(model, tok, info, corpus_ids, means, args, root, args.overhead_precision)
        doc["sizes"] = sizes(run, model, args, root)
        if args.codecs:
            doc["codecs"] = codec_table(root / "size-float32.zarr", args.codec_mb)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
