"""Reading and writing the zarr v3 hierarchy: opening with integrity checks, streaming writes of the
activation dataset, atomic installation of a finished store, and group metadata (layout: ``circuitlab.store``)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ..errors import CircuitlabError
from .schema import (
    CHUNK_BYTES,
    EXAMPLE_COORDS,
    METHODS,
    MIN_CHUNK_BYTES,
    NODE_COORDS,
    ZSTD_LEVEL,
    ExampleBatch,
    chunk_examples,
    root_attrs,
)

if TYPE_CHECKING:
    import torch
    import xarray as xr


def _missing_chunks(array_dir: Path) -> tuple[list[str], int]:
    """Chunk files of a zarr v3 array that should exist but do not, and how many there should be.

    zarr reads a missing chunk as the fill value (NaN, 0 or False), so a deleted file would pass
    silently. Only meaningful for arrays written with ``write_empty_chunks``, where every chunk is on disk."""
    import itertools

    try:
        meta = json.loads((array_dir / "zarr.json").read_text(encoding="utf-8"))
        shape = meta["shape"]
        chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        encoding = meta.get("chunk_key_encoding", {})
        name = encoding.get("name", "default")
        sep = encoding.get("configuration", {}).get("separator", "/")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [], 0  # unreadable metadata: xarray's own error is clearer
    if name != "default" or sep != "/" or len(shape) != len(chunk_shape):
        return [], 0  # a layout this store never writes: do not guess its chunk names
    grid = [range(-(-n // max(1, c))) for n, c in zip(shape, chunk_shape, strict=True)]
    keys = ["/".join(["c", *map(str, idx)]) for idx in itertools.product(*grid)]
    return [k for k in keys if not (array_dir / k).is_file()], len(keys)


def _arrays(group_dir: Path) -> list[Path]:
    """The array folders directly inside a zarr v3 group folder."""
    found = []
    for child in sorted(group_dir.iterdir()):
        meta = child / "zarr.json"
        if child.is_dir() and meta.is_file():
            try:
                if json.loads(meta.read_text(encoding="utf-8")).get("node_type") == "array":
                    found.append(child)
            except (OSError, ValueError):
                found.append(child)  # unreadable metadata: let the chunk check and xarray name it
    return found


def check_chunks(group_dir: Path, every_array: bool, fix: str) -> None:
    """One-line error naming the first missing chunk file of the group's arrays (all of them when the
    group was written with every chunk on disk, else the activation only)."""
    arrays = _arrays(group_dir) if every_array else [group_dir / "activation"]
    for array in arrays:
        if not array.exists():
            continue
        missing, total = _missing_chunks(array)
        if missing:
            raise CircuitlabError(f"store {str(group_dir)!r} is damaged: {len(missing)} of {total} {array.name!r} "
                                  f"chunk files are missing (first: {array.name}/{missing[0]}); {fix}")


RERECORD = "re-record it with 'circuitlab record --overwrite'"
#: The arrays every store holds (besides its coordinates).
STORE_ARRAYS = ("activation", "token_ids", "length", "target", "contrast", "offset", "node_mean")


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a store's activation dataset lazily (no dask needed), after checking its schema and that
    no chunk file is missing."""
    import xarray as xr

    path = Path(path)
    from ..files import recover_dir

    recover_dir(path)  # a kill during a replacement: put the complete store back, sweep debris
    attributes = root_attrs(path)
    gone = [a for a in STORE_ARRAYS if not (path / a / "zarr.json").is_file()]
    if gone:
        raise CircuitlabError(f"store {str(path)!r} is damaged: its array(s) {', '.join(gone)} are missing; {RERECORD}")
    check_chunks(path, attributes.get("integrity", {}).get("all_chunks_written", False), RERECORD)
    try:
        return xr.open_zarr(path, consolidated=False, chunks=None, zarr_format=3)
    except Exception as exc:  # metadata of a variable unreadable: name what failed
        raise CircuitlabError(f"store {str(path)!r} could not be opened ({type(exc).__name__}: {exc}); "
                              f"{RERECORD}") from None


def read_values(da: xr.DataArray, what: str | None = None, where: str = "", fix: str = RERECORD) -> np.ndarray:
    """``da.values``, turning a corrupt chunk into a CircuitlabError naming the variable (and ``where``)."""
    try:
        return np.asarray(da.values)
    except MemoryError:
        raise
    except Exception as exc:
        name = what or da.name
        raise CircuitlabError(f"variable {name!r} is corrupt: a chunk{where} could not be read ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); the store's other variables are still readable; {fix}") from None


