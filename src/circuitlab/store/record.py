"""Recording a model into a store: every node's activation on task prompt pairs and corpus windows."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..config import RecordConfig
from ..errors import CircuitlabError
from ..files import remove_tree, sibling_tmp
from ..model.nodes import NodeSpace
from .io import StoreLayout, install_store, write_dataset
from .schema import (
    CORPUS,
    SIDES,
    ExampleBatch,
    base_attributes,
    check_model,
    model_identity,
    node_coords,
)


def _record_rows(model, ids: np.ndarray, space: NodeSpace, batch_size: int) -> Iterator[np.ndarray]:
    """Activations (b, T, N) of rows of ``ids`` (n, T) int, -1 after each row's last token.

    Only the forward pass happens here: zeroing the positions after each row's end, rounding and
    compressing happen in the store's writer thread (``write_dataset``), while the next batch runs."""
    import torch

    from ..model.nodes import record_activations

    device = next(model.parameters()).device
    for i in range(0, len(ids), batch_size):
        x = torch.from_numpy(np.where(ids[i:i + batch_size] < 0, 0, ids[i:i + batch_size]).astype(np.int64))
        yield record_activations(model, x.to(device), space).cpu().numpy()


def _check_can_record(out: Path, info, overwrite: bool) -> None:
    """An existing store may only be re-recorded for the same model, and only with --overwrite; the
    folder must be writable (checked before any work)."""
    from ..files import check_writable_dir, recover_dir

    recover_dir(out)  # a kill during an earlier replacement: the complete store back in place
    if out.exists():
        check_model(out, info)
        if not overwrite:
            raise CircuitlabError(f"store {str(out)!r} already exists for this model; pass --overwrite to "
                                  "re-record it (its method results are kept)")
    check_writable_dir(out.parent, "--out")


def _encode_tasks(tasks, tokenizer, n_ctx: int) -> list:
    from ..tasks import encode_pairs

    encoded = []
    for name, split, pairs in tasks:
        if not pairs:
            continue
        try:
            b = encode_pairs(list(pairs), tokenizer, max_len=n_ctx)
        except ValueError as exc:
            raise CircuitlabError(f"task {name!r}: {exc}; filter its pairs with circuitlab.tasks.check_tokens") from None
        encoded.append((name, split, b))
    return encoded


def _default_node_mean(model, tokenizer, info) -> tuple[Any, dict]:
    from ..prune.ablation import N_WINDOWS, WINDOW, WINDOW_SEED, node_means

    means = node_means(model, tokenizer, info, next(model.parameters()).device)
    return means, {"source": "circuitlab.prune.ablation.node_means", "split": "val", "n_windows": N_WINDOWS,
                   "window": min(WINDOW, model.config.n_ctx), "seed": WINDOW_SEED}


def _task_rows(model, encoded, tokens: int, task_names: list, splits: list, space, batch_size: int):
    """ExampleBatches of both prompts of every encoded pair, in order."""
    for name, split, b in encoded:
        n = len(b)
        ids = np.full((n, tokens), -1, np.int32)
        length = (b.last.numpy() + 1).astype(np.int32)
        raw = b.ids.numpy()
        for r in range(n):
            ids[r, :length[r]] = raw[r, :length[r]]
        pos = 0
        for acts in _record_rows(model, ids, space, batch_size):
            k = len(acts)
            sl = slice(pos, pos + k)
            rows = np.arange(pos, pos + k)
            yield ExampleBatch(
                activation=acts, token_ids=ids[sl], length=length[sl],
                task=np.full(k, task_names.index(name)), side=rows % 2, split=np.full(k, splits.index(split)),
                pair=rows // 2, target=b.target.numpy()[sl], contrast=b.contrast.numpy()[sl],
                offset=np.full(k, -1))
            pos += k


