"""The model layer: the sparse GPT-2 (``gpt.py``, nanoGPT-style) and its node space (``nodes.py``).

``GPT`` and ``abs_topk`` are loaded on first use, so that ``circuitlab.model.nodes`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

from .nodes import Location, NodeSpace, record_activations

__all__ = ["GPT", "Location", "NodeSpace", "abs_topk", "record_activations"]


def __getattr__(name: str) -> Any:
    if name in ("GPT", "abs_topk"):
        from . import gpt

        return getattr(gpt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