def to_torch(da: xr.DataArray, device: Any = "cpu") -> torch.Tensor:
    """One selection of a store (any DataArray) as a torch tensor, e.g.
    ``to_torch(ds.activation.isel(example=slice(0, 8)).sel(node=ds.site == 6))``."""
    import torch

    arr = np.ascontiguousarray(read_values(da))
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).to(device)


def group_json(path: Path, tmp_dir: Path, attributes: dict | None = None) -> None:
    """Create a zarr v3 group's metadata file if it does not exist (atomically; safe under races).

    The file is written in ``tmp_dir`` (outside the hierarchy, same file system) and hard-linked into place."""
    path.mkdir(parents=True, exist_ok=True)
    target = path / "zarr.json"
    if target.exists():
        return
    tmp = tmp_dir / f".zarr.json.{uuid.uuid4().hex[:12]}"
    tmp.write_text(json.dumps({"attributes": attributes or {}, "zarr_format": 3, "node_type": "group"}))
    try:
        os.link(tmp, target)  # fails if another writer got there first: fine, same content
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _batch_dataset(batch: ExampleBatch, nodes: dict[str, np.ndarray]) -> xr.Dataset:
    """The first rows of a store as a dataset, with every coordinate (xarray creates the arrays from it)."""
    import xarray as xr

    n, T, num = batch.activation.shape
    coords: dict[str, Any] = {"example": np.arange(n, dtype=np.int64)}
    for c in EXAMPLE_COORDS:
        coords[c] = ("example", getattr(batch, c))
    coords["node"] = np.arange(num, dtype=np.int32)
    for c in NODE_COORDS:
        coords[c] = ("node", nodes[c])
    coords["token"] = np.arange(T, dtype=np.int32)
    data = {"activation": (("example", "token", "node"), batch.activation),
            "token_ids": (("example", "token"), batch.token_ids)}
    for v in ("length", "target", "contrast", "offset"):
        data[v] = ("example", getattr(batch, v))
    return xr.Dataset(data, coords=coords)


#: The arrays along ``example`` that each batch of rows fills (besides the ``example`` coordinate).
ROW_VARIABLES = ("activation", "token_ids", "length", "target", "contrast", "offset", *EXAMPLE_COORDS)