def _corpus_rows(model, corpus_ids, starts, window: int, tokens: int, split_code: int, space, batch_size: int):
    """ExampleBatches of the corpus windows starting at ``starts``."""
    ids = np.full((len(starts), tokens), -1, np.int32)
    ids[:, :window] = np.stack([corpus_ids[s:s + window].astype(np.int32) for s in starts])
    length = np.full(len(ids), window, np.int32)
    pos = 0
    for acts in _record_rows(model, ids, space, batch_size):
        k = len(acts)
        sl = slice(pos, pos + k)
        yield ExampleBatch(
            activation=acts, token_ids=ids[sl], length=length[sl], task=np.full(k, CORPUS),
            side=np.full(k, SIDES.index("corpus")), split=np.full(k, split_code),
            pair=np.full(k, -1), target=np.full(k, -1), contrast=np.full(k, -1), offset=starts[sl])
        pos += k


@attrs.frozen(kw_only=True)
class RecordInputs:
    """What ``record_store`` records, besides the model.

    ``tasks``: (task name, split, PromptPair list) triples; both prompts of every pair become examples.
    ``corpus_ids``: the token ids of the corpus' validation split, from which ``RecordConfig.corpus_windows``
    windows of ``RecordConfig.window`` tokens (capped at the model's context) are drawn
    (``circuitlab.data.windows``, sorted). ``node_mean``: (num_nodes,) mean activations used for
    ablation (default: ``circuitlab.prune.ablation.node_means``), described by ``node_mean_info``."""

    tasks: Sequence[tuple[str, str, Sequence[Any]]] = ()
    corpus_ids: np.ndarray | None = attrs.field(default=None, eq=False)
    node_mean: Any = attrs.field(default=None, eq=False)
    node_mean_info: dict | None = None


