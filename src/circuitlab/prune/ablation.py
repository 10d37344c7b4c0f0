"""Ablation of pruned nodes (Gao et al. 2025, §2.2).

A pruned node takes a fixed value at every prompt and position: its **mean activation over corpus
tokens** (mean ablation, the default), zero (``--ablation zero``), or its mean over every token of the
task's own train prompts (``--ablation task_mean``, computed per task by ``task_mean_values``). Means come from running the
unpruned model over fixed random windows of the corpus' validation split, once per model; they are
cached in the run folder as ``node_means.safetensors`` under a key naming the corpus, the
tokenizer, the weights and the windows, so a retrained or re-tokenized model never reuses stale
means.

The masked forward pass replaces each node location's activation ``x`` by
``mean + gate * (x - mean)``, one gate per node, vectorised per location. ``--freeze-norm`` also
replaces the final RMSNorm's scale by the unpruned model's scale at the same prompt and position
(the control of Drori 2026: pruning can otherwise shrink the residual and let the norm amplify
the few kept writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import tensors_sha256
from ..interrupts import STOPS
from ..log import logger
from ..model.nodes import NodeSpace, hooked_pass

if TYPE_CHECKING:
    import torch

MEANS_FILE = "node_means.safetensors"
#: Default ablation corpus: this many random windows of the validation split, of this many tokens
#: (capped at the model's context length), drawn with this seed.
N_WINDOWS, WINDOW, WINDOW_SEED = 64, 128, 0


def compute_node_means(model, windows: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Mean activation of every node over all tokens of ``windows`` (n, T), shape (num_nodes,)."""
    import torch

    space = NodeSpace.from_config(model.config)
    locs = space.by_hook()
    sums = torch.zeros(space.num_nodes, dtype=torch.float64, device=windows.device)

    def hook(name, x):
        loc = locs.get(name)
        if loc is not None:
            sums[loc.offset: loc.offset + loc.size] += x.detach().double().sum(dim=(0, 1))
        return x

    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, windows.shape[0], batch_size):
            hooked_pass(model, windows[i: i + batch_size], hook)
    model.train(was_training)
    return (sums / (windows.shape[0] * windows.shape[1])).float()


def _corpus_hash(info) -> str | None:
    """The corpus hash recorded in the run folder, without reading the corpus, if the run has one."""
    manifest = Path(info.path) / "corpus_manifest.json"
    if manifest.exists():
        try:
            h = json.loads(manifest.read_text()).get("hash")
            if isinstance(h, str):
                return h
        except (OSError, ValueError):
            pass
    prov = info.provenance or {}
    for key in ("corpus_hash",):
        if isinstance(prov.get(key), str):
            return prov[key]
    corpus = prov.get("corpus")
    if isinstance(corpus, dict) and isinstance(corpus.get("hash"), str):
        return corpus["hash"]
    return None


def means_key(info, tokenizer, corpus_hash: str, n_windows: int, window: int, seed: int) -> str:
    from ..data.tokenizer import tokenizer_hash

    weights = tensors_sha256(Path(info.path) / "model.safetensors")[:16]
    return f"corpus-{corpus_hash[:16]}.tok-{tokenizer_hash(tokenizer)}.w-{weights}.{n_windows}x{window}.s{seed}"


