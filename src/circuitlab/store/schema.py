"""The store's schema: constants, records, node coordinates, root attrs and model identity (no torch).

See ``circuitlab.store`` for the layout and docs/store.md for every field.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ..errors import CircuitlabError
from ..files import sha256_file, tensors_sha256
from ..model.nodes import SITE_CODES, Location, NodeSpace

if TYPE_CHECKING:
    import xarray as xr

SCHEMA = "circuitlab-store"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
SIDES = ("a", "b", "corpus")  # side codes: prompt A, prompt B of a pair, or a corpus window
CORPUS = -1  # task code of corpus windows
METHODS = "methods"
CHUNK_BYTES = 4 << 20  # target uncompressed size of one activation chunk
MIN_CHUNK_BYTES = 1 << 20  # the smallest chunk along example (unless the whole array is smaller)
ZSTD_LEVEL = 1  # about as small as level 3 and faster (docs/store.md, codec table)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=:-]{0,127}$")
EXAMPLE_COORDS = ("task", "side", "split", "pair")
NODE_COORDS = ("layer", "site", "index")


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


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CircuitlabError(f"{kind} name {name!r} cannot name a store group; use letters, digits and _ . + = : - "
                              "(at most 128, starting with a letter or digit)")
    return name


def model_identity(info) -> dict[str, Any]:
    """What identifies a trained model: a hash of its tensors (names, dtypes, shapes, bytes; not of the
    file, whose bytes could differ for equal weights), its config hash, corpus and tokenizer hashes."""
    from ..config import config_hash

    prov = info.provenance or {}
    corpus = prov.get("corpus") if isinstance(prov.get("corpus"), dict) else {}
    weights = Path(info.path) / "model.safetensors"
    return {
        "run": str(Path(info.path).resolve()),
        "tensors_sha256": tensors_sha256(weights),
        "weights_sha256": sha256_file(weights),
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
    layer, site, index = (np.asarray(ds[c].values) for c in NODE_COORDS)
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


def base_attributes(*, codes: dict[str, list[str]], model: dict[str, Any] | None = None,
                    model_config: dict | None = None, token_text: list[str] | None = None,
                    node_mean: dict | None = None, record: dict | None = None) -> dict[str, Any]:
    """The root attrs of a store (see docs/store.md)."""
    from .. import __version__

    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "circuitlab_version": __version__,
        "created": now(),
        "model": model or {},
        "model_config": model_config or {},
        "codes": {"site": site_table(), "side": list(SIDES), **codes},
        "token_text": token_text or [],
        "node_mean": node_mean or {},
        "record": record or {},
    }


def root_attrs(path: Path) -> dict[str, Any]:
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


def check_model(path: str | os.PathLike, info) -> dict[str, Any]:
    """Raise unless the store at ``path`` was recorded from the model of run ``info``; returns its attrs."""
    path = Path(path)
    attrs_ = root_attrs(path)
    stored = attrs_.get("model", {})
    ident = model_identity(info)
    # Stores written before tensors_sha256 existed identify the model by the file's bytes.
    for key in ("tensors_sha256" if "tensors_sha256" in stored else "weights_sha256", "config_hash"):
        if stored.get(key) != ident[key]:
            raise CircuitlabError(
                f"store {str(path)!r} was recorded for a different model (run {stored.get('run')!r}, "
                f"{key} {str(stored.get(key))[:12]}), not run {ident['run']!r} ({key} {str(ident[key])[:12]}); "
                "use a new --out/--store path or the matching --model")
    return attrs_
