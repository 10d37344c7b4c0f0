"""Where circuitlab may write: the one output guard, the markers of its own outputs, one writer per folder.

``guard_output`` is the one decision of whether a command may write to, or replace, a path: every
command that writes calls it before any work. ``folder_lock`` keeps a second long job (a bench) out of
a folder another one is writing. The guarantees are listed in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CircuitlabError
from .files import _TMP_RE, _umask, check_writable_dir, read_regular

#: Each kind of output circuitlab writes, as (what it is, the marker that identifies it). ``--overwrite``
#: and resuming only ever replace or extend a path that carries its kind's marker (or an empty folder).
OUTPUT_KINDS: dict[str, tuple[str, str]] = {
    "run": ("a circuitlab run folder", "config.json with kind 'circuitlab-run'"),
    "store": ("a circuitlab activation store", "zarr.json whose attributes have schema 'circuitlab-store'"),
    "pruned": ("a circuitlab prune output folder",
               "summary.json with kind 'circuitlab-prune-summary', or a circuits/ folder of circuit files"),
    "bench": ("a circuitlab bench folder", "spec.json, the copy of the bench spec"),
    "mib": ("a circuitlab MIB export folder", "scores.json (a list of method scores) beside circuits/"),
    "page": ("a circuitlab HTML page", '<meta name="generator" content="circuitlab">'),
    "plot": ("a PNG figure written by circuitlab", "the PNG's Software text chunk naming Matplotlib"),
    "circuits": ("a folder of circuitlab circuit files", "*.json circuit files with kind 'circuitlab-circuit'"),
    "graph": ("a circuit-tracer graph file written by circuitlab", "a JSON graph with metadata, nodes and links"),
    "backups": ("a circuitlab backups folder", "backups.json or round-NNN.json files of 'circuitlab backups'"),
    "track": ("a circuitlab checkpoint-track folder", "track.json, or step-NNNNNN/ prune output folders"),
}
#: Kinds that are one file rather than a folder.
FILE_KINDS = ("page", "plot", "graph")
#: A page written before pages carried the generator tag: circuitlab's offline Content-Security-Policy.
_OLD_PAGE_MARK = b"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'"
_MARKER_CAP = 64 << 20  # marker files are small JSON documents; a larger one is not circuitlab's


def _json_doc(path: Path) -> Any:
    try:
        data = read_regular(path, _MARKER_CAP)
        return None if data is None else json.loads(data)
    except (OSError, ValueError):
        return None


def _kind_of(doc: Any) -> Any:
    return doc.get("kind") if isinstance(doc, dict) else None


def has_marker(path: str | os.PathLike, kind: str) -> bool:
    """Whether ``path`` carries the marker of ``kind`` (``OUTPUT_KINDS``)."""
    path = Path(path)
    if kind == "page":
        try:
            head = read_regular(path, 1 << 30)
        except OSError:
            return False
        return head is not None and (b'<meta name="generator" content="circuitlab">' in head[:4096]
                                     or _OLD_PAGE_MARK in head[:4096])
    if kind == "plot":
        try:
            head = read_regular(path, 1 << 30)
        except OSError:
            return False
        return head is not None and head.startswith(b"\x89PNG") and b"Software\x00Matplotlib" in head[:4096]
    if kind == "graph":
        doc = _json_doc(path)
        return isinstance(doc, dict) and {"metadata", "nodes", "links"} <= set(doc)
    if not path.is_dir():
        return False
    if kind == "circuits":
        files = sorted(p for p in path.iterdir() if not _TMP_RE.match(p.name))
        return bool(files) and all(f.suffix == ".json" and _kind_of(_json_doc(f)) == "circuitlab-circuit"
                                   for f in files[:64])
    if kind == "run":
        return _kind_of(_json_doc(path / "config.json")) == "circuitlab-run"
    if kind == "store":
        doc = _json_doc(path / "zarr.json")
        return isinstance(doc, dict) and isinstance(doc.get("attributes"), dict) and \
            doc["attributes"].get("schema") == "circuitlab-store"
    if kind == "pruned":
        if _kind_of(_json_doc(path / "summary.json")) == "circuitlab-prune-summary":
            return True
        circuits = path / "circuits"  # an interrupted prune: finished circuits, or none yet
        if not circuits.is_dir() or not all(p.suffix in (".json", ".html") or _TMP_RE.match(p.name)
                                                  for p in circuits.iterdir()):
            return False
        return all(_kind_of(_json_doc(f)) == "circuitlab-circuit" for f in sorted(circuits.glob("*.json"))[:8])
    if kind == "bench":
        doc = _json_doc(path / "spec.json")
        return isinstance(doc, dict) and {"name", "models", "prune", "tasks"} <= set(doc)
    if kind == "backups":  # a finished run's summary, or the rounds an interrupted one finished
        if _kind_of(_json_doc(path / "backups.json")) == "circuitlab-backups":
            return True
        rounds = sorted(path.glob("round-[0-9][0-9][0-9].json"))[:8]
        return bool(rounds) and all(_kind_of(_json_doc(f)) == "circuitlab-backup-round" for f in rounds)
    if kind == "track":  # a finished track, or the checkpoints an interrupted one pruned
        if _kind_of(_json_doc(path / "track.json")) == "circuitlab-track":
            return True
        steps = sorted(p for p in path.glob("step-[0-9]*") if p.is_dir())[:8]
        return bool(steps) and all(has_marker(p, "pruned") for p in steps)
    if kind == "mib":
        doc = _json_doc(path / "scores.json")
        return isinstance(doc, list) and all(isinstance(d, dict) and "method_name" in d for d in doc)
    raise ValueError(f"unknown output kind {kind!r}")


def _is_empty_dir(path: Path) -> bool:
    """No entries but circuitlab's own temporary names and lock file."""
    try:
        return all(_TMP_RE.match(p.name) or p.name == LOCK_NAME for p in path.iterdir())
    except OSError:
        return False


