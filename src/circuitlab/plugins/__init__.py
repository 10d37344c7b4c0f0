"""The plugin system: four hooks (``hookspecs``), a protocol per kind (``protocols``), the plugin
manager that loads plugins and survives broken ones (``loading``), the name registry with short and
``DIST:NAME`` names (``registry``) and the checked run-time calls (``calls``).
Built-in plugins live in ``circuitlab.builtins`` and are registered through the same hooks as
third-party ones.

The registry API is re-exported here: ``circuitlab.plugins.get(kind, name)`` and friends, and so are
the protocols plugin authors implement. ``circuitlab.testing`` checks a plugin against them.
"""

from .loading import BUILTIN_PLUGINS, PluginFailure, PluginManager
from .protocols import (
    GateGradients,
    MaskFactory,
    NodeMask,
    NodeScorer,
    ObjectiveFactory,
    PrunerFactory,
    PrunerMask,
    PrunerScorer,
    PruningObjective,
    ScheduleFactory,
    SparsitySchedule,
    SuiteFactory,
    TaskSuite,
)
from .registry import (
    KIND_LABELS,
    KINDS,
    Entry,
    Registry,
    Skipped,
    cache_identity,
    get,
    get_registry,
    make_registry,
    plugin_provenance,
    reset,
    split_qualified,
)

__all__ = ["BUILTIN_PLUGINS", "KINDS", "KIND_LABELS", "Entry", "GateGradients", "MaskFactory", "NodeMask",
           "NodeScorer", "ObjectiveFactory", "PluginFailure", "PluginManager", "PrunerFactory", "PrunerMask",
           "PrunerScorer", "PruningObjective", "Registry",
           "ScheduleFactory", "Skipped", "SparsitySchedule", "SuiteFactory", "TaskSuite", "cache_identity", "get",
           "get_registry", "make_registry", "plugin_provenance", "reset", "split_qualified"]
