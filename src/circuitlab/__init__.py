"""circuitlab: weight-sparse GPT-2 training, circuit pruning and comparison.

Nothing here imports torch, so ``circuitlab --help`` stays fast.
"""

import pluggy

__version__ = "0.1.0"

#: The version of the plugin API (hooks, factory calls and the protocols in ``circuitlab.plugins``).
#: A plugin may declare the version it was written for as ``CIRCUITLAB_PLUGIN_API = N`` in its module;
#: circuitlab loads plugins declaring ``OLDEST_PLUGIN_API_VERSION`` up to this version and skips others
#: with one line saying why (docs/plugins.md, "Compatibility"). Version 2 passes ``device`` to pruner
#: factories that accept it and adds score-only pruners (``PrunerScorer``); version 3 names the pruner
#: hook ``register_pruners`` (the old name still works) and adds ``DIST:NAME`` names.
PLUGIN_API_VERSION = 3
#: The oldest plugin API version still loaded (plugins that declare nothing count as version 1).
OLDEST_PLUGIN_API_VERSION = 1

#: The marker plugins decorate their hook implementations with.
hookimpl = pluggy.HookimplMarker("circuitlab")

__all__ = ["OLDEST_PLUGIN_API_VERSION", "PLUGIN_API_VERSION", "__version__", "hookimpl"]
