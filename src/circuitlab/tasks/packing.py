"""Both prompts of a pair in one row, their shared prefix computed once.

The two prompts of a task pair usually begin alike (``if x == 1:`` / ``if x == 2:``), and a node's gate is
the same at every position, so the activations of the shared prefix are the same in both prompts. A
packed row holds prompt A, then only the tokens of prompt B after the prefix they share:

    A:      t0 t1 t2 t3 a4            (positions 0..4)
    B:      t0 t1 t2 b3 b4 b5         (shares the prefix t0 t1 t2)
    packed: t0 t1 t2 t3 a4 b3 b4 b5   (positions 0 1 2 3 4 3 4 5)

B's tokens attend to the shared prefix and to B's own earlier tokens, never to A's own tokens, so each
prompt's last position sees exactly what it sees alone: the same numbers up to float rounding (other
matrix shapes). Over the python suite the prefix is about a third of a pair's tokens (docs/pruning.md,
"Performance").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

    from .types import TaskBatch


@attrs.frozen
class PackedPairs:
    """Every pair of a TaskBatch packed into one row (rows 2i and 2i + 1 are pair i)."""

    ids: Any  # (P, L) long: prompt A, then B after the shared prefix; right-padded with 0
    positions: Any  # (P, L) long: each token's position in its own prompt (padding: 0); below the batch's width
    a_length: Any  # (P,) long: prompt A's tokens
    prefix: Any  # (P,) long: tokens A and B share at their start (at most each prompt's length - 1)
    length: Any  # (P,) long: the packed row's tokens
    read: Any  # (P, 2) long: where A's and B's last tokens sit in the packed row

    @classmethod
    def of(cls, batch: TaskBatch) -> PackedPairs:
        import torch

        a, b = batch.ids[0::2], batch.ids[1::2]  # (P, T) each
        la, lb = batch.last[0::2] + 1, batch.last[1::2] + 1  # (P,) each
        P, T = a.shape
        cols = torch.arange(T, device=a.device)
        differ = (a != b) | (cols[None, :] >= torch.minimum(la, lb)[:, None] - 1)  # each keeps >= 1 own token
        prefix = differ.long().argmax(dim=1)  # (P,): the first column that is not shared
        length = la + lb - prefix
        L = int(length.max())
        j = torch.arange(L, device=a.device)[None, :]  # (1, L)
        in_a = j < la[:, None]  # (P, L)
        b_pos = prefix[:, None] + j - la[:, None]  # B's position of packed column j
        valid = j < length[:, None]
        positions = torch.where(in_a, j, b_pos).where(valid, 0)
        ids = torch.where(in_a, a.gather(1, j.clamp(max=T - 1).expand(P, -1)),
                          b.gather(1, b_pos.clamp(0, T - 1))).where(valid, 0)
        read = torch.stack([la - 1, length - 1], dim=1)
        return cls(ids=ids, positions=positions, a_length=la, prefix=prefix, length=length, read=read)

    def rows(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, positions, visible, read) of these pairs, cut to their longest packed row.

        ``visible`` (n, L, L) bool: causal, except that B's tokens (and the padding after them) do not
        see A's own tokens (those after the shared prefix)."""
        import torch

        L = int(self.length[pairs].max())
        q = torch.arange(L, device=self.ids.device)[:, None]  # (L, 1) query
        k = q.T  # (1, L) key
        la, p = self.a_length[pairs][:, None, None], self.prefix[pairs][:, None, None]  # (n, 1, 1)
        visible = (k <= q) & ~((q >= la) & (k >= p) & (k < la))  # (n, L, L)
        return self.ids[pairs, :L], self.positions[pairs, :L], visible, self.read[pairs]


def pair_rows(rows: torch.Tensor) -> torch.Tensor | None:
    """The pair indices of prompt rows listed as whole pairs in order (2i, 2i + 1, 2j, 2j + 1, ...), else None."""
    if len(rows) == 0 or len(rows) % 2:
        return None
    a, b = rows[0::2], rows[1::2]
    if bool(((a % 2 == 0) & (b == a + 1)).all()):
        return a // 2
    return None
