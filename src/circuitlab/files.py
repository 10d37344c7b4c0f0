"""Atomic file writes, atomic folder swaps, bounded reads, the cache folder and the one sha256 helper.

Everything circuitlab writes goes to a temporary file in the target's folder and is renamed into
place, so an interrupted run never leaves a half-written file behind. Temporary names carry the
writer's pid (``.NAME.tmp-PID-RAND``), so a later run can tell the debris of a killed writer from
the work of a live one and sweep it (``sweep_stale``). Files get the permissions the umask allows,
like any file a program creates.

Where a command may write at all is decided by ``circuitlab.outputs.guard_output``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CircuitlabError

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8,}$")


def cache_dir() -> Path:
    """``$CIRCUITLAB_CACHE``, else ``~/.cache/circuitlab``."""
    root = os.environ.get("CIRCUITLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "circuitlab")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fault_point(name: str) -> None:
    """Tests kill the process here (``CIRCUITLAB_FAULT=name``) to prove that no instant loses data;
    ``name@TERM`` or ``name@INT`` sends that signal instead of SIGKILL."""
    point, _, sig = os.environ.get("CIRCUITLAB_FAULT", "").partition("@")
    if point == name:
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}") if sig else signal.SIGKILL)


def sibling_tmp(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh temporary name next to ``path``, marked with this process's pid."""
    path = Path(path)
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove circuitlab's temporary files and folders in ``folder`` whose writer process is gone
    (only those for ``name`` when given). Returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if not m or (name is not None and m["name"] != name) or _pid_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def remove_tree(path: str | os.PathLike, settle: float = 0.3, timeout: float = 20.0) -> None:
    """Delete a temporary folder, again if writers still in flight recreate parts of it (zarr's
    pending chunk writes after a failed write do), until it has stayed gone for ``settle`` seconds,
    so that nothing is left behind. On a loaded machine those writes can land seconds late."""
    import time

    path = Path(path)
    if not path.exists():  # the usual case: the folder was renamed into place
        return
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle)
        if not path.exists() or time.monotonic() > deadline:
            return


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, path.name)
    tmp = sibling_tmp(path)
    try:
        try:
            yield tmp
        except OSError as exc:  # name the file the user knows, not the temporary one
            if exc.filename is None or str(exc.filename) == str(tmp):
                exc.filename = str(path)
            raise
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        fault_point(f"rename:{path.name}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_figure(path: str | os.PathLike, fig, dpi: int = 110) -> None:
    """A matplotlib figure written atomically to ``path`` as PNG (through ``write_bytes``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_bytes(path, buf.getvalue())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file as bytes, with its JSON header in sorted key order.

    safetensors itself writes the metadata in hash-map order, which differs from process to process;
    sorting the header makes identical tensors and metadata give identical bytes."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8: 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Write tensors atomically, byte-reproducibly (``safetensors_bytes``)."""
    write_bytes(path, safetensors_bytes(tensors, metadata))


def tensors_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a safetensors file's tensors (names, dtypes, shapes and bytes, sorted by name),
    independent of its metadata and of how the file was laid out: a model's identity."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="numpy") as f:
        for name in sorted(f.keys()):
            array = f.get_tensor(name)
            h.update(f"{name}\0{array.dtype.str}\0{list(array.shape)}\0".encode())
            h.update(array.tobytes())
    return h.hexdigest()


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with Linux renameat2(RENAME_EXCHANGE); False where unsupported
    (or where ``CIRCUITLAB_NO_RENAME_EXCHANGE`` is set, which tests use to exercise the fallback)."""
    if os.environ.get("CIRCUITLAB_NO_RENAME_EXCHANGE"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` in place of ``target`` so that a kill at any instant leaves one
    complete folder at ``target``: the old one or the new one.

    Where the kernel allows it the two are exchanged in one step and the old one deleted afterwards.
    Elsewhere the old one is renamed aside (``.NAME.old-PID-RAND``), the new one renamed in, and the
    old one deleted; ``recover_dir`` puts an aside folder back if a kill fell between the two renames."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    fault_point("swap:before")
    if _renameat2_exchange(new, target):
        fault_point("swap:after-exchange")
        shutil.rmtree(new, ignore_errors=True)  # now the old folder
        return
    aside = sibling_tmp(target, "old")
    os.rename(target, aside)
    fault_point("swap:between-renames")
    os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def recover_dir(target: Path) -> None:
    """Undo an interrupted ``replace_dir``: if ``target`` is missing but an aside copy of a dead
    writer exists, put it back; then sweep the dead writers' leftovers next to ``target``."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    if not target.exists():
        asides = sorted(p for p in target.parent.glob(f".{target.name}.old-*")
                        if (m := _TMP_RE.match(p.name)) and not _pid_alive(int(m["pid"])))
        if asides:
            os.rename(asides[-1], target)
    sweep_stale(target.parent, target.name)


def check_writable_dir(folder: str | os.PathLike, what: str) -> None:
    """Fail now, with one line, if ``folder`` could not be created or written to, rather than after long
    work: ``what`` names the option, e.g. "--out". Nothing is created: a probe file goes into the folder,
    or into its nearest existing ancestor, and is removed at once."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CircuitlabError(f"{what} {str(folder)!r}: {str(existing)!r} is a file, not a folder; "
                              "choose another path")
    probe = sibling_tmp(existing / "write-probe")
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CircuitlabError(f"{what} {str(folder)!r} is not writable ({os_error_text(exc)}); choose a "
                              "writable folder") from None


def os_error_text(exc: OSError) -> str:
    """``Permission denied, EACCES`` for an OSError: the message and the errno's name."""
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    return ", ".join(x for x in (exc.strerror or str(exc), name) if x)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: The largest JSON document circuitlab reads (a circuit of a large model is a few MB).
MAX_DOCUMENT_BYTES = 1 << 30


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON document, read only if it is a regular file of at most ``MAX_DOCUMENT_BYTES`` (a FIFO or a
    link to /dev/zero named like a document cannot hang or exhaust the reader); one-line errors."""
    try:
        data = read_regular(path, MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        raise CircuitlabError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise CircuitlabError(f"{what} {str(path)!r} cannot be read ({os_error_text(exc)})") from None
    if data is None:
        if os.path.isdir(path):
            raise CircuitlabError(f"{what} {str(path)!r} is a folder, not a file")
        if is_regular(path):
            raise CircuitlabError(f"{what} {str(path)!r} is larger than {MAX_DOCUMENT_BYTES} bytes; it is not a "
                                  "document circuitlab wrote")
        raise CircuitlabError(f"{what} {str(path)!r} is not a regular file (a device, FIFO or socket); pass a file")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CircuitlabError(f"{what} {str(path)!r} is not valid JSON ({exc}); it may be truncated") from None


# ----------------------------------------------------------------------------------------------------
# Bounded reads


def read_regular(path: str | os.PathLike, cap: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (or a link to one) of at most ``cap`` bytes.

    ``None`` for anything else: a device, FIFO or socket (opened without blocking, so a FIFO cannot
    hang the read), or a file longer than ``cap``, however ``st_size`` reads (a link to ``/dev/zero``
    reports 0 bytes): at most ``cap + 1`` bytes are ever read. Raises ``OSError`` if it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], cap + 1
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        data = b"".join(chunks)
        return None if len(data) > cap else data
    finally:
        os.close(fd)


def is_regular(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file, following links (False for devices, FIFOs, sockets, dangling links)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
