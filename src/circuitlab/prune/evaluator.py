"""Masked forward passes over one encoded task batch, returning last-position logits only.

Every node location's activation ``x`` becomes ``ablated + gate * (x - ablated)``. The loss reads each
prompt's last position only, so the pass is ``GPT.last_final``: the last block computes its query,
attention output and MLP at that position only, and only that position is unembedded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.nodes import NodeSpace
from ..tasks.loss import logit_diff
from .ablation import ablation_hook

if TYPE_CHECKING:
    import torch

    from ..tasks.types import TaskBatch


class Evaluator:
    """Masked forward passes over one TaskBatch that return the last-position logits only."""

    def __init__(self, model, batch: TaskBatch, values: torch.Tensor, *, freeze_norm: bool = False,
                 chunk: int = 128, ablated: torch.Tensor | None = None):
        """``ablated`` (num_nodes,) bool: nodes ablated whatever the gate says (``PruneConfig.exclude``);
        the reference logits stay the unpruned model's."""
        import torch

        self.model, self.batch, self.values, self.chunk = model, batch, values, chunk
        self.space = NodeSpace.from_config(model.config)
        self.num_nodes = self.space.num_nodes
        n = len(batch)
        self.by_length = torch.argsort(batch.last, stable=True)
        self.unsort = torch.argsort(self.by_length)
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

    def _chunk(self, gate, r, record_scale):
        """Last-position logits (len(r), vocab) of the rows ``r``, padded to their own longest prompt."""
        import torch

        b = self.batch
        last = b.last[r]
        ids = b.ids[r, : int(last.max()) + 1]
        scale = None if self.norm_scale is None else self.norm_scale[r]
        if getattr(self, "allowed", None) is not None:
            gate = gate * self.allowed
        inner = ablation_hook(self.space, gate, self.values, scale)
        if record_scale is None:
            hook = inner
        else:
            def hook(name, x):
                if name == "final.norm":
                    record_scale.append((r, x.detach()))  # (n, 1, 1): the last position's scale
                return inner(name, x)

        final = self.model.last_final(ids, last, hook)  # (n, d_model)
        rows = torch.arange(len(r), device=ids.device)
        return self.model.unembed(final, ids[rows, last])  # (n, d_model) -> (n, vocab)

    def _run(self, gate, rows, record_scale=None):
        import torch

        # Whole-set passes go shortest-first, so each chunk is padded only to its own longest prompt.
        all_rows = self.by_length if rows is None else rows
        out = torch.cat([self._chunk(gate, all_rows[i: i + self.chunk], record_scale)
                         for i in range(0, len(all_rows), self.chunk)])
        return out[self.unsort] if rows is None else out

    def last_logits(self, gate, rows=None):
        """(n, vocab) last-position logits with node gates ``gate`` (num_nodes,), for ``rows`` (default all)."""
        return self._run(gate, rows)

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
