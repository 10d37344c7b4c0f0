"""Plugin loading and the name-keyed registries built on top of pluggy.

Built-in plugins are ordinary plugin modules registered through the same hooks as third-party
ones. Third-party plugins are found through the ``circuitlab`` entry-point group; a plugin that
fails to import is skipped with one stderr line (``CIRCUITLAB_RAISE_PLUGIN_ERRORS=1`` re-raises).
``CIRCUITLAB_LOAD_PLUGINS`` is a comma-separated allow-list of entry-point or distribution names
(empty: load none).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from ..errors import CircuitlabError, UnknownNameError
from ..log import logger
from . import hookspecs

#: Built-in plugin modules, registered after entry points, exactly like third-party plugins.
BUILTIN_PLUGINS = (
    "circuitlab.builtins.sparsity",
    "circuitlab.builtins.masks",
    "circuitlab.builtins.objectives",
    "circuitlab.builtins.tasks",
)

#: The plugin kinds: CLI-facing kind name -> hook name.
KINDS = {
    "sparsity": "register_sparsity_schedules",
    "pruner": "register_mask_parameterizations",
    "objective": "register_pruning_objectives",
    "suite": "register_task_suites",
}

KIND_LABELS = {
    "sparsity": "sparsity schedule",
    "pruner": "mask parameterization",
    "objective": "pruning objective",
    "suite": "task suite",
}


@attrs.frozen(kw_only=True)
class Entry:
    """One registered name of one plugin kind."""

    kind: str
    name: str
    factory: Any = attrs.field(eq=False, repr=False)
    summary: str
    plugin: str  # pluggy plugin name: the entry-point name or the built-in module path
    dist: str  # distribution that provides it ("circuitlab" for built-ins)
    version: str

    def provenance(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "dist": self.dist,
                "version": self.version}


@attrs.frozen(kw_only=True)
class PluginFailure:
    plugin: str
    dist: str
    version: str
    error: str


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that survives broken plugins and records where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("circuitlab")
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.origins: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)

    def load_entrypoints(self, group: str = "circuitlab") -> None:
        allow = os.environ.get("CIRCUITLAB_LOAD_PLUGINS")
        allowed = None if allow is None else {s.strip() for s in allow.split(",") if s.strip()}
        raise_errors = os.environ.get("CIRCUITLAB_RAISE_PLUGIN_ERRORS", "") not in ("", "0")
        seen: set[str] = set()
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["Name"] or "?"
            for ep in dist.entry_points:
                if ep.group != group or (dist_name, ep.name) in seen:
                    continue
                seen.add((dist_name, ep.name))
                if allowed is not None and ep.name not in allowed and dist_name not in allowed:
                    continue
                if self.has_plugin(ep.name):
                    other = self.origins.get(ep.name, ("?", "?"))[0]
                    logger.warning(f"circuitlab: skipped plugin {ep.name!r} from {dist_name}: the name is already "
                                   f"used by {other}; rename its entry point")
                    continue
                try:
                    plugin = ep.load()
                    self.register(plugin, name=ep.name)
                except Exception as exc:  # a broken plugin must not take the CLI down
                    if raise_errors:
                        raise
                    self.failures.append(PluginFailure(plugin=ep.name, dist=dist_name,
                                                       version=dist.version, error=f"{type(exc).__name__}: {exc}"))
                    logger.warning(f"circuitlab: skipped plugin {ep.name!r} ({dist_name} {dist.version}): "
                                   f"{type(exc).__name__}: {exc}; set CIRCUITLAB_RAISE_PLUGIN_ERRORS=1 for the "
                                   "traceback")
                    continue
                self.origins[ep.name] = (dist_name, dist.version)

    def load_builtins(self) -> None:
        from .. import __version__

        for modname in BUILTIN_PLUGINS:
            if not self.has_plugin(modname):
                self.register(importlib.import_module(modname), name=modname)
                self.origins[modname] = ("circuitlab", __version__)


class Registry:
    """All registered names, per kind, with the plugin each came from."""

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind, hook_name in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            # Call each plugin's implementation separately so that every entry knows its plugin.
            for impl in reversed(hook.get_hookimpls()):
                self._collect(kind, impl.plugin_name, impl.function)

    def _collect(self, kind: str, plugin_name: str, function: Callable[..., None]) -> None:
        dist, version = self.pm.origins.get(plugin_name, ("?", "?"))

        def register(name: str, factory: Any, *, summary: str | None = None) -> None:
            if not isinstance(name, str) or not name:
                raise CircuitlabError(f"plugin {plugin_name!r} registered a {KIND_LABELS[kind]} with an "
                                      f"invalid name {name!r}; names are non-empty strings")
            if summary is None:
                doc = (getattr(factory, "__doc__", None) or "").strip()
                summary = doc.splitlines()[0] if doc else ""
            existing = self.entries[kind].get(name)
            if existing is not None:
                raise CircuitlabError(
                    f"{KIND_LABELS[kind]} {name!r} is registered twice: by plugin {existing.plugin!r} "
                    f"({existing.dist}) and by plugin {plugin_name!r} ({dist}); uninstall or disable one "
                    f"of them (CIRCUITLAB_LOAD_PLUGINS)")
            self.entries[kind][name] = Entry(kind=kind, name=name, factory=factory, summary=summary,
                                             plugin=plugin_name, dist=dist, version=version)

        function(register=register)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            hint = ""
            failed = [f.plugin for f in self.pm.failures]
            if failed:
                hint = f"(plugins that failed to load: {', '.join(failed)})"
            raise UnknownNameError(KIND_LABELS[kind], name, self.entries[kind], hint) from None


_registry: Registry | None = None


def make_registry(extra_plugins: tuple[Any, ...] = (), entrypoints: bool = True) -> Registry:
    """Build a fresh plugin manager and registry (tests use this with their own plugins)."""
    pm = PluginManager()
    if entrypoints:
        pm.load_entrypoints()
    for i, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", None) or f"extra-{i}"
        pm.register(plugin, name=name)
        pm.origins[name] = ("(in-process)", "")
    pm.load_builtins()
    # A misspelled hook would otherwise never run; drop the offending plugin with a warning, like tox.
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            dist, version = pm.origins.get(name, ("?", "?"))
            if dist == "circuitlab":
                raise
            pm.unregister(exc.plugin)
            pm.failures.append(PluginFailure(plugin=name, dist=dist, version=version, error=str(exc)))
            logger.warning(f"circuitlab: skipped plugin {name!r} ({dist}): {exc}; check the hook names against "
                           "docs/plugins.md")
    return Registry(pm)


def get_registry() -> Registry:
    """The process-wide registry; entry points are loaded once."""
    global _registry
    if _registry is None:
        _registry = make_registry()
    return _registry


def reset() -> None:
    """Forget the cached registry (for tests)."""
    global _registry
    _registry = None


def get(kind: str, name: str) -> Entry:
    return get_registry().get(kind, name)


def plugin_provenance(*entries: Entry) -> list[dict[str, str]]:
    return [e.provenance() for e in entries]
