"""The plugin system: four hooks (``hookspecs``), a protocol per kind (``protocols``), and the
resilient loader and name registry (``manager``). Built-in plugins live in ``circuitlab.builtins``
and are registered through the same hooks as third-party ones.

The registry API is re-exported here: ``circuitlab.plugins.get(kind, name)`` and friends.
"""

from .manager import (
    BUILTIN_PLUGINS,
    KIND_LABELS,
    KINDS,
    Entry,
    PluginFailure,
    PluginManager,
    Registry,
    get,
    get_registry,
    make_registry,
    plugin_provenance,
    reset,
)

__all__ = ["BUILTIN_PLUGINS", "KINDS", "KIND_LABELS", "Entry", "PluginFailure", "PluginManager", "Registry",
           "get", "get_registry", "make_registry", "plugin_provenance", "reset"]
