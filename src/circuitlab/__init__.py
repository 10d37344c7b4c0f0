"""circuitlab: weight-sparse GPT-2 training, circuit pruning and comparison.

Nothing here imports torch, so ``circuitlab --help`` stays fast. The Python API (``circuitlab.api``,
docs/api.md) is loaded on first use: ``circuitlab.load``, ``circuitlab.tasks``, ``circuitlab.prune``,
``circuitlab.record``, ``circuitlab.compare``, ``circuitlab.seeds``, ``circuitlab.interchange``,
``circuitlab.backups``, ``circuitlab.track`` and ``circuitlab.Circuit``.
"""

import sys
import types

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

#: Names of the Python API that are not modules of their own (``tasks``, ``prune`` and ``compare`` are:
#: they are ``_ApiModule``s, callable).
_API_NAMES = ("load", "record", "seeds", "interchange", "backups", "track", "Circuit", "Comparison", "LoadedModel",
              "SeedCircuits", "TaskList", "TaskSkipped")
_CALLABLE_MODULES = ("tasks", "prune", "compare")


def __getattr__(name: str):
    """The API on first use (PEP 562), so that ``import circuitlab`` stays light."""
    if name in _API_NAMES or name in _CALLABLE_MODULES:
        from . import api  # the only import of the facade; pyproject's import contracts ignore this edge

        if name in _API_NAMES:
            return getattr(api, name)
        if f"{__name__}.{name}" in sys.modules:  # absent only while the API itself imports it
            return sys.modules[f"{__name__}.{name}"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ApiModule(types.ModuleType):
    """A module that is also the API function of its name: ``circuitlab.tasks(...)`` calls
    ``circuitlab.api.tasks(...)``, while ``circuitlab.tasks.resolve_tasks`` is still the module's."""

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _callable_module(name: str) -> None:
    """Make the module ``name`` (one of ``_CALLABLE_MODULES``) callable as its API function."""
    sys.modules[name].__class__ = _ApiModule


__all__ = ["OLDEST_PLUGIN_API_VERSION", "PLUGIN_API_VERSION", "__version__", "hookimpl", "load", "record", "tasks",
           "prune", "compare", "seeds", "interchange", "backups", "track", "Circuit"]
