"""The name registry: every name a plugin registers, per kind, with the distribution it came from.

The plugin manager (``loading.PluginManager``) finds and loads plugins; this module asks each loaded
plugin's hooks for its names. Each plugin's hooks are called on their own with a ``register``
callback, so every registered name knows the plugin, distribution and version it came from.
Built-ins are collected first; they are the ``circuitlab`` distribution.

Every name can be written two ways: short (``margin``) or qualified by its distribution
(``circuitlab-example:margin``; the distribution name compared after PEP 503 normalisation).
Problems with one registration never take the registry down:

- a hook that raises skips that whole plugin (one warning line naming it);
- a name that is not a lowercase slug, or a factory that is not callable, skips that entry;
- a name a built-in already has: the short name means the built-in, the plugin's entry is reachable
  qualified (one warning line says so);
- a name two distributions register: using the short name is an error listing both qualified names,
  and each is usable qualified (no warning while the short name is not used);
- a name one plugin registers twice is unusable, short and qualified, until the plugin is fixed (one
  warning line).

``circuitlab plugins`` shows the failures, the skipped entries and the conflicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ..errors import CircuitlabError, UnknownNameError
from ..interrupts import STOPS
from ..log import logger
from .loading import (
    ALLOW_ENV,
    BUILTIN_PLUGINS,
    RAISE_ENV,
    PluginFailure,
    PluginManager,
    describe_exception,
    normalise,
    raise_plugin_errors,
    warn_if_slow,
)

#: The plugin kinds: CLI-facing kind name -> hook name.
KINDS = {
    "sparsity": "register_sparsity_schedules",
    "pruner": "register_pruners",
    "objective": "register_pruning_objectives",
    "suite": "register_task_suites",
}

#: Hooks still read under an older name: old hook name -> the kind it registers.
DEPRECATED_HOOKS = {"register_mask_parameterizations": "pruner"}

KIND_LABELS = {
    "sparsity": "sparsity schedule",
    "pruner": "pruner",
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
    def qualifier(self) -> str:
        """What qualifies the name: the normalised distribution name (the plugin's name for plugins
        registered in-process, which have no distribution)."""
        return normalise(self.dist) if self.dist not in ("?", "(in-process)") else self.plugin

    @property
    def qualname(self) -> str:
        """``DIST:NAME``: the name that stays unique whatever else is installed."""
        return f"{self.qualifier}:{self.name}"

    @property
    def label(self) -> str:
        """How errors name it: ``plugin 'circuitlab-rigl' (sparsity 'rigl')``."""
        return f"plugin {self.plugin!r} ({self.kind} {self.name!r})"

    def provenance(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "qualname": self.qualname, "plugin": self.plugin,
                "dist": self.dist, "version": self.version}


@attrs.frozen(kw_only=True)
class Skipped:
    """One registration that was not added, and why (shown by ``circuitlab plugins``)."""

    kind: str
    name: str
    plugin: str
    dist: str
    reason: str


def split_qualified(name: str) -> tuple[str | None, str]:
    """``"dist:name"`` -> (normalised dist, name); ``"name"`` -> (None, name)."""
    qualifier, sep, short = name.rpartition(":")
    return (normalise(qualifier.strip()), short.strip()) if sep else (None, name.strip())


class Registry:
    """All registered names, per kind, with the plugin each came from.

    ``entries[kind]`` maps each usable short name to its entry; ``qualified[kind]`` maps every
    ``DIST:NAME`` to its entry. ``conflicts`` holds the short names two distributions registered
    (refused short, usable qualified), ``shadowed`` the plugin entries whose short name is a
    built-in's, and ``repeated`` the qualified names one plugin registered more than once (unusable).
    """

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.qualified: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.skipped: list[Skipped] = []
        self.conflicts: dict[tuple[str, str], list[Entry]] = {}
        self.shadowed: list[Entry] = []
        self.repeated: dict[tuple[str, str], list[Entry]] = {}
        names = [pm.get_name(p) for p in pm.get_plugins()]
        # Built-ins first (they keep their short names), then third-party plugins in load order.
        order = [n for n in BUILTIN_PLUGINS if n in names] + [n for n in names if n not in BUILTIN_PLUGINS]
        for plugin_name in order:
            staged = self._stage(plugin_name)
            if staged is not None:
                for entry in staged:
                    self._add(entry)
        for (kind, name), entries in self.conflicts.items():  # two distributions: both usable qualified, no warning
            if len({e.qualname for e in entries}) < len(entries):
                logger.warning(f"circuitlab: {self.conflict_message(kind, name)}")

    def _hooks(self) -> Iterator[tuple[str, str]]:
        """(kind, hook name) of every hook a name can be registered through, the old names included."""
        yield from KINDS.items()
        for hook_name, kind in DEPRECATED_HOOKS.items():
            yield kind, hook_name

    def _stage(self, plugin_name: str) -> list[Entry] | None:
        """Every entry one plugin registers, or None when one of its hooks raised (plugin skipped)."""
        dist, version = self.pm.origins.get(plugin_name, ("?", "?"))
        plugin = self.pm.get_plugin(plugin_name)
        staged: list[Entry] = []
        for kind, hook_name in self._hooks():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    with warn_if_slow(plugin_name, dist, version, f"calling {hook_name}() of"):
                        impl.function(register=self._register_into(staged, kind, plugin_name, dist, version))
                except STOPS:
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
        kind, name, qualname = entry.kind, entry.name, entry.qualname
        label = f"{KIND_LABELS[kind]} {name!r}"
        if (kind, qualname) in self.repeated:
            self.repeated[(kind, qualname)].append(entry)
        elif qualname in self.qualified[kind]:  # one distribution registers the name twice: unusable
            self.repeated[(kind, qualname)] = [self.qualified[kind].pop(qualname), entry]
        else:
            self.qualified[kind][qualname] = entry
        if (kind, name) in self.conflicts:
            self.conflicts[(kind, name)].append(entry)
            return
        existing = self.entries[kind].get(name)
        if existing is None:
            self.entries[kind][name] = entry
        elif existing.builtin:
            self.shadowed.append(entry)
            logger.warning(f"circuitlab: plugin {entry.plugin!r} ({entry.dist} {entry.version}): circuitlab has a "
                           f"built-in {label}, which keeps the short name; the plugin's is {qualname!r}")
        else:
            del self.entries[kind][name]
            self.conflicts[(kind, name)] = [existing, entry]

    def conflict_message(self, kind: str, name: str) -> str:
        """One line: who registered the short name, and the qualified names to write instead."""
        entries = self.conflicts[(kind, name)]
        label = f"{KIND_LABELS[kind]} {name!r}"
        if len({e.qualname for e in entries}) == 1:
            e = entries[0]
            return (f"{label} is registered {len(entries)} times by the same plugin {e.plugin!r} ({e.dist} "
                    f"{e.version}); the name is unusable until the plugin registers it once")
        who = " and by ".join(sorted({f"plugin {e.plugin!r} ({e.dist} {e.version})" for e in entries}))
        usable = sorted({e.qualname for e in entries} & set(self.qualified[kind]))
        write = f"write {' or '.join(repr(q) for q in usable)}" if usable else "none of them is usable"
        return f"{label} is registered by {who}; the short name is ambiguous: {write}"

    def repeated_message(self, kind: str, qualname: str) -> str:
        e = self.repeated[(kind, qualname)][0]
        return (f"{KIND_LABELS[kind]} {qualname!r} is registered {len(self.repeated[(kind, qualname)])} times by "
                f"{e.dist} {e.version}; the name is unusable until the plugin registers it once")

    def all_entries(self, kind: str) -> list[Entry]:
        """Every usable entry of ``kind`` (by its short or its qualified name), in registration order."""
        return list(self.qualified[kind].values())

    def address(self, entry: Entry) -> str:
        """The shortest name that means ``entry``: its short name, or ``DIST:NAME`` when the short name
        is refused (two distributions) or means a built-in."""
        return entry.name if self.entries[entry.kind].get(entry.name) is entry else entry.qualname

    def names(self, kind: str) -> list[str]:
        """The name of every usable entry of ``kind`` (``address``), sorted."""
        return sorted(self.address(e) for e in self.all_entries(kind))

    def get(self, kind: str, name: str) -> Entry:
        """The entry ``name`` (``NAME`` or ``DIST:NAME``) means; one-line errors for ambiguous,
        unusable and unknown names (with did-you-mean)."""
        qualifier, short = split_qualified(name)
        if qualifier is None:
            if short in self.entries[kind]:
                return self.entries[kind][short]
            if (kind, short) in self.conflicts:
                raise CircuitlabError(self.conflict_message(kind, short))
        else:
            qualname = f"{qualifier}:{short}"
            if qualname in self.qualified[kind]:
                return self.qualified[kind][qualname]
            if (kind, qualname) in self.repeated:
                raise CircuitlabError(self.repeated_message(kind, qualname))
        valid = set(self.names(kind)) | (set(self.qualified[kind]) if qualifier is not None else set())
        raise UnknownNameError(KIND_LABELS[kind], name, valid, self._unknown_hint(kind, short))

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
    """The entry of ``kind`` that ``name`` (``NAME`` or ``DIST:NAME``) means in the process-wide registry."""
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


__all__ = ["BUILTIN_PLUGINS", "DEPRECATED_HOOKS", "KINDS", "KIND_LABELS", "RAISE_ENV", "Entry", "PluginFailure",
           "PluginManager", "Registry", "Skipped", "cache_identity", "get", "get_registry", "make_registry",
           "plugin_provenance", "reset", "split_qualified"]
