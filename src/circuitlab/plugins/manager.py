"""The name-keyed registries built on top of the plugin manager (``loading``).

Each plugin's hooks are called on their own with a ``register`` callback, so every registered name
knows the plugin, distribution and version it came from. Built-ins are collected first. Problems
with one registration never take the registry down:

- a hook that raises skips that whole plugin (one warning line naming it);
- a name that is not a lowercase slug, or a factory that is not callable, skips that entry;
- a name a built-in already has: the built-in wins, the plugin's entry is skipped with a warning;
- a name two third-party plugins register (or one plugin twice) becomes unusable: using it is an
  error naming both registrations; every other name keeps working.

``circuitlab plugins`` shows the failures, the skipped entries and the conflicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import attrs

from ..errors import CircuitlabError, UnknownNameError
from ..log import logger
from .loading import (
    ALLOW_ENV,
    BUILTIN_PLUGINS,
    RAISE_ENV,
    PluginFailure,
    PluginManager,
    describe_exception,
    raise_plugin_errors,
    warn_if_slow,
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

#: What a registered name must look like: it is typed on the command line and used in file names.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")


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

    @property
    def builtin(self) -> bool:
        return self.dist == "circuitlab" and self.plugin in BUILTIN_PLUGINS

    @property
    def label(self) -> str:
        """How errors name it: ``plugin 'circuitlab-rigl' (sparsity 'rigl')``."""
        return f"plugin {self.plugin!r} ({self.kind} {self.name!r})"

    def provenance(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "dist": self.dist,
                "version": self.version}


@attrs.frozen(kw_only=True)
class Skipped:
    """One registration that was not added, and why (shown by ``circuitlab plugins``)."""

    kind: str
    name: str
    plugin: str
    dist: str
    reason: str


class Registry:
    """All registered names, per kind, with the plugin each came from."""

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.skipped: list[Skipped] = []
        self.conflicts: dict[tuple[str, str], list[Entry]] = {}
        names = [pm.get_name(p) for p in pm.get_plugins()]
        # Built-ins first (they win any conflict), then third-party plugins in load order.
        order = [n for n in BUILTIN_PLUGINS if n in names] + [n for n in names if n not in BUILTIN_PLUGINS]
        for plugin_name in order:
            staged = self._stage(plugin_name)
            if staged is not None:
                for entry in staged:
                    self._add(entry)

    def _stage(self, plugin_name: str) -> list[Entry] | None:
        """Every entry one plugin registers, or None when one of its hooks raised (plugin skipped)."""
        dist, version = self.pm.origins.get(plugin_name, ("?", "?"))
        plugin = self.pm.get_plugin(plugin_name)
        staged: list[Entry] = []
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    with warn_if_slow(plugin_name, dist, version, f"calling {hook_name}() of"):
                        impl.function(register=self._register_into(staged, kind, plugin_name, dist, version))
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    if raise_plugin_errors() or dist == "circuitlab":
                        raise
                    self.pm.fail(plugin_name, dist, version, f"{hook_name}() raised {describe_exception(exc)}")
                    return None
        return staged

    def _register_into(self, staged: list[Entry], kind: str, plugin: str, dist: str, version: str) -> Callable:
        def register(name: str, factory: Any, *, summary: str | None = None) -> None:
            problem = None
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                problem = (f"invalid name {name!r}: names are lowercase slugs (a letter, then letters, digits, _ or -) "
                           "typed on the command line")
            elif not callable(factory):
                problem = f"its factory {factory!r} is not callable"
            if problem:
                self._skip(Skipped(kind=kind, name=str(name), plugin=plugin, dist=dist,
                                   reason=f"{KIND_LABELS[kind]} skipped: {problem}"))
                return
            if summary is None:
                doc = (getattr(factory, "__doc__", None) or "").strip()
                summary = doc.splitlines()[0] if doc else ""
            staged.append(Entry(kind=kind, name=name, factory=factory, summary=str(summary), plugin=plugin,
                                dist=dist, version=version))

        return register

    def _skip(self, skipped: Skipped) -> None:
        self.skipped.append(skipped)
        logger.warning(f"circuitlab: plugin {skipped.plugin!r} ({skipped.dist}): {skipped.reason}")

    def _add(self, entry: Entry) -> None:
        kind, name = entry.kind, entry.name
        label = f"{KIND_LABELS[kind]} {name!r}"
        if (kind, name) in self.conflicts:
            self.conflicts[(kind, name)].append(entry)
            return
        existing = self.entries[kind].get(name)
        if existing is None:
            self.entries[kind][name] = entry
            return
        if existing.builtin:
            self._skip(Skipped(kind=kind, name=name, plugin=entry.plugin, dist=entry.dist,
                               reason=f"{label} skipped: circuitlab has a built-in {label}, which wins; "
                                      "rename it in the plugin"))
            return
        del self.entries[kind][name]
        self.conflicts[(kind, name)] = [existing, entry]
        logger.warning(f"circuitlab: {self.conflict_message(kind, name)}")

    def conflict_message(self, kind: str, name: str) -> str:
        entries = self.conflicts[(kind, name)]
        label = f"{KIND_LABELS[kind]} {name!r}"
        if len({e.plugin for e in entries}) == 1:
            e = entries[0]
            return (f"{label} is registered {len(entries)} times by the same plugin {e.plugin!r} ({e.dist} "
                    f"{e.version}); the name is unusable until the plugin registers it once")
        who = " and by ".join(f"plugin {e.plugin!r} ({e.dist} {e.version})" for e in entries)
        return (f"{label} is registered by {who}; the name is unusable until you uninstall or disable one of them "
                f"({ALLOW_ENV})")

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            pass
        if (kind, name) in self.conflicts:
            raise CircuitlabError(self.conflict_message(kind, name))
        raise UnknownNameError(KIND_LABELS[kind], name, self.entries[kind], self._unknown_hint(kind, name))

    def _unknown_hint(self, kind: str, name: str) -> str:
        hints = [f"plugin {s.plugin!r} registered it, but: {s.reason}." for s in self.skipped
                 if s.kind == kind and s.name == name]
        if self.pm.failures:
            hints.append(f"(plugins that failed to load: {', '.join(f.plugin for f in self.pm.failures)}; "
                         "see 'circuitlab plugins')")
        if self.pm.allow is not None and not self.pm.allow:
            hints.append(f"{ALLOW_ENV} is set and empty, so no third-party plugin was loaded; unset it to load them.")
        elif self.pm.allow:
            hints.append(f"{ALLOW_ENV}={os.environ.get(ALLOW_ENV, '')} limits which plugins are loaded.")
        return " ".join(hints)


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
    pm.drop_invalid()
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


def cache_identity(kind: str, name: str) -> dict[str, str] | None:
    """What of a plugin belongs in a cache key: its distribution and version; None for built-ins (whose
    code is circuitlab's own, so keys of runs that use only built-ins stay as they were)."""
    entry = get(kind, name)
    if entry.builtin:
        return None
    return {"plugin": entry.plugin, "dist": entry.dist, "version": entry.version}


__all__ = ["BUILTIN_PLUGINS", "KINDS", "KIND_LABELS", "RAISE_ENV", "Entry", "PluginFailure", "PluginManager",
           "Registry", "Skipped", "cache_identity", "get", "get_registry", "make_registry", "plugin_provenance",
           "reset"]
