"""Masked forward passes over one encoded task batch, returning last-position logits only.

Every node location's activation ``x`` becomes ``ablated + gate * (x - ablated)``. The loss reads each
prompt's last position only, so the pass is ``GPT.last_final``: the last block computes its query,
attention output and MLP at that position only, and only that position is unembedded. Passes over
whole pairs run both prompts in one row, their shared prefix once (``tasks.packing``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.nodes import NodeSpace
from ..tasks.loss import logit_diff
from ..tasks.packing import PackedPairs, pair_rows
from .ablation import ablation_hook

if TYPE_CHECKING:
    import torch

    from ..tasks.types import TaskBatch


class Evaluator:
    """Masked forward passes over one TaskBatch that return the last-position logits only."""

    def __init__(self, model, batch: TaskBatch, values: torch.Tensor, *, freeze_norm: bool = False,
                 chunk: int = 128, ablated: torch.Tensor | None = None, pack: bool = True):
        """``ablated`` (num_nodes,) bool: nodes ablated whatever the gate says (``PruneConfig.exclude``);
        the reference logits stay the unpruned model's. ``pack``: run whole pairs as packed rows."""
        import torch

        self.model, self.batch, self.values, self.chunk = model, batch, values, chunk
        self.space = NodeSpace.from_config(model.config)
        self.num_nodes = self.space.num_nodes
        n = len(batch)
        self.by_length = torch.argsort(batch.last, stable=True)
        self.unsort = torch.argsort(self.by_length)
        self.packed = PackedPairs.of(batch) if pack and n and n % 2 == 0 else None
        if self.packed is not None:  # whole-set passes: pairs shortest-first, then back to row order
            # a packed row may pass n_ctx; its positions stay below the prompts' width, checked here once
            assert batch.ids.shape[1] <= model.config.n_ctx, f"prompts of {batch.ids.shape[1]} tokens exceed n_ctx"
            self.pair_order = torch.argsort(self.packed.length, stable=True)
            order_rows = torch.stack([2 * self.pair_order, 2 * self.pair_order + 1], dim=1).flatten()
            self.pair_unsort = torch.argsort(order_rows)
        self.sign = 1.0 - 2.0 * (torch.arange(n, device=batch.ids.device) % 2).float()  # +1 prompt A, -1 prompt B
        self.norm_scale = None
        ones = torch.ones(self.num_nodes, device=values.device)
        with torch.no_grad():
            if freeze_norm:
                scales = []
                self.reference = self._run(ones, None, record_scale=scales)
                self.norm_scale = torch.zeros(n, 1, 1, device=values.device)  # each prompt's last position
                for rows, s in scales:
                    self.norm_scale[rows] = s
            else:
                self.reference = self._run(ones, None)  # (N, vocab)
        self.allowed = None if ablated is None or not bool(ablated.any()) else (~ablated.bool()).to(values.device)

    def _chunk(self, gate, r, record_scale, dtype=None):
        """Last-position logits (len(r), vocab) of the rows ``r``, padded to their own longest prompt."""
        last = self.batch.last[r]
        return self._pass(gate, r, self.batch.ids[r, : int(last.max()) + 1], last[:, None], record_scale, dtype)

    def _packed_chunk(self, gate, pairs, record_scale, dtype=None):
        """Last-position logits (2 len(pairs), vocab) of these pairs' rows (A, B, A, B, ...), one packed row per pair."""
        import torch

        ids, positions, visible, read = self.packed.rows(pairs)
        r = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()  # the prompt rows, in output order
        return self._pass(gate, r, ids, read, record_scale, dtype, positions=positions, visible=visible)

    def _pass(self, gate, r, ids, read, record_scale, dtype, **packing):
        """Logits (len(r), vocab) of the prompt rows ``r``, read at ``read`` (n, R) of ``ids`` (n, T): R = 1
        position per row, or 2 for packed pairs (``packing``: their positions and attention mask).
        ``dtype`` "bfloat16": the blocks' matrix products under autocast (the unembedding stays float32)."""
        import contextlib

        import torch

        n, R = read.shape
        scale = None if self.norm_scale is None else self.norm_scale[r].view(n, R, 1)
        if getattr(self, "allowed", None) is not None:
            gate = gate * self.allowed
        inner = ablation_hook(self.space, gate, self.values, scale)
        if record_scale is None:
            hook = inner
        else:
            def hook(name, x):
                if name == "final.norm":
                    record_scale.append((r, x.detach().reshape(-1, 1, 1)))  # (len(r), 1, 1): each prompt's last position
                return inner(name, x)

        low = dtype is not None and dtype != "float32"
        with torch.autocast(ids.device.type, dtype=getattr(torch, dtype)) if low else contextlib.nullcontext():
            logits = self.model.last_logits(ids, read, hook, **packing)  # (n, R, vocab)
        return logits.reshape(n * R, -1)  # (n * R, vocab)

    def _run(self, gate, rows, record_scale=None, dtype=None):
        import torch

        pairs = None
        if self.packed is not None:
            pairs = self.pair_order if rows is None else pair_rows(rows)
        if pairs is not None:
            step = max(1, self.chunk // 2)
            out = torch.cat([self._packed_chunk(gate, pairs[i: i + step], record_scale, dtype)
                             for i in range(0, len(pairs), step)])
            return out[self.pair_unsort] if rows is None else out
        # Whole-set passes go shortest-first, so each chunk is padded only to its own longest prompt.
        all_rows = self.by_length if rows is None else rows
        out = torch.cat([self._chunk(gate, all_rows[i: i + self.chunk], record_scale, dtype)
                         for i in range(0, len(all_rows), self.chunk)])
        return out[self.unsort] if rows is None else out

    def last_logits(self, gate, rows=None, dtype=None):
        """(n, vocab) last-position logits with node gates ``gate`` (num_nodes,), for ``rows`` (default all).
        ``dtype`` (a ``PruneConfig.mask_dtype``) other than float32 runs the blocks' matrix products in it."""
        return self._run(gate, rows, dtype=dtype)

    def diffs(self, gate, rows=None):
        """Right-minus-wrong logit difference per prompt, (n,)."""
        b = self.batch
        z = self.last_logits(gate, rows)
        t = b.target if rows is None else b.target[rows]
        c = b.contrast if rows is None else b.contrast[rows]
        return logit_diff(z, t, c)

    def full_diffs(self):
        """The unpruned model's logit differences, (n,), from the reference logits (no forward pass).

        The same numbers as ``diffs(ones)``: a gate of exactly 1 returns every activation unchanged. With
        excluded nodes (``ablated``) every gate is not 1, so the pass is run."""
        if getattr(self, "allowed", None) is not None:
            import torch

            return self.diffs(torch.ones_like(self.values))
        return logit_diff(self.reference, self.batch.target, self.batch.contrast)

    def hard_gate(self, kept):
        return kept.to(self.values.dtype)