@contextlib.contextmanager
def _threads_beside_writer():
    """One torch thread fewer while the writer thread compresses and writes: with every core in torch,
    torch's idle threads spin for work the writer needs the core for (docs/store.md, "Record
    overhead": on 2 cores this saved about 1.1 CPU-s of 1024 windows of the `small` model)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def record_store(out: str | os.PathLike, model, tokenizer, info, config: RecordConfig | None = None, *,
                 inputs: RecordInputs | None = None, overwrite: bool = False, progress=None) -> Path:
    """Record every node's activation on task prompt pairs and corpus windows into a new store.

    ``config`` says how many corpus windows of how many tokens (seeded by ``seed``), and how
    activations are stored (``precision``, ``codec``: ``circuitlab.store.encoding``); ``config.tasks``,
    ``pairs`` and ``splits`` are ``record_run``'s to pick the ``inputs``. The forward passes run in this
    thread while a writer thread compresses and writes the previous batch.
    """
    from ..config import to_dict
    from ..data.windows import window_starts

    config = config or RecordConfig()
    inputs = inputs or RecordInputs()
    tasks, corpus_ids, node_mean, node_mean_info = inputs.tasks, inputs.corpus_ids, inputs.node_mean, inputs.node_mean_info
    corpus_windows, seed, batch_size = config.corpus_windows, config.seed, config.batch_size
    out = Path(out)
    _check_can_record(out, info, overwrite)
    space = NodeSpace.from_config(model.config)
    n_ctx = model.config.n_ctx
    window = min(config.window or n_ctx, n_ctx)
    task_names = list(dict.fromkeys(t for t, _, _ in tasks))
    splits = list(dict.fromkeys([s for _, s, _ in tasks] + ["val"]))
    encoded = _encode_tasks(tasks, tokenizer, n_ctx)
    if node_mean is None:
        node_mean, node_mean_info = _default_node_mean(model, tokenizer, info)
    node_mean = np.asarray(node_mean.detach().cpu().numpy() if hasattr(node_mean, "detach") else node_mean,
                           dtype=np.float32)
    starts = (np.sort(window_starts(len(corpus_ids), corpus_windows, window, seed))
              if corpus_ids is not None and corpus_windows > 0 else np.zeros(0, np.int64))
    tokens = max([window] + [int(b.ids.shape[1]) for _, _, b in encoded])
    num_examples = sum(len(b) for _, _, b in encoded) + len(starts)

    def batches() -> Iterator[ExampleBatch]:
        done = 0
        rows = _task_rows(model, encoded, tokens, task_names, splits, space, batch_size)
        if len(starts):
            rows = itertools.chain(rows, _corpus_rows(model, corpus_ids, starts, window, tokens,
                                                      splits.index("val"), space, batch_size))
        for batch in rows:
            done += len(batch)
            if progress:
                progress(done, num_examples)
            yield batch

    attributes = base_attributes(
        codes={"task": task_names, "split": splits},
        model=model_identity(info), model_config=to_dict(info.model),
        token_text=[tokenizer.decode([i]) for i in range(tokenizer.get_vocab_size())],
        node_mean=node_mean_info or {"source": "given"},
        record={"corpus_windows": int(len(starts)), "window": int(window), "seed": int(seed),
                "corpus_split": "val", "task_pairs": {f"{t}/{s}": len(p) for t, s, p in tasks}})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling_tmp(out)
    try:
        layout = StoreLayout(num_examples=num_examples, tokens=tokens, nodes=node_coords(space), node_mean=node_mean,
                             attributes=attributes)
        with _threads_beside_writer():
            write_dataset(tmp, batches(), layout, precision=config.precision, codec=config.codec,
                          owned=True)  # each batch is a fresh array from _record_rows
        return install_store(tmp, out, overwrite)
    finally:
        remove_tree(tmp)


def _task_sets(info, tok, config: RecordConfig, note) -> list:
    """(task name, split, pairs) of every task ``config.tasks`` selects that the tokenizer can express."""
    from ..tasks import check_tokens, load_pairs, resolve_tasks, task_context_for_run

    if (config.tasks or "all").strip().lower() == "none" or config.pairs == 0:
        return []
    task_sets = []
    context = task_context_for_run(info)
    for task in resolve_tasks(config.tasks, context):
        check = check_tokens(task, tok)
        if not check.usable:  # the same rule as 'circuitlab prune': such a task is never pruned
            if note:
                note(f"skip {task.qualname}: {check.problem}")
            continue
        for split in config.splits:
            kept = check_tokens(load_pairs(task, split, config.pairs, context), tok).pairs
            if kept:
                task_sets.append((task.qualname, split, list(kept)))
    return task_sets


def record_run(out: str | os.PathLike, run, config: RecordConfig | None = None, *, overwrite: bool = False,
               progress=None, note=None) -> Path:
    """``circuitlab record``: load the run, pick task pairs and corpus windows, and write the store.

    Tasks the tokenizer cannot express are skipped (``note`` gets a message), with the same token check
    as ``circuitlab prune``; ``config.tasks="none"`` records corpus windows only.
    """
    from ..data.corpus import load_corpus
    from ..data.tokenizer import encode_split
    from ..train.runs import RunInfo, load_model, read_run

    config = config or RecordConfig()
    info = run if isinstance(run, RunInfo) else read_run(run)  # cheap checks first: no torch yet
    out = Path(out)
    _check_can_record(out, info, overwrite)
    model, tok, info = load_model(info.path, need_tokenizer=True)
    task_sets = _task_sets(info, tok, config, note)
    corpus_ids = None
    if config.corpus_windows > 0:
        corpus_ids = encode_split(load_corpus(info.train.corpus), tok, "val")
    return record_store(out, model, tok, info, config, inputs=RecordInputs(tasks=task_sets, corpus_ids=corpus_ids),
                        overwrite=overwrite, progress=progress)


def ensure_store(path: str | os.PathLike, run, *, note=None, config: RecordConfig | None = None) -> Path:
    """The store at ``path`` for run ``run`` (RunInfo or folder): checked if it exists (same model, else an
    error), else recorded with ``record_run`` (default: ``RecordConfig()``). For ``--store`` on
    ``circuitlab prune``/``run``: call it once before pruning, so a wrong store fails before any work."""
    from ..train.runs import RunInfo, read_run

    info = run if isinstance(run, RunInfo) else read_run(run)
    path = Path(path)
    if path.exists():
        check_model(path, info)
        return path
    if note:
        note(f"recording activation store {str(path)!r} (circuitlab record --model {info.path} --out {path})")
    try:
        return record_run(path, info, config, note=note)
    except CircuitlabError:
        if path.exists():  # another process recorded it meanwhile: fine if it is the same model
            check_model(path, info)
            return path
        raise
