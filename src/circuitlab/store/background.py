"""A writer thread: the caller's thread produces items (the model's forward passes) while another
thread consumes them (compresses and writes), through a bounded queue.

torch, numpy, zstd and Blosc all release the GIL for their heavy work, so the two overlap: the forward
pass of batch i+1 runs while batch i is compressed and written. The queue holds at most ``depth``
items, so memory stays bounded however far the producer could run ahead.

Errors go both ways:

- an exception in the writer thread stops the producer at its next item and is raised again in the
  caller's thread, unchanged (a ``CircuitlabError`` or ``OSError`` stays the CLI's one-line error);
- an exception in the caller's thread (an error, ``KeyboardInterrupt``, ``Interrupted``) makes the
  writer stop before its next item; the caller waits for it to finish the write under way, so the
  caller's clean-up (deleting the temporary store folder) never races a write. (Only a second
  interrupt during that wait can cut it short; the folder's name carries the pid, so the next command
  sweeps whatever the finishing write left.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()
_POLL_S = 0.1  # how often a blocked producer checks that the writer is still alive


class _Stopped(Exception):
    """Raised inside the writer thread when the producer failed: unwinds the consumer."""


def consume_in_thread(consume: Callable[[Iterable[T]], R], items: Iterable[T], *, depth: int = 2,
                      name: str = "circuitlab-writer") -> R:
    """``consume(items)``, run in a new thread while this thread iterates ``items``; returns its result."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def feed() -> Iterator[T]:
        while True:
            item = slots.get()
            if stop.is_set():
                raise _Stopped
            if item is _DONE:
                return
            yield item

    def run() -> None:
        try:
            outcome["result"] = consume(feed())
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    writer = threading.Thread(target=run, name=name, daemon=True)
    writer.start()
    try:
        for item in items:
            if not _put(slots, item, writer):
                break  # the writer failed: its error is raised below
        else:
            _put(slots, _DONE, writer)
        writer.join()
    except BaseException:  # also an interrupt while waiting for the last write
        stop.set()
        _wake(slots)
        writer.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _put(slots: queue.Queue, item: Any, writer: threading.Thread) -> bool:
    """Queue ``item``, waiting while the queue is full; False if the writer has ended meanwhile."""
    while writer.is_alive():
        try:
            slots.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _wake(slots: queue.Queue) -> None:
    """Make sure a writer blocked on an empty queue sees the stop flag."""
    try:
        slots.put_nowait(_DONE)
    except queue.Full:
        pass  # it is not blocked: it will read an item, then see the flag
