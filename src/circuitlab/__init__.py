"""circuitlab: weight-sparse GPT-2 training, circuit pruning and comparison.

Nothing here imports torch, so ``circuitlab --help`` stays fast.
"""

import pluggy

__version__ = "0.1.0"

#: The marker plugins decorate their hook implementations with.
hookimpl = pluggy.HookimplMarker("circuitlab")

__all__ = ["__version__", "hookimpl"]
