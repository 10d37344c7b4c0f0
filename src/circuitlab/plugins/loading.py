"""Loading plugins: entry points, the allow-list, the plugin API version, and surviving broken plugins.

Third-party plugins are found through the ``circuitlab`` entry-point group. Whatever a plugin does
while it is imported or registered (an ``ImportError``, ``sys.exit()``, any other ``BaseException``
except ``KeyboardInterrupt``, a misspelled hook, an API version this circuitlab does not provide) is
turned into one warning line naming the plugin, and the plugin is skipped; everything else keeps
working. ``CIRCUITLAB_RAISE_PLUGIN_ERRORS=1`` re-raises instead, for the traceback.

``CIRCUITLAB_LOAD_PLUGINS`` is a comma-separated allow-list of entry-point or distribution names,
compared after PEP 503 normalisation (``Circuitlab_Outsider`` matches ``circuitlab-outsider``); an
empty value loads no third-party plugin, and an entry matching nothing is warned about.

A plugin that takes longer than ``CIRCUITLAB_PLUGIN_SLOW_SECONDS`` (default 5) to import or register
is named on stderr while it is still loading (a timer thread), so a user whose every command seems to
hang knows which distribution to uninstall or leave out of the allow-list.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import math
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pluggy

from ..interrupts import STOPS
from ..log import logger
from . import hookspecs

#: Built-in plugin modules, registered after entry points, exactly like third-party plugins.
BUILTIN_PLUGINS = (
    "circuitlab.builtins.sparsity",
    "circuitlab.builtins.pruners",
    "circuitlab.builtins.objectives",
    "circuitlab.builtins.tasks",
)

#: The module attribute a plugin declares its plugin API version with.
API_ATTRIBUTE = "CIRCUITLAB_PLUGIN_API"
ALLOW_ENV = "CIRCUITLAB_LOAD_PLUGINS"
RAISE_ENV = "CIRCUITLAB_RAISE_PLUGIN_ERRORS"
SLOW_ENV = "CIRCUITLAB_PLUGIN_SLOW_SECONDS"
#: Seconds one plugin may take to import or register before circuitlab says which one it is waiting for.
SLOW_SECONDS = 5.0


def raise_plugin_errors() -> bool:
    """True when ``CIRCUITLAB_RAISE_PLUGIN_ERRORS`` asks for tracebacks instead of one-line errors."""
    return os.environ.get(RAISE_ENV, "") not in ("", "0")


def normalise(name: str) -> str:
    """A distribution or entry-point name as PEP 503 compares it: lowercase, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def one_line(text: str, limit: int = 300) -> str:
    """Any message as one line (exception texts may span several), cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def allow_list() -> set[str] | None:
    """The normalised names in ``CIRCUITLAB_LOAD_PLUGINS``; None when the variable is unset."""
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return {normalise(s.strip()) for s in raw.split(",") if s.strip()}


def slow_seconds() -> float:
    """``CIRCUITLAB_PLUGIN_SLOW_SECONDS`` when it is a positive number, else ``SLOW_SECONDS``."""
    try:
        value = float(os.environ.get(SLOW_ENV, ""))
    except ValueError:
        return SLOW_SECONDS
    return value if math.isfinite(value) and value > 0 else SLOW_SECONDS


@contextlib.contextmanager
def warn_if_slow(plugin: str, dist: str, version: str, doing: str = "loading") -> Iterator[None]:
    """Say on stderr which plugin circuitlab is waiting for when ``doing`` it outlasts ``slow_seconds()``.

    Python cannot interrupt an import, so the line is all circuitlab can do; Ctrl-C still works."""
    seconds = slow_seconds()
    timer = threading.Timer(seconds, lambda: logger.warning(
        f"circuitlab: {doing} plugin {plugin!r} (dist {dist} {version}) is taking long (over {seconds:g} s); if it "
        f"hangs, press Ctrl-C and uninstall {dist}, or leave it out of {ALLOW_ENV}"))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def describe_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported or registered"
    return one_line(f"{type(exc).__name__}: {exc}")


def api_problem(declared: Any) -> str | None:
    """Why a plugin declaring ``CIRCUITLAB_PLUGIN_API = declared`` cannot be loaded, or None."""
    from .. import OLDEST_PLUGIN_API_VERSION, PLUGIN_API_VERSION, __version__

    if declared is None:
        return None
    if isinstance(declared, bool) or not isinstance(declared, int):
        return (f"it declares {API_ATTRIBUTE} = {declared!r}, which is not an integer; declare the plugin API "
                f"version it was written for, e.g. {API_ATTRIBUTE} = {PLUGIN_API_VERSION}")
    if declared > PLUGIN_API_VERSION:
        return (f"it needs plugin API {declared}, and circuitlab {__version__} provides {PLUGIN_API_VERSION}; "
                "upgrade circuitlab or install an older release of the plugin")
    if declared < OLDEST_PLUGIN_API_VERSION:
        return (f"it was written for plugin API {declared}, and circuitlab {__version__} loads "
                f"{OLDEST_PLUGIN_API_VERSION} to {PLUGIN_API_VERSION}; upgrade the plugin")
    return None


@attrs.frozen(kw_only=True)
class PluginFailure:
    """A plugin skipped as a whole: it failed to import or register, or declared an unsupported API."""

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
        self.allow: set[str] | None = None  # the allow-list in force when entry points were loaded

    def fail(self, plugin: str, dist: str, version: str, error: str, traceback_hint: bool = True) -> None:
        """Record a skipped plugin and say so in one warning line."""
        self.failures.append(PluginFailure(plugin=plugin, dist=dist, version=version, error=error))
        hint = f"; set {RAISE_ENV}=1 for the traceback" if traceback_hint else ""
        logger.warning(f"circuitlab: skipped plugin {plugin!r} ({dist} {version}): {error}{hint}")

    def load_entrypoints(self, group: str = "circuitlab") -> None:
        self.allow = allow = allow_list()
        matched: set[str] = set()
        seen: set[tuple[str, str]] = set()
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["Name"] or "?"
            for ep in dist.entry_points:
                if ep.group != group or (normalise(dist_name), ep.name) in seen:
                    continue
                seen.add((normalise(dist_name), ep.name))
                if allow is not None:
                    hits = {normalise(ep.name), normalise(dist_name)} & allow
                    if not hits:
                        continue
                    matched |= hits
                self._load_one(ep, dist_name, dist.version or "?")
        for name in sorted((allow or set()) - matched):
            logger.warning(f"circuitlab: {ALLOW_ENV} names {name!r}, which matches no installed plugin's entry-point "
                           "or distribution name; check the spelling ('circuitlab plugins' lists what is installed)")

    def _load_one(self, ep: importlib.metadata.EntryPoint, dist: str, version: str) -> None:
        if self.has_plugin(ep.name):
            other = self.origins.get(ep.name, ("?", "?"))[0]
            self.fail(ep.name, dist, version, f"its entry-point name is already used by {other}; rename the entry "
                      "point (use the distribution name)", traceback_hint=False)
            return
        try:
            with warn_if_slow(ep.name, dist, version):
                plugin = ep.load()
        except STOPS:
            raise
        except BaseException as exc:  # SystemExit included: a plugin must not end the process
            if raise_plugin_errors():
                raise
            self.fail(ep.name, dist, version, describe_exception(exc))
            return
        problem = api_problem(getattr(plugin, API_ATTRIBUTE, None))
        if problem:
            self.fail(ep.name, dist, version, problem, traceback_hint=False)
            return
        try:
            with warn_if_slow(ep.name, dist, version, "registering"):
                self.register(plugin, name=ep.name)
        except STOPS:
            raise
        except BaseException as exc:  # pluggy rejects malformed hook implementations here
            if raise_plugin_errors():
                raise
            self.fail(ep.name, dist, version, describe_exception(exc))
            return
        self.origins[ep.name] = (dist, version)

    def load_builtins(self) -> None:
        from .. import __version__

        for modname in BUILTIN_PLUGINS:
            if not self.has_plugin(modname):
                self.register(importlib.import_module(modname), name=modname)
                self.origins[modname] = ("circuitlab", __version__)

    def drop_invalid(self) -> None:
        """Unregister plugins implementing hooks circuitlab does not define (a typo would never run)."""
        while True:
            try:
                self.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.get_name(exc.plugin) or repr(exc.plugin)
                dist, version = self.origins.get(name, ("?", "?"))
                if dist == "circuitlab" or raise_plugin_errors():
                    raise
                self.unregister(exc.plugin)
                self.fail(name, dist, version, f"{one_line(str(exc))}; check the hook names against docs/plugins.md",
                          traceback_hint=False)
