"""SIGINT and SIGTERM: stop cleanly, keep what is finished, and say how to continue.

``Interrupted`` is the error a stopped command ends with: one stderr line, exit code 128 + the signal
number (130 for SIGINT, 143 for SIGTERM). ``deferred_signals`` lets a loop finish its current step
and save its state before stopping (training writes a checkpoint at that step); elsewhere the signal
raises ``Interrupted`` at once, so ``finally`` blocks remove temporary files on the way out.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

from .errors import CircuitlabError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(CircuitlabError):
    """Stopped by a signal; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


#: What stops a command rather than failing it: ^C in a plain Python session, a signal under the command
#: line. Code that turns a plugin's exception into a one-line error lets these pass unchanged.
STOPS = (KeyboardInterrupt, Interrupted)


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def raising_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise ``Interrupted`` (the command line's default)."""
    old = {}
    for s in SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
            old[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred_signals() -> Iterator[Callable[[], int | None]]:
    """Within the block SIGINT/SIGTERM only record themselves; the yielded function returns the
    signal received so far (or None), for the loop to stop at a safe point."""
    received: list[int] = []
    old = {}
    for s in SIGNALS:
        try:
            old[s] = signal.signal(s, lambda signum, frame: received.append(signum))
        except ValueError:  # not the main thread: signals stay as they are
            pass
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