def _home() -> Path | None:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return Path(home).resolve() if home and home != "~" else None


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def guard_output(path: str | os.PathLike, kind: str, *, flag: str = "--out",
                 inputs: tuple[str | os.PathLike | None, ...] = (), writable: bool = True) -> Path:
    """Decide whether ``path`` may be written or replaced as an output of ``kind`` (``OUTPUT_KINDS``);
    raise a one-line ``CircuitlabError`` naming ``flag`` if not. Returns the path, unchanged.

    Refused, whatever the flags: a path that is or contains the working folder, the home folder, a
    filesystem root, or one of ``inputs`` (the files and folders the command reads), judged after
    following links; a path whose name is empty, ``.`` or ``..``; and an existing path that is not
    empty and lacks the marker of ``kind``, so ``--overwrite`` or a rerun can replace or extend only
    circuitlab's own output of the same kind. ``writable`` also checks, without creating anything,
    that the path can be written (``check_writable_dir``). Every check happens before any work."""
    what, marker = OUTPUT_KINDS[kind]
    raw = Path(path)
    text = str(path)
    if not text.strip():
        raise CircuitlabError(f"{flag} is empty; pass {flag} with a new path")
    lexical = Path(os.path.abspath(os.path.expanduser(text)))
    resolved = lexical.resolve()
    if resolved.parent == resolved:
        raise CircuitlabError(f"{flag} {text!r} is a filesystem root; pass {flag} with a new folder name")
    for label, place in (("the working folder", Path.cwd().resolve()), ("the home folder", _home())):
        if place is not None and (_contains(resolved, place) or _contains(lexical, place)):
            raise CircuitlabError(f"{flag} {text!r} is or contains {label} ({str(place)!r}); circuitlab will not "
                                  f"write over it: pass {flag} with a new folder name")
    if raw.name in ("", ".", "..") or text.rstrip("/").endswith(("/.", "/..")):
        raise CircuitlabError(f"{flag} {text!r} names a folder by '.' or '..': circuitlab will not write over it; "
                              f"pass {flag} with a new folder name")
    for source in inputs:
        if source is None or not str(source).strip():
            continue
        src = Path(os.path.abspath(os.path.expanduser(str(source)))).resolve()
        if _contains(resolved, src):
            raise CircuitlabError(f"{flag} {text!r} is or contains the input {str(source)!r}; pass {flag} with "
                                  "another path")
    if resolved.exists() or raw.is_symlink():
        if kind in FILE_KINDS:
            if resolved.is_dir():
                raise CircuitlabError(f"{flag} {text!r} is a folder; pass {flag} with a file name")
            if not has_marker(resolved, kind):
                raise CircuitlabError(f"{flag} {text!r} exists and is not {what} (no {marker}); circuitlab will "
                                      f"not replace it: pass {flag} with a new file name")
        elif not resolved.is_dir():
            if not resolved.exists():
                raise CircuitlabError(f"{flag} {text!r} is a link to nothing; remove it or pass another {flag}")
            raise CircuitlabError(f"{flag} {text!r} is a file, not a folder; choose another path")
        elif not _is_empty_dir(resolved) and not has_marker(resolved, kind):
            raise CircuitlabError(f"{flag} {text!r} is a folder that is not {what} (no {marker}); circuitlab "
                                  f"will not write into or replace it: pass {flag} with a new folder name")
    if writable:
        check_writable_dir(resolved.parent if kind in FILE_KINDS else resolved, flag)
    return raw


# ----------------------------------------------------------------------------------------------------
# One writer per folder

#: The lock file a long job holds in its output folder (``folder_lock``).
LOCK_NAME = ".circuitlab.lock"


def _lock_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        doc = json.loads(os.read(fd, 4096) or b"{}")
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str, flag: str = "--out") -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs; refuse with one line naming the holder's pid and host
    if another process holds it.

    The lock is an ``flock`` on ``folder/.circuitlab.lock``: the kernel releases it when its holder
    exits, however it exits (kill -9 included), so the lock of a dead process is taken over without a
    question. The file itself stays, holding the last holder's pid, host and start time (JSON)."""
    import fcntl
    import socket
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _lock_holder(fd)
            since = f", since {h['started']}" if h.get("started") else ""
            raise CircuitlabError(
                f"another '{h.get('command', command)}' is running on {flag} {str(folder)!r} (pid {h.get('pid', '?')} "
                f"on host {h.get('host', '?')}{since}); wait for it to finish or stop it, then rerun: finished work "
                "is kept") from None
        doc = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode() + b"\n", 0)
        yield
    finally:
        os.close(fd)  # releases the lock
