"""Activation stores: what a model computed on task prompts and corpus windows, and what each
circuit-finding method chose, in one labelled, chunked zarr v3 store (schema: docs/store.md).

Layout of a store folder (a zarr v3 hierarchy; ``xarray.open_zarr(STORE)`` opens the root)::

    STORE/                      root group: the activation dataset, schema and lookup tables in attrs
      activation                (example, token, node) float32, zstd level 1, >= 1 MB chunks along example
      token_ids                 (example, token) int32, -1 after each example's last token
      length                    (example,) int32: valid tokens of each example
      target, contrast          (example,) int32: a task prompt's right and wrong next token (-1: corpus)
      offset                    (example,) int64: a corpus window's first token in the val split (-1: task)
      node_mean                 (node,) float32: the mean activation per node used for mean ablation
      coordinates               example, task, side, split, pair (on example); node, layer, site, index (on node)
      methods/<method>/<task>/  one group per method and task (written by ``add_method_result``)
        score, kept             (node,) float32 and bool
        edge_src, edge_dst      (edge,) int32: the circuit's edges as flat node indices
        attrs                   loss, edges, nodes, provenance

Strings never go into arrays (zarr v3 has no stable string dtype): ``site``, ``task``, ``side`` and
``split`` are integer codes, and ``attrs["codes"][NAME][code]`` is the label. ``task == -1`` marks a
corpus window.

Writes are atomic: ``record`` builds the whole store in a sibling temporary folder and renames it into
place; each method result is written as its own group in a temporary folder and renamed into
``methods/<method>/<task>``. So a reader never sees half a store or half a method, a method never
rewrites another's data, and concurrent writers of different methods never touch the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .errors import CircuitlabError, UnknownNameError
from .nodes import BLOCK_SITES, SITE_CODES, Location, NodeSpace

if TYPE_CHECKING:
    import torch
    import xarray as xr

SCHEMA = "circuitlab-store"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
SIDES = ("a", "b", "corpus")  # side codes: prompt A, prompt B of a pair, or a corpus window
CORPUS = -1  # task code of corpus windows
METHODS = "methods"
CHUNK_BYTES = 4 << 20  # target uncompressed size of one activation chunk
MIN_CHUNK_BYTES = 1 << 20  # the smallest chunk along example (unless the whole array is smaller)
ZSTD_LEVEL = 1  # feasibility.md §6: as small as level 3 and up to 1.7x faster
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=:-]{0,127}$")
_EXAMPLE_VARS = ("activation", "token_ids", "length", "target", "contrast", "offset")
_EXAMPLE_COORDS = ("task", "side", "split", "pair")
_NODE_COORDS = ("layer", "site", "index")


# ---------------------------------------------------------------------------------------------
# Records


@attrs.frozen(kw_only=True)
class ExampleBatch:
    """Rows to write: ``n`` examples of ``T`` tokens. Every array's first dimension is ``n``."""

    activation: np.ndarray  # (n, T, num_nodes) float32
    token_ids: np.ndarray  # (n, T) int32, -1 after the last token
    length: np.ndarray  # (n,) int32
    task: np.ndarray  # (n,) int16 code, -1 = corpus
    side: np.ndarray  # (n,) int8 code into SIDES
    split: np.ndarray  # (n,) int8 code into the store's split table
    pair: np.ndarray  # (n,) int32 pair index within (task, split), -1 = corpus
    target: np.ndarray  # (n,) int32, -1 = corpus
    contrast: np.ndarray  # (n,) int32, -1 = corpus
    offset: np.ndarray  # (n,) int64, -1 = task

    def __len__(self) -> int:
        return int(self.activation.shape[0])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CircuitlabError(f"{kind} name {name!r} cannot name a store group; use letters, digits and _ . + = : - "
                              "(at most 128, starting with a letter or digit)")
    return name


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(info) -> dict[str, Any]:
    """What identifies a trained model: its weights' sha256, config hash, corpus and tokenizer hashes."""
    from .config import config_hash

    prov = info.provenance or {}
    corpus = prov.get("corpus") if isinstance(prov.get("corpus"), dict) else {}
    return {
        "run": str(Path(info.path).resolve()),
        "weights_sha256": file_sha256(Path(info.path) / "model.safetensors"),
        "config_hash": config_hash(info.model),
        "corpus_hash": corpus.get("hash") or prov.get("corpus_hash"),
        "tokenizer_hash": prov.get("tokenizer_hash"),
    }


def node_coords(space: NodeSpace) -> dict[str, np.ndarray]:
    """``layer``, ``site`` (code) and ``index`` of every node, in flat-index order."""
    layer = np.empty(space.num_nodes, np.int16)
    site = np.empty(space.num_nodes, np.int8)
    index = np.empty(space.num_nodes, np.int32)
    for loc in space.locations:
        s = slice(loc.offset, loc.offset + loc.size)
        layer[s], site[s], index[s] = loc.layer, SITE_CODES[loc.site], np.arange(loc.size)
    return {"layer": layer, "site": site, "index": index}