def _grow(path: Path, first: int, num_examples: int) -> dict[str, Any]:
    """Resize every array along ``example`` to its final length once, after xarray created them with the
    first rows, and fill the ``example`` coordinate; later rows are written straight into them.

    Appending through xarray instead would rewrite every array's metadata on each append (about 50 ms
    of the writer's CPU and GIL each time, measured)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    arrays = {name: group[name] for name in ROW_VARIABLES}
    if num_examples > first:
        for array in [*arrays.values(), group["example"]]:
            array.resize((num_examples, *array.shape[1:]))
        group["example"][first:] = np.arange(first, num_examples, dtype=np.int64)
    return arrays


def _coerce(batch: ExampleBatch, tokens: int, nodes: int, precision: str, owned: bool = False) -> ExampleBatch:
    """The batch in the store's dtypes, checked; the activation with exact +0.0 after each example's last
    token and the storage precision applied, in a new array (or in place, when ``owned``)."""
    from .encoding import apply_precision

    n = len(batch)
    out = {
        "token_ids": np.asarray(batch.token_ids, dtype=np.int32),
        "length": np.asarray(batch.length, dtype=np.int32),
        "task": np.asarray(batch.task, dtype=np.int16),
        "side": np.asarray(batch.side, dtype=np.int8),
        "split": np.asarray(batch.split, dtype=np.int8),
        "pair": np.asarray(batch.pair, dtype=np.int32),
        "target": np.asarray(batch.target, dtype=np.int32),
        "contrast": np.asarray(batch.contrast, dtype=np.int32),
        "offset": np.asarray(batch.offset, dtype=np.int64),
    }
    act = np.asarray(batch.activation)
    if act.shape != (n, tokens, nodes) or out["token_ids"].shape != (n, tokens):
        raise CircuitlabError(f"batch shapes {act.shape}/{out['token_ids'].shape} do not match the "
                              f"store's (n, {tokens}, {nodes})")
    for k, v in out.items():
        if k != "token_ids" and v.shape != (n,):
            raise CircuitlabError(f"batch field {k!r} has shape {v.shape}, expected ({n},)")
    mine = owned and act.dtype == np.float32 and act.flags.c_contiguous and act.flags.writeable
    act = np.add(act, np.float32(0), out=act if mine else None, dtype=np.float32)  # -0.0 + 0.0 = +0.0
    pad = out["token_ids"] < 0
    if pad.any():
        act[pad] = 0.0
    return ExampleBatch(activation=apply_precision(act, precision), **out)


def _concat(batches: list[ExampleBatch]) -> ExampleBatch:
    if len(batches) == 1:
        return batches[0]
    return ExampleBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches])
                           for f in attrs.fields(ExampleBatch)})


def _split_batch(batch: ExampleBatch, n: int) -> tuple[ExampleBatch, ExampleBatch]:
    head = ExampleBatch(**{f.name: getattr(batch, f.name)[:n] for f in attrs.fields(ExampleBatch)})
    tail = ExampleBatch(**{f.name: getattr(batch, f.name)[n:] for f in attrs.fields(ExampleBatch)})
    return head, tail


@attrs.frozen(kw_only=True)
class StoreLayout:
    """What a new store holds besides its rows: examples, tokens, node coordinates, means, root attributes."""
    num_examples: int
    tokens: int
    nodes: dict = attrs.field(eq=False)  # coordinate name -> (num_nodes,) array
    node_mean: Any = attrs.field(eq=False)  # (num_nodes,) float32
    attributes: dict = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class Chunking:
    """How rows are buffered and chunked on their way to disk (sizes in bytes)."""
    chunk_bytes: int = CHUNK_BYTES  # target size of one activation chunk
    flush_bytes: int = 64 << 20  # rows buffered before an append
    min_chunk_bytes: int = MIN_CHUNK_BYTES
    queue_depth: int = 2  # batches waiting between the forward passes and the writer thread


def write_dataset(path: str | os.PathLike, batches: Iterable[ExampleBatch], layout: StoreLayout, *,
                  chunking: Chunking | None = None, precision: str = "float32", codec: str = "auto",
                  owned: bool = False) -> Path:
    """Write a new store at ``path`` (which must not exist) from ``batches``, streaming.

    ``batches`` is iterated in this thread (for ``record``: the model's forward passes) while a writer
    thread rounds the activations to ``precision``, compresses them with ``codec`` and writes them
    (``circuitlab.store.background``; at most ``chunking.queue_depth`` batches wait between the two). Positions
    where ``token_ids < 0`` are stored as exact zeros. The batches' arrays are left unchanged, unless
    ``owned`` says they are the store's to round in place (saves a copy; ``record_store`` does).

    Rows are buffered to whole activation chunks: xarray creates the arrays from the first ones, later
    ones are written into them; the root attrs (schema, codes, model, storage) are written last, so a
    store without them is incomplete. Not atomic by itself: ``record_store`` writes to a temporary
    sibling and renames.
    """
    import zarr

    from .background import consume_in_thread
    from .encoding import compressors, error_bound, keep_bits

    path = Path(path)
    chunking = chunking or Chunking()
    keep_bits(precision)  # a bad name fails here, before any thread starts
    if codec != "auto":
        compressors(codec)

    def write(rows: Iterable[ExampleBatch]) -> dict[str, Any]:
        with zarr.config.set({"array.write_empty_chunks": True}):  # every chunk on disk: a missing one is damage
            return _write_rows(path, rows, layout, chunking, (precision, codec), owned)

    chosen = consume_in_thread(write, batches, depth=chunking.queue_depth, name="circuitlab-store-writer")
    rel, floor = error_bound(precision)
    storage = {"precision": precision, "max_relative_error": rel, "relative_error_floor": floor,
               "codec": codec, **chosen}
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    group.attrs.put({**layout.attributes, "integrity": {"all_chunks_written": True}, "storage": storage})
    group_json(path / METHODS, path.parent)
    return path


def _encodings(codec: str, ce: int, small: int, tokens: int, num_nodes: int) -> dict[str, dict]:
    """xarray encodings: the activation with ``codec``, every small array with zstd (level ZSTD_LEVEL)."""
    from zarr.codecs import ZstdCodec

    from .encoding import compressors

    zstd = [ZstdCodec(level=ZSTD_LEVEL)]
    # write_empty_chunks: skip zarr's per-chunk "all fill value?" scan; activation chunks are never empty
    enc = {"activation": {"chunks": (ce, tokens, num_nodes), "compressors": compressors(codec),
                          "write_empty_chunks": True},
           "token_ids": {"chunks": (small, tokens), "compressors": zstd}}
    for v in ("length", "target", "contrast", "offset", *EXAMPLE_COORDS, "example"):
        enc[v] = {"chunks": (max(small, ce),), "compressors": zstd}
    return enc


def _write_rows(path: Path, batches, layout: StoreLayout, chunking: Chunking, storage: tuple[str, str],
                owned: bool) -> dict[str, Any]:
    """Write every row; returns the codec used for the activation (and, for ``auto``, why).
    ``storage`` is (precision, codec)."""
    from .encoding import choose_codec, precision_attrs

    num_examples, tokens, nodes, node_mean = layout.num_examples, layout.tokens, layout.nodes, layout.node_mean
    chunk_bytes, flush_bytes, min_chunk_bytes = chunking.chunk_bytes, chunking.flush_bytes, chunking.min_chunk_bytes
    precision, codec = storage

    num_nodes = len(nodes["index"])
    ce = chunk_examples(tokens, num_nodes, target=chunk_bytes, total=num_examples, minimum=min_chunk_bytes)
    small = min(max(num_examples, 1), max(ce, -(-min_chunk_bytes // max(1, tokens * 4))))
    flush_rows = ce * max(1, flush_bytes // max(1, ce * tokens * num_nodes * 4))  # whole chunks per append
    written, pending, n_pending = 0, [], 0
    chosen: dict[str, Any] = {}
    arrays: dict[str, Any] = {}

    def flush(rows: ExampleBatch) -> None:
        nonlocal written, arrays
        if written + len(rows) > num_examples:
            raise CircuitlabError(f"got more than the {num_examples} examples announced")
        if written == 0:
            used, zeros = choose_codec(codec, rows.activation, rows.token_ids >= 0, precision)
            chosen.update({"activation_codec": used} if zeros is None else
                          {"activation_codec": used, "zero_fraction": round(zeros, 4)})
            ds = _batch_dataset(rows, nodes)
            ds["activation"].attrs.update(precision_attrs(precision))
            ds["node_mean"] = ("node", np.asarray(node_mean, dtype=np.float32))  # exact, whatever the precision
            ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False,
                       encoding=_encodings(used, ce, small, tokens, num_nodes))
            arrays = _grow(path, len(rows), num_examples)
        else:  # whole chunks (all but the last flush), so no chunk is ever read back and rewritten
            for name, array in arrays.items():
                array[written:written + len(rows)] = getattr(rows, name)
        written += len(rows)

    for batch in batches:
        batch = _coerce(batch, tokens, num_nodes, precision, owned)
        pending.append(batch)
        n_pending += len(batch)
        if n_pending >= flush_rows:
            rows = _concat(pending)
            whole = (n_pending // ce) * ce
            head, tail = _split_batch(rows, whole)
            flush(head)
            pending, n_pending = ([tail], len(tail)) if len(tail) else ([], 0)
    if n_pending or written == 0:
        rows = _concat(pending) if pending else _coerce(_empty_batch(tokens, num_nodes), tokens, num_nodes, precision)
        flush(rows)
    if written != num_examples:
        raise CircuitlabError(f"wrote {written} examples, expected {num_examples}")
    return chosen


def _empty_batch(tokens: int, nodes: int) -> ExampleBatch:
    z = np.zeros(0)
    return ExampleBatch(activation=np.zeros((0, tokens, nodes), np.float32), token_ids=np.zeros((0, tokens)),
                        length=z, task=z, side=z, split=z, pair=z, target=z, contrast=z, offset=z)


def install_store(tmp: Path, out: Path, overwrite: bool) -> Path:
    """Put a finished store from ``tmp`` at ``out``; with ``overwrite``, keep ``out``'s method results.

    The method results are hard-linked into the new store (the old one keeps them until it is gone), and
    the two folders are swapped with ``circuitlab.files.replace_dir``: a kill at any instant leaves a
    complete store at ``out``, the old one or the new one, never one without its method results."""
    from ..files import replace_dir

    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CircuitlabError(f"store {str(out)!r} already exists; pass --overwrite to re-record it "
                                  "(its method results are kept)")
        root_attrs(out)  # never replace a folder that is not a circuitlab store
        old_methods = out / METHODS
        if old_methods.is_dir():
            shutil.rmtree(tmp / METHODS, ignore_errors=True)
            shutil.copytree(old_methods, tmp / METHODS, copy_function=os.link)
        replace_dir(tmp, out)
        return out
    try:
        os.rename(tmp, out)
    except OSError:  # another process created it in the meantime
        shutil.rmtree(tmp, ignore_errors=True)
        raise CircuitlabError(f"store {str(out)!r} already exists; pass --overwrite to re-record it") from None
    return out
