"""The one error type users see.

A ``CircuitlabError`` is bad input: the CLI prints its message on one stderr line and exits 2,
without a traceback. Messages name the problem and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CircuitlabError(Exception):
    """A user-facing error: one line naming the problem and the fix. Exit code 2."""

    exit_code = 2


class UnknownNameError(CircuitlabError, LookupError):
    """A name that is not registered in a registry (plugin kind, task, node...)."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = ""):
        self.kind, self.name = kind, name
        self.valid = sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=3, cutoff=0.6)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" Valid: {', '.join(self.valid) if self.valid else '(none registered)'}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class PluginError(CircuitlabError):
    """An exception or a broken contract inside a plugin's code, named after the plugin.

    The message reads ``plugin 'P' (KIND 'NAME'): what happened``. ``CIRCUITLAB_RAISE_PLUGIN_ERRORS=1``
    makes the command line show the traceback instead of this one line.
    """

    def __init__(self, message: str, *, plugin: str = "", kind: str = "", name: str = ""):
        self.plugin, self.kind, self.name = plugin, kind, name
        super().__init__(message)