def site_table() -> list[str]:
    return [s for s, _ in sorted(SITE_CODES.items(), key=lambda kv: kv[1])]


def node_space(ds: xr.Dataset) -> NodeSpace:
    """The node space described by a store's node coordinates (no model needed)."""
    sites = ds.attrs["codes"]["site"]
    layer, site, index = (np.asarray(ds[c].values) for c in _NODE_COORDS)
    locs, start = [], 0
    n = len(index)
    for i in range(1, n + 1):
        if i == n or index[i] == 0:
            name = sites[int(site[start])]
            hook = "final" if name == "final" else f"{int(layer[start])}.{name}"
            locs.append(Location(hook=hook, layer=int(layer[start]), site=name, size=i - start, offset=start))
            start = i
    return NodeSpace(tuple(locs))


def chunk_examples(tokens: int, nodes: int, itemsize: int = 4, target: int = CHUNK_BYTES,
                   total: int | None = None, minimum: int = MIN_CHUNK_BYTES) -> int:
    """Examples per activation chunk: about ``target`` bytes, never under 1 MB unless ``total`` is smaller."""
    row = max(1, tokens * nodes * itemsize)
    n = max(-(-minimum // row), round(target / row), 1)
    return max(1, min(n, total)) if total else n


# ---------------------------------------------------------------------------------------------
# Opening and validating


def _root_attrs(path: Path) -> dict[str, Any]:
    """Validate that ``path`` is a circuitlab store this version reads, from its root zarr.json alone."""
    if not path.exists():
        raise CircuitlabError(f"store {str(path)!r} does not exist; write one with "
                              "'circuitlab record --model RUN --out STORE'")
    meta_file = path / "zarr.json"
    if not path.is_dir() or not meta_file.exists():
        raise CircuitlabError(f"{str(path)!r} is not a circuitlab store (no zarr.json); pass a folder written by "
                              "'circuitlab record'")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CircuitlabError(f"{str(path)!r} is not a circuitlab store (unreadable zarr.json: {exc})") from None
    attrs_ = meta.get("attributes") if isinstance(meta, dict) else None
    if meta.get("zarr_format") != 3 or not isinstance(attrs_, dict) or attrs_.get("schema") != SCHEMA:
        raise CircuitlabError(f"{str(path)!r} is a zarr store but not a circuitlab store (its root attrs lack "
                              f"schema={SCHEMA!r}); pass a folder written by 'circuitlab record'")
    version = attrs_.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise CircuitlabError(f"store {str(path)!r} has schema version {version!r}, which this circuitlab does not "
                              f"support (it reads {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); re-record it "
                              "with 'circuitlab record --overwrite' or use a matching circuitlab version")
    return attrs_


def _missing_chunks(array_dir: Path) -> tuple[list[str], int]:
    """Chunk files of a zarr v3 array that should exist but do not, and how many there should be.

    zarr reads a missing chunk as the fill value (NaN for activations), so a deleted file would pass
    silently. Only for arrays written with ``write_empty_chunks``, where every chunk is on disk."""
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


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a store's activation dataset lazily (no dask needed), after checking its schema and that
    no activation chunk file is missing."""
    import xarray as xr

    path = Path(path)
    _root_attrs(path)
    missing, total = _missing_chunks(path / "activation")
    if missing:
        raise CircuitlabError(f"store {str(path)!r} is damaged: {len(missing)} of {total} 'activation' chunk files "
                              f"are missing (first: activation/{missing[0]}); re-record it with "
                              "'circuitlab record --overwrite'")
    try:
        return xr.open_zarr(path, consolidated=False, chunks=None, zarr_format=3)
    except Exception as exc:  # metadata of a variable unreadable: name what failed
        raise CircuitlabError(f"store {str(path)!r} could not be opened ({type(exc).__name__}: {exc}); "
                              "re-record it with 'circuitlab record --overwrite'") from None


def read_values(da: xr.DataArray, what: str | None = None, where: str = "") -> np.ndarray:
    """``da.values``, turning a corrupt chunk into a CircuitlabError naming the variable (and ``where``)."""
    try:
        return np.asarray(da.values)
    except MemoryError:
        raise
    except Exception as exc:
        name = what or da.name
        raise CircuitlabError(f"variable {name!r} is corrupt: a chunk{where} could not be read ({type(exc).__name__}: "
                              f"{exc}); the store's other variables are still readable; re-record with "
                              "'circuitlab record --overwrite'") from None


def to_torch(da: xr.DataArray, device: Any = "cpu") -> torch.Tensor:
    """One selection of a store (any DataArray) as a torch tensor, e.g.
    ``to_torch(ds.activation.isel(example=slice(0, 8)).sel(node=ds.site == 6))``."""
    import torch

    arr = np.ascontiguousarray(read_values(da))
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).to(device)


def check_model(path: str | os.PathLike, info) -> dict[str, Any]:
    """Raise unless the store at ``path`` was recorded from the model of run ``info``; returns its attrs."""
    path = Path(path)
    attrs_ = _root_attrs(path)
    stored = attrs_.get("model", {})
    ident = model_identity(info)
    for key in ("weights_sha256", "config_hash"):
        if stored.get(key) != ident[key]:
            raise CircuitlabError(
                f"store {str(path)!r} was recorded for a different model (run {stored.get('run')!r}, "
                f"{key} {str(stored.get(key))[:12]}), not run {ident['run']!r} ({key} {str(ident[key])[:12]}); "
                "use a new --out/--store path or the matching --model")
    return attrs_


# ---------------------------------------------------------------------------------------------
# Writing the activation dataset


def _sibling_tmp(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"


def _group_json(path: Path, tmp_dir: Path, attributes: dict | None = None) -> None:
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


def _batch_dataset(batch: ExampleBatch, start: int, with_nodes: dict[str, np.ndarray] | None) -> xr.Dataset:
    import xarray as xr

    n = len(batch)
    coords: dict[str, Any] = {"example": np.arange(start, start + n, dtype=np.int64)}
    for c in _EXAMPLE_COORDS:
        coords[c] = ("example", getattr(batch, c))
    if with_nodes is not None:
        num = batch.activation.shape[2]
        coords["node"] = np.arange(num, dtype=np.int32)
        for c in _NODE_COORDS:
            coords[c] = ("node", with_nodes[c])
        coords["token"] = np.arange(batch.activation.shape[1], dtype=np.int32)
    data = {"activation": (("example", "token", "node"), batch.activation),
            "token_ids": (("example", "token"), batch.token_ids)}
    for v in ("length", "target", "contrast", "offset"):
        data[v] = ("example", getattr(batch, v))
    return xr.Dataset(data, coords=coords)


def _coerce(batch: ExampleBatch, tokens: int, nodes: int) -> ExampleBatch:
    n = len(batch)
    out = {
        "activation": np.ascontiguousarray(batch.activation, dtype=np.float32),
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
    if out["activation"].shape != (n, tokens, nodes) or out["token_ids"].shape != (n, tokens):
        raise CircuitlabError(f"batch shapes {out['activation'].shape}/{out['token_ids'].shape} do not match the "
                              f"store's (n, {tokens}, {nodes})")
    for k, v in out.items():
        if k not in ("activation", "token_ids") and v.shape != (n,):
            raise CircuitlabError(f"batch field {k!r} has shape {v.shape}, expected ({n},)")
    return ExampleBatch(**out)


def _concat(batches: list[ExampleBatch]) -> ExampleBatch:
    if len(batches) == 1:
        return batches[0]
    return ExampleBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches])
                           for f in attrs.fields(ExampleBatch)})


def _split_batch(batch: ExampleBatch, n: int) -> tuple[ExampleBatch, ExampleBatch]:
    head = ExampleBatch(**{f.name: getattr(batch, f.name)[:n] for f in attrs.fields(ExampleBatch)})
    tail = ExampleBatch(**{f.name: getattr(batch, f.name)[n:] for f in attrs.fields(ExampleBatch)})
    return head, tail


def write_dataset(path: str | os.PathLike, batches: Iterable[ExampleBatch], *, num_examples: int, tokens: int,
                  nodes: dict[str, np.ndarray], node_mean: np.ndarray, attributes: dict[str, Any],
                  chunk_bytes: int = CHUNK_BYTES, flush_bytes: int = 64 << 20,
                  min_chunk_bytes: int = MIN_CHUNK_BYTES) -> Path:
    """Write a new store at ``path`` (which must not exist) from ``batches``, streaming.

    Rows are buffered to whole activation chunks and appended along ``example`` through xarray; the root
    attrs (schema, codes, model) are written last, so a store without them is incomplete. Not atomic by
    itself: ``record_store`` writes to a temporary sibling and renames.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    path = Path(path)
    num_nodes = len(nodes["index"])
    ce = chunk_examples(tokens, num_nodes, target=chunk_bytes, total=num_examples, minimum=min_chunk_bytes)
    small = min(max(num_examples, 1), max(ce, -(-min_chunk_bytes // max(1, tokens * 4))))
    zstd = [ZstdCodec(level=ZSTD_LEVEL)]
    flush_rows = ce * max(1, flush_bytes // max(1, ce * tokens * num_nodes * 4))  # whole chunks per append
    written, pending, n_pending = 0, [], 0

    def flush(rows: ExampleBatch) -> None:
        nonlocal written
        if written == 0:
            ds = _batch_dataset(rows, 0, nodes)
            ds["node_mean"] = ("node", np.asarray(node_mean, dtype=np.float32))
            # write_empty_chunks: skip zarr's per-chunk "all fill value?" scan; activation chunks are never empty
            enc = {"activation": {"chunks": (ce, tokens, num_nodes), "compressors": zstd, "write_empty_chunks": True},
                   "token_ids": {"chunks": (small, tokens), "compressors": zstd}}
            for v in ("length", "target", "contrast", "offset", *_EXAMPLE_COORDS, "example"):
                enc[v] = {"chunks": (max(small, ce),), "compressors": zstd}
            ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False, encoding=enc)
        else:
            # write_empty_chunks is not stored in the array's metadata: pass it on every append, so
            # every activation chunk is on disk (open_store checks that none is missing).
            _batch_dataset(rows, written, None).to_zarr(path, append_dim="example", zarr_format=3,
                                                        consolidated=False, write_empty_chunks=True)
        written += len(rows)

    for batch in batches:
        batch = _coerce(batch, tokens, num_nodes)
        pending.append(batch)
        n_pending += len(batch)
        if n_pending >= flush_rows:
            rows = _concat(pending)
            whole = (n_pending // ce) * ce
            head, tail = _split_batch(rows, whole)
            flush(head)
            pending, n_pending = ([tail], len(tail)) if len(tail) else ([], 0)
    if n_pending or written == 0:
        rows = _concat(pending) if pending else _coerce(_empty_batch(tokens, num_nodes), tokens, num_nodes)
        flush(rows)
    if written != num_examples:
        raise CircuitlabError(f"wrote {written} examples, expected {num_examples}")
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    group.attrs.put(attributes)
    _group_json(path / METHODS, path.parent)
    return path


def _empty_batch(tokens: int, nodes: int) -> ExampleBatch:
    z = np.zeros(0)
    return ExampleBatch(activation=np.zeros((0, tokens, nodes), np.float32), token_ids=np.zeros((0, tokens)),
                        length=z, task=z, side=z, split=z, pair=z, target=z, contrast=z, offset=z)


def base_attributes(*, codes: dict[str, list[str]], model: dict[str, Any] | None = None,
                    model_config: dict | None = None, token_text: list[str] | None = None,
                    node_mean: dict | None = None, record: dict | None = None) -> dict[str, Any]:
    """The root attrs of a store (see docs/store.md)."""
    from . import __version__

    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "circuitlab_version": __version__,
        "created": _now(),
        "model": model or {},
        "model_config": model_config or {},
        "codes": {"site": site_table(), "side": list(SIDES), **codes},
        "token_text": token_text or [],
        "node_mean": node_mean or {},
        "record": record or {},
    }


def install_store(tmp: Path, out: Path, overwrite: bool) -> Path:
    """Move a finished store from ``tmp`` to ``out``; with ``overwrite``, keep ``out``'s method results."""
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CircuitlabError(f"store {str(out)!r} already exists; pass --overwrite to re-record it "
                                  "(its method results are kept)")
        _root_attrs(out)  # never replace a folder that is not a circuitlab store
        old_methods = out / METHODS
        if old_methods.is_dir():
            shutil.rmtree(tmp / METHODS, ignore_errors=True)
            os.rename(old_methods, tmp / METHODS)
        trash = _sibling_tmp(out)
        os.rename(out, trash)
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
        return out
    try:
        os.rename(tmp, out)
    except OSError:  # another process created it in the meantime
        shutil.rmtree(tmp, ignore_errors=True)
        raise CircuitlabError(f"store {str(out)!r} already exists; pass --overwrite to re-record it") from None
    return out


# ---------------------------------------------------------------------------------------------
# Recording a model


def corpus_window_starts(n_tokens: int, n: int, window: int, seed: int) -> np.ndarray:
    """Start offsets of ``n`` distinct windows of ``window`` tokens, seeded, sorted."""
    span = n_tokens - window + 1
    if span < 1:
        raise CircuitlabError(f"the validation split has {n_tokens} tokens, fewer than one {window}-token window; "
                              "use a larger corpus or a smaller --window")
    rng = np.random.default_rng(seed)
    starts = rng.choice(span, size=min(n, span), replace=False) if n <= span else rng.integers(0, span, n)
    return np.sort(starts).astype(np.int64)


def _record_rows(model, ids: np.ndarray, length: np.ndarray, space: NodeSpace, batch_size: int) -> Iterator[np.ndarray]:
    """Activations (b, T, N) of rows of ``ids`` (n, T) int, zeroed after each row's length."""
    import torch

    from .nodes import record_activations

    T = ids.shape[1]
    device = next(model.parameters()).device
    for i in range(0, len(ids), batch_size):
        x = torch.from_numpy(np.where(ids[i:i + batch_size] < 0, 0, ids[i:i + batch_size]).astype(np.int64))
        acts = record_activations(model, x.to(device), space).cpu().numpy()
        valid = np.arange(T)[None, :] < length[i:i + batch_size, None]
        acts *= valid[:, :, None]
        acts += 0.0  # -0.0 -> 0.0: zeros compress better as all-zero bytes
        yield acts


def _check_can_record(out: Path, info, overwrite: bool) -> None:
    """An existing store may only be re-recorded for the same model, and only with --overwrite."""
    if out.exists():
        check_model(out, info)
        if not overwrite:
            raise CircuitlabError(f"store {str(out)!r} already exists for this model; pass --overwrite to "
                                  "re-record it (its method results are kept)")


def record_store(out: str | os.PathLike, model, tokenizer, info, *,
                 tasks: Sequence[tuple[str, str, Sequence[Any]]] = (), corpus_ids: np.ndarray | None = None,
                 corpus_windows: int = 256, window: int | None = None, seed: int = 0, node_mean=None,
                 node_mean_info: dict | None = None, overwrite: bool = False, batch_size: int = 32,
                 chunk_bytes: int = CHUNK_BYTES, progress=None) -> Path:
    """Record every node's activation on task prompt pairs and corpus windows into a new store.

    ``tasks``: (task name, split, PromptPair list) triples; both prompts of every pair become examples.
    ``corpus_ids``: the token ids of the corpus' validation split, from which ``corpus_windows`` windows of
    ``window`` tokens (default: the model's context) are drawn. ``node_mean``: (num_nodes,) mean
    activations used for ablation (default: ``circuitlab.prune.ablation.node_means``).
    """
    from .config import to_dict
    from .tasks import encode_pairs

    out = Path(out)
    _check_can_record(out, info, overwrite)
    space = NodeSpace.from_config(model.config)
    n_ctx = model.config.n_ctx
    window = min(window or n_ctx, n_ctx)
    task_names = list(dict.fromkeys(t for t, _, _ in tasks))
    splits = list(dict.fromkeys([s for _, s, _ in tasks] + ["val"]))
    encoded = []
    for name, split, pairs in tasks:
        if not pairs:
            continue
        try:
            b = encode_pairs(list(pairs), tokenizer, max_len=n_ctx)
        except ValueError as exc:
            raise CircuitlabError(f"task {name!r}: {exc}; filter its pairs with circuitlab.tasks.check_tokens") from None
        encoded.append((name, split, b))
    if node_mean is None:
        from .prune.ablation import N_WINDOWS, WINDOW, WINDOW_SEED, node_means

        node_mean = node_means(model, tokenizer, info, next(model.parameters()).device)
        node_mean_info = {"source": "circuitlab.prune.ablation.node_means", "split": "val",
                          "n_windows": N_WINDOWS, "window": min(WINDOW, n_ctx), "seed": WINDOW_SEED}
    node_mean = np.asarray(node_mean.detach().cpu().numpy() if hasattr(node_mean, "detach") else node_mean,
                           dtype=np.float32)
    starts = (corpus_window_starts(len(corpus_ids), corpus_windows, window, seed)
              if corpus_ids is not None and corpus_windows > 0 else np.zeros(0, np.int64))
    tokens = max([window] + [int(b.ids.shape[1]) for _, _, b in encoded])
    num_examples = sum(len(b) for _, _, b in encoded) + len(starts)

    def batches() -> Iterator[ExampleBatch]:
        done = 0
        for name, split, b in encoded:
            n = len(b)
            ids = np.full((n, tokens), -1, np.int32)
            length = (b.last.numpy() + 1).astype(np.int32)
            raw = b.ids.numpy()
            for r in range(n):
                ids[r, :length[r]] = raw[r, :length[r]]
            pos = 0
            for acts in _record_rows(model, ids, length, space, batch_size):
                k = len(acts)
                sl = slice(pos, pos + k)
                rows = np.arange(pos, pos + k)
                yield ExampleBatch(
                    activation=acts, token_ids=ids[sl], length=length[sl],
                    task=np.full(k, task_names.index(name)), side=rows % 2, split=np.full(k, splits.index(split)),
                    pair=rows // 2, target=b.target.numpy()[sl], contrast=b.contrast.numpy()[sl],
                    offset=np.full(k, -1))
                pos += k
                done += k
                if progress:
                    progress(done, num_examples)
        if len(starts):
            ids = np.full((len(starts), tokens), -1, np.int32)
            ids[:, :window] = np.stack([corpus_ids[s:s + window].astype(np.int32) for s in starts])
            length = np.full(len(ids), window, np.int32)
            pos = 0
            for acts in _record_rows(model, ids, length, space, batch_size):
                k = len(acts)
                sl = slice(pos, pos + k)
                yield ExampleBatch(
                    activation=acts, token_ids=ids[sl], length=length[sl], task=np.full(k, CORPUS),
                    side=np.full(k, SIDES.index("corpus")), split=np.full(k, splits.index("val")),
                    pair=np.full(k, -1), target=np.full(k, -1), contrast=np.full(k, -1), offset=starts[sl])
                pos += k
                done += k
                if progress:
                    progress(done, num_examples)

    vocab = tokenizer.get_vocab_size()
    attributes = base_attributes(
        codes={"task": task_names, "split": splits},
        model=model_identity(info), model_config=to_dict(info.model),
        token_text=[tokenizer.decode([i]) for i in range(vocab)],
        node_mean=node_mean_info or {"source": "given"},
        record={"corpus_windows": int(len(starts)), "window": int(window), "seed": int(seed),
                "corpus_split": "val", "task_pairs": {f"{t}/{s}": len(p) for t, s, p in tasks}})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling_tmp(out)
    try:
        write_dataset(tmp, batches(), num_examples=num_examples, tokens=tokens, nodes=node_coords(space),
                      node_mean=node_mean, attributes=attributes, chunk_bytes=chunk_bytes)
        return install_store(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


RECORD_DEFAULTS = {"tasks": "all", "pairs": 16, "splits": ("test",), "corpus_windows": 256, "window": 64, "seed": 0}


def record_run(out: str | os.PathLike, run, *, tasks: str | None = "all", pairs: int = 16,
               splits: Sequence[str] = ("test",), corpus_windows: int = 256, window: int = 64, seed: int = 0,
               overwrite: bool = False, progress=None, note=None) -> Path:
    """``circuitlab record``: load the run, pick task pairs and corpus windows, and write the store.

    Tasks the tokenizer cannot express are skipped (``note`` gets a message), with the same token check
    as ``circuitlab prune``; ``tasks="none"`` records corpus windows only.
    """
    from .runs import RunInfo, read_run

    info = run if isinstance(run, RunInfo) else read_run(run)  # cheap checks first: no torch yet
    out = Path(out)
    _check_can_record(out, info, overwrite)
    from .corpus import load_corpus
    from .runs import load_model
    from .tasks import SPLITS, check_tokens, load_pairs, resolve_tasks, task_context_for_run
    from .tokenizer import encode_split

    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise CircuitlabError(f"unknown split(s) {bad}; valid: {', '.join(SPLITS)}")
    model, tok, info = load_model(info.path)
    task_sets = []
    if (tasks or "all").strip().lower() != "none" and pairs > 0:
        context = task_context_for_run(info)
        for task in resolve_tasks(tasks, context):
            check = check_tokens(task, tok)
            if not check.usable:  # the same rule as 'circuitlab prune': such a task is never pruned
                if note:
                    note(f"skip {task.qualname}: {check.problem}")
                continue
            for split in splits:
                kept = check_tokens(load_pairs(task, split, pairs, context), tok).pairs
                if kept:
                    task_sets.append((task.qualname, split, list(kept)))
    corpus_ids = None
    if corpus_windows > 0:
        corpus_ids = encode_split(load_corpus(info.train.corpus), tok, "val")
    return record_store(out, model, tok, info, tasks=task_sets, corpus_ids=corpus_ids,
                        corpus_windows=corpus_windows, window=window, seed=seed, overwrite=overwrite,
                        progress=progress)


def ensure_store(path: str | os.PathLike, run, *, note=None, **record_kw) -> Path:
    """The store at ``path`` for run ``run`` (RunInfo or folder): checked if it exists (same model, else an
    error), else recorded with ``record_run`` (defaults: ``RECORD_DEFAULTS``). For ``--store`` on
    ``circuitlab prune``/``run``: call it once before pruning, so a wrong store fails before any work."""
    from .runs import RunInfo, read_run

    info = run if isinstance(run, RunInfo) else read_run(run)
    path = Path(path)
    if path.exists():
        check_model(path, info)
        return path
    if note:
        note(f"recording activation store {str(path)!r} (circuitlab record --model {info.path} --out {path})")
    try:
        return record_run(path, info, note=note, **{**RECORD_DEFAULTS, **record_kw})
    except CircuitlabError:
        if path.exists():  # another process recorded it meanwhile: fine if it is the same model
            check_model(path, info)
            return path
        raise


# ---------------------------------------------------------------------------------------------
# Method results


def method_group(method: str, task: str) -> str:
    return f"{METHODS}/{_check_name('method', method)}/{_check_name('task', task)}"


def list_methods(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(method, task) of every method result in the store, sorted."""
    root = Path(path) / METHODS
    found = []
    if root.is_dir():
        for m in sorted(os.listdir(root)):
            if (root / m).is_dir() and not m.startswith("."):
                for t in sorted(os.listdir(root / m)):
                    if not t.startswith(".") and (root / m / t / "zarr.json").exists():
                        found.append((m, t))
    return found


def open_method(path: str | os.PathLike, method: str, task: str) -> xr.Dataset:
    import xarray as xr

    path = Path(path)
    _root_attrs(path)
    group = method_group(method, task)
    if not (path / group / "zarr.json").exists():
        raise UnknownNameError("method result", f"{method}/{task}", [f"{m}/{t}" for m, t in list_methods(path)])
    try:
        return xr.open_zarr(path, group=group, consolidated=False, chunks=None, zarr_format=3)
    except Exception as exc:
        raise CircuitlabError(f"method result {method}/{task} in {str(path)!r} could not be opened "
                              f"({type(exc).__name__}: {exc}); rewrite it with --overwrite") from None


def _check_nodes(path: Path, ds: xr.Dataset, space: NodeSpace | None, n: int) -> dict[str, np.ndarray]:
    stored = {c: read_values(ds[c], c) for c in _NODE_COORDS}
    if len(stored["index"]) != n:
        raise CircuitlabError(f"store {str(path)!r} has {len(stored['index'])} nodes but the result has {n}; "
                              "it was recorded for a different model shape; use a store recorded from this run")
    if space is not None:
        mine = node_coords(space)
        for c in _NODE_COORDS:
            if not np.array_equal(mine[c], stored[c]):
                raise CircuitlabError(f"store {str(path)!r}: node coordinate {c!r} does not match this model's "
                                      "node layout; use a store recorded from this run")
    return stored


def _edge_array(edge_list, ds: xr.Dataset) -> np.ndarray:
    """(E, 2) int64 flat node indices from pairs of indices or of node names (``"0.mlp.neuron.3"``)."""
    pairs = [tuple(p) for p in edge_list]
    if pairs and any(isinstance(x, str) for p in pairs for x in p):
        space = node_space(ds)
        pairs = [tuple(space.index(x) if isinstance(x, str) else int(x) for x in p) for p in pairs]
    try:
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise CircuitlabError("edge_list must be (source, destination) pairs of node indices or names") from None


def add_method_result(store_path: str | os.PathLike, *, method: str, task: str, scores, kept, loss: float,
                      edges: int, nodes: int, provenance: dict, edge_list=None, overwrite: bool = False,
                      run=None) -> Path:
    """Add one method's result for one task to a store recorded by ``circuitlab record``.

    ``scores``: float (num_nodes,) mask scores; ``kept``: bool (num_nodes,) kept set; ``edge_list``: the
    circuit's edges as (source, destination) flat node indices (``circuitlab.prune.edges.edge_list``) or
    node names (``Circuit.edges``); without it, ``compare`` rebuilds the edges from the recorded run.
    The node layout is checked against the store before anything is written. If ``run`` (a RunInfo or
    run folder) is given, the model identity is checked too, and a missing store is first recorded
    (``ensure_store``); without ``run`` the store must exist. The result goes into its own group
    ``methods/<method>/<task>``, written in a temporary folder and renamed into place: it never touches
    another method's data, and an existing result is an error unless ``overwrite``.
    """
    import xarray as xr

    path = Path(store_path)
    group = method_group(method, task)
    space = None
    if run is not None:
        from .runs import RunInfo, read_run

        info = run if isinstance(run, RunInfo) else read_run(run)
        ensure_store(path, info)  # checks the model identity; records the store if it is missing
        space = NodeSpace.from_config(info.model)
    root_attrs = _root_attrs(path)
    scores = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, dtype=np.float32)
    kept_arr = np.asarray(kept.detach().cpu().numpy() if hasattr(kept, "detach") else kept)
    if kept_arr.dtype != np.bool_:
        if not np.isin(kept_arr, (0, 1)).all():
            raise CircuitlabError(f"kept for {method}/{task} must be boolean (one per node)")
        kept_arr = kept_arr.astype(bool)
    if scores.ndim != 1 or kept_arr.shape != scores.shape:
        raise CircuitlabError(f"scores {scores.shape} and kept {kept_arr.shape} for {method}/{task} must both be "
                              "(num_nodes,)")
    ds = open_store(path)
    stored = _check_nodes(path, ds, space, len(scores))
    if int(nodes) != int(kept_arr.sum()):
        raise CircuitlabError(f"{method}/{task}: nodes={nodes} but kept has {int(kept_arr.sum())} nodes")
    if edge_list is not None:
        e = _edge_array(edge_list, ds)
        if len(e) != int(edges):
            raise CircuitlabError(f"{method}/{task}: edges={edges} but edge_list has {len(e)} edges")
        if len(e) and (e.min() < 0 or e.max() >= len(scores)):
            raise CircuitlabError(f"{method}/{task}: edge_list has node indices outside 0..{len(scores) - 1}")
    else:
        e = np.zeros((0, 2), np.int64)
    task_codes = root_attrs.get("codes", {}).get("task", [])
    result = xr.Dataset(
        {"score": ("node", scores), "kept": ("node", kept_arr),
         "edge_src": ("edge", e[:, 0].astype(np.int32)), "edge_dst": ("edge", e[:, 1].astype(np.int32))},
        coords={"node": np.arange(len(scores), dtype=np.int32), **{c: ("node", stored[c]) for c in _NODE_COORDS}},
        attrs={"schema_version": SCHEMA_VERSION, "method": method, "task": task,
               "task_code": task_codes.index(task) if task in task_codes else None,
               "loss": float(loss), "edges": int(edges), "nodes": int(nodes),
               "has_edge_list": edge_list is not None,
               "provenance": json.loads(json.dumps(provenance, default=str)), "created": _now()})
    target = path / group
    if target.exists() and not overwrite:
        raise CircuitlabError(f"store {str(path)!r} already has a result for method {method!r} on task {task!r}; "
                              "pass --overwrite to replace it, or use another method label")
    _group_json(path / METHODS, path.parent)
    _group_json(target.parent, path.parent)
    tmp = _sibling_tmp(path)
    try:
        result.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False)
        if target.exists() and overwrite:
            trash = target.parent / f".trash-{uuid.uuid4().hex[:12]}"
            os.rename(target, trash)
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                raise CircuitlabError(f"store {str(path)!r} already has a result for method {method!r} on task "
                                      f"{task!r} (written concurrently); pass --overwrite to replace it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Top-activating examples


def top_examples(path: str | os.PathLike, node: str, k: int = 10, source: str = "corpus",
                 context: int = 24, after: int = 4) -> dict[str, Any]:
    """The ``k`` (example, position) where ``node`` has the largest activation, with the text around it."""
    path = Path(path)
    ds = open_store(path)
    space = node_space(ds)
    idx = space.index(node)
    side = np.asarray(read_values(ds["side"], "side"))
    corpus_code = SIDES.index("corpus")
    rows = {"corpus": np.flatnonzero(side == corpus_code), "tasks": np.flatnonzero(side != corpus_code),
            "all": np.arange(len(side))}.get(source)
    if rows is None:
        raise UnknownNameError("example source", source, ["corpus", "tasks", "all"])
    if len(rows) == 0:
        raise CircuitlabError(f"store {str(path)!r} has no {source} examples; record some with "
                              "'circuitlab record --corpus-windows N'")
    length = read_values(ds["length"], "length")[rows]
    ce = int(ds["activation"].encoding.get("chunks", (256,))[0])
    acts = np.empty((len(rows), ds.sizes["token"]), np.float32)
    lo = 0
    while lo < len(rows):  # read chunk by chunk so a corrupt chunk is named precisely
        sel = rows[lo: lo + ce]
        sel_ = slice(int(sel[0]), int(sel[-1]) + 1) if sel[-1] - sel[0] == len(sel) - 1 else sel
        acts[lo: lo + len(sel)] = read_values(ds["activation"].isel(example=sel_, node=idx), "activation",
                                              f" of examples {int(sel[0])}..{int(sel[-1])}")
        lo += len(sel)
    valid = np.arange(acts.shape[1])[None, :] < length[:, None]
    flat = np.where(valid, acts, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[: max(0, k)]
    order = order[np.isfinite(flat[order])]
    token_text = ds.attrs.get("token_text", [])
    codes = ds.attrs["codes"]
    task = read_values(ds["task"], "task")
    ids_all = ds["token_ids"]
    hits = []
    for o in order:
        r, pos = divmod(int(o), acts.shape[1])
        ex = int(rows[r])
        ids = read_values(ids_all.isel(example=ex), "token_ids")
        n = int(length[r])

        def text(a: int, b: int, ids=ids) -> str:
            return "".join(token_text[i] if 0 <= i < len(token_text) else f"<{i}>" for i in ids[a:b])

        hits.append({"rank": len(hits) + 1, "activation": float(acts[r, pos]), "example": ex, "position": pos,
                     "task": codes["task"][task[ex]] if task[ex] >= 0 else None,
                     "before": text(max(0, pos - context), pos), "token": text(pos, pos + 1),
                     "after": text(pos + 1, min(n, pos + 1 + after))})
    nz = acts[valid]
    return {"store": str(path), "node": node, "node_index": idx, "source": source, "examples": int(len(rows)),
            "mean_abs": float(np.abs(nz).mean()) if nz.size else 0.0,
            "frequency": float((nz != 0).mean()) if nz.size else 0.0, "top": hits}


__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "SUPPORTED_SCHEMA_VERSIONS", "SIDES", "ExampleBatch", "add_method_result",
    "base_attributes", "check_model", "ensure_store", "record_run", "chunk_examples", "list_methods", "model_identity", "node_coords",
    "node_space", "open_method", "open_store", "read_values", "record_store", "to_torch", "top_examples",
    "write_dataset", "BLOCK_SITES",
]
