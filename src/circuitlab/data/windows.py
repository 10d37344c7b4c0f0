"""Fixed random windows of a token stream: the one definition used by node means and activation stores."""

from __future__ import annotations

import numpy as np

from ..errors import CircuitlabError


def window_starts(n_tokens: int, n_windows: int, window: int, seed: int) -> np.ndarray:
    """Start offsets of ``n_windows`` windows of ``window`` tokens in a stream of ``n_tokens``, drawn
    uniformly (with replacement) from a generator seeded by ``seed``; int64, in draw order."""
    span = n_tokens - window + 1
    if window < 2 or span < 1:
        raise CircuitlabError(f"the validation split has {n_tokens} tokens, fewer than one {window}-token window; "
                              "use a larger corpus or a smaller --window")
    return np.random.default_rng(seed).integers(0, span, size=n_windows).astype(np.int64)


def windows(ids, n_windows: int, window: int, seed: int):
    """The windows themselves, as an (n_windows, window) int64 torch tensor (``window`` capped at the stream)."""
    import torch

    ids = np.asarray(ids)
    window = min(window, len(ids))
    starts = window_starts(len(ids), n_windows, window, seed)
    return torch.from_numpy(np.stack([ids[s: s + window].astype(np.int64) for s in starts]))