def _read_cache(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    if not path.exists():
        return {}, {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except STOPS:
        raise
    except Exception:  # a damaged cache is recomputed, not trusted
        return {}, {}


def node_means(model, tokenizer, info, device: Any = "cpu", *, n_windows: int = N_WINDOWS,
               window: int = WINDOW, seed: int = WINDOW_SEED, progress: bool = False) -> torch.Tensor:
    """Every node's mean activation over corpus validation tokens, shape (num_nodes,), float32.

    ``info`` is the run's ``RunInfo`` (``circuitlab.runs.read_run``); the means are cached in its
    folder (``node_means.safetensors``, atomic write) and recomputed only for a new key. With
    ``info=None`` they are computed from the default corpus and not cached.
    """
    from ..data.corpus import load_corpus
    from ..data.tokenizer import encode_split
    from ..data.windows import windows as corpus_windows
    from ..files import write_safetensors

    window = min(window, model.config.n_ctx)
    corpus = None
    corpus_hash = _corpus_hash(info) if info is not None else None
    if corpus_hash is None:
        corpus = load_corpus(info.train.corpus if info is not None else None)
        corpus_hash = corpus.hash
    key = path = None
    tensors: dict[str, Any] = {}
    meta: dict[str, str] = {}
    if info is not None:
        key = means_key(info, tokenizer, corpus_hash, n_windows, window, seed)
        path = Path(info.path) / MEANS_FILE
        tensors, meta = _read_cache(path)
        cached = tensors.get(key)
        num_nodes = NodeSpace.from_config(model.config).num_nodes
        if cached is not None and cached.shape == (num_nodes,):
            return cached.float().to(device)
    if progress:
        logger.info(f"computing node means over {n_windows}x{window} validation tokens")
    if corpus is None:
        corpus = load_corpus(info.train.corpus if info is not None else None)
    ids = encode_split(corpus, tokenizer, "val")
    windows = corpus_windows(ids, n_windows, window, seed).to(device)
    means = compute_node_means(model, windows)
    if path is not None:
        tensors[key] = means.detach().cpu().contiguous()
        meta[key] = json.dumps({"corpus_hash": corpus_hash, "split": "val", "n_windows": n_windows,
                                "window": window, "seed": seed})
        write_safetensors(path, tensors, meta)
    return means


def task_mean_values(model, batch, batch_size: int = 64) -> torch.Tensor:
    """Every node's mean activation over the valid tokens of an encoded task batch, (num_nodes,) float32.

    ``batch`` is a ``TaskBatch`` (both prompts of every pair); padding after each prompt's last token is
    left out. This is the "task mean" ablation: what a node does on this task's prompts on average.
    """
    import torch

    space = NodeSpace.from_config(model.config)
    locs = space.by_hook()
    sums = torch.zeros(space.num_nodes, dtype=torch.float64, device=batch.ids.device)
    tokens = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(batch), batch_size):
            last = batch.last[i: i + batch_size]
            ids = batch.ids[i: i + batch_size, : int(last.max()) + 1]
            valid = (torch.arange(ids.shape[1], device=ids.device)[None, :] <= last[:, None]).double()  # (b, T)

            def hook(name, x, valid=valid):
                loc = locs.get(name)
                if loc is not None:
                    sums[loc.offset: loc.offset + loc.size] += torch.einsum("btn,bt->n", x.detach().double(), valid)
                return x

            hooked_pass(model, ids, hook)
            tokens += int(valid.sum())
    model.train(was_training)
    return (sums / max(tokens, 1)).float()


def ablation_values(model, tokenizer, info, ablation: str = "mean", device: Any = "cpu",
                    progress: bool = False, task_batch=None) -> torch.Tensor:
    """What a pruned node is replaced by: the node means (``mean``), zeros (``zero``), or the means over
    ``task_batch``'s tokens (``task_mean``; the caller passes the task's encoded train pairs).

    ``ablation`` is one of ``circuitlab.config.ABLATIONS``, checked by ``PruneConfig``."""
    import torch

    if ablation == "zero":
        return torch.zeros(NodeSpace.from_config(model.config).num_nodes, device=device)
    if ablation == "task_mean":
        if task_batch is None:
            raise ValueError("task_mean ablation needs the task's encoded train pairs (task_batch)")
        return task_mean_values(model, task_batch.to(device))
    return node_means(model, tokenizer, info, device, progress=progress)


def ablation_hook(space: NodeSpace, gate: torch.Tensor, values: torch.Tensor,
                  norm_scale: torch.Tensor | None = None):
    """A forward hook that mixes every node location: ``values + gate * (x - values)``.

    ``gate`` and ``values`` have shape (num_nodes,); a gate of 1 keeps a node, 0 ablates it.
    ``norm_scale`` (B, T, 1), or (B, R, 1) for ``GPT.last_final`` at R positions per row, if given,
    replaces the final RMSNorm scale (``--freeze-norm``). Under CPU bfloat16 autocast (mask training)
    the mix runs in the gate's float32.
    """
    import torch

    # One split per pass (one autograd node for the gate, not one slice per location); locations tile
    # the node index in order.
    names = [loc.hook for loc in space.locations]
    sizes = [loc.size for loc in space.locations]
    gates = dict(zip(names, gate.split(sizes), strict=True))
    means = dict(zip(names, values.split(sizes), strict=True))

    def hook(name: str, x: torch.Tensor) -> torch.Tensor:
        g = gates.get(name)
        if g is not None:
            if x.dtype != g.dtype and torch.is_autocast_enabled(x.device.type):
                x = x.to(g.dtype)  # bfloat16 mask training: the mix and its gate gradient stay float32
            return torch.lerp(means[name].to(x.dtype).expand_as(x), x, g.to(x.dtype))
        if name == "final.norm" and norm_scale is not None:
            return norm_scale[:, : x.shape[1]].to(x.dtype)
        return x

    return hook
