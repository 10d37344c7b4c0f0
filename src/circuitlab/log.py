"""Diagnostics: the ``circuitlab`` logger, shown on stderr by the command line.

Library code logs notes and progress lines through ``logger``, which prints them as plain lines on
the current stderr, as the command line wants (a program embedding circuitlab can remove or replace
that handler, or raise the level). Progress bars stay tqdm on stderr. Nothing
here goes to stdout, so ``--json`` output stays one JSON document.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("circuitlab")

_notes_seen: set[str] = set()


def note_once(message: str) -> None:
    """A warning printed once per process (caveats that would repeat for every task)."""
    if message not in _notes_seen:
        _notes_seen.add(message)
        logger.warning(message)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the call (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_on_stderr(level: int = logging.INFO) -> None:
    """Print the ``circuitlab`` logger's records as plain lines on stderr (idempotent)."""
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


show_on_stderr()
