"""The training corpus: a folder of real Python files, by default the running interpreter's stdlib.

The split into train and validation is by file and deterministic: a file is held out when
``sha256(relpath) % 20 == 0`` (about 5%). Every corpus carries a manifest (paths and sha256) and a
corpus hash, recorded in the provenance of everything trained on it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sysconfig
from pathlib import Path

import attrs

from ..errors import CircuitlabError
from ..files import read_regular

# Excluded from the default stdlib corpus: the test suites are half the bytes and include files
# that are deliberately not valid UTF-8.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
_ALWAYS_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", ".tox", "node_modules"}


@attrs.frozen(kw_only=True)
class SourceFile:
    relpath: str
    sha256: str
    split: str  # "train" or "val"
    text: str = attrs.field(repr=False, eq=False)


#: Files larger than this are skipped (the largest stdlib module, pydoc_data/topics.py, is 0.76 MB).
MAX_FILE_BYTES = 1 << 20
#: A line longer than this marks a file as generated or binary, not code to learn from (stdlib: <= 175).
MAX_LINE_CHARS = 10_000


@attrs.frozen(kw_only=True)
class Corpus:
    root: str
    files: tuple[SourceFile, ...]
    hash: str  # sha256 over the sorted (relpath, sha256) manifest
    skipped: tuple[str, ...] = ()  # files that were not valid UTF-8
    skipped_large: tuple[str, ...] = ()  # files over the size cap
    skipped_binary: tuple[str, ...] = ()  # files with NUL bytes or very long lines
    skipped_special: tuple[str, ...] = ()  # not regular files: devices, FIFOs, sockets (or links to them)

    def skipped_counts(self) -> dict[str, int]:
        counts = {"not_utf8": len(self.skipped), "too_large": len(self.skipped_large),
                  "binary": len(self.skipped_binary)}
        if self.skipped_special:  # absent otherwise, so earlier provenance reads the same
            counts["not_regular"] = len(self.skipped_special)
        return counts

    def split(self, name: str) -> list[SourceFile]:
        return [f for f in self.files if f.split == name]

    def manifest(self) -> dict:
        return {
            "root": self.root,
            "hash": self.hash,
            "files": [{"path": f.relpath, "sha256": f.sha256, "split": f.split} for f in self.files],
            "skipped_not_utf8": list(self.skipped),
            "skipped_too_large": list(self.skipped_large),
            "skipped_binary": list(self.skipped_binary),
            **({"skipped_not_regular": list(self.skipped_special)} if self.skipped_special else {}),
        }


def default_corpus_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_val(relpath: str) -> bool:
    return int(hashlib.sha256(relpath.encode()).hexdigest(), 16) % 20 == 0


def _python_files(root: Path, skip: set[str]) -> list[Path]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        paths.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return sorted(paths)


def _looks_binary(data: bytes) -> bool:
    return b"\0" in data or any(len(line) > MAX_LINE_CHARS for line in data.split(b"\n"))


def load_corpus(directory: str | os.PathLike | None = None, max_file_bytes: int = MAX_FILE_BYTES, *,
                flag: str = "--corpus") -> Corpus:
    """Read every ``.py`` file under ``directory`` (default: the stdlib, without its tests).

    Files over ``max_file_bytes``, with NUL bytes or with lines over ``MAX_LINE_CHARS`` are skipped and
    counted, which keeps tokenizer training bounded (a 2 MB file of NUL bytes once stalled it for minutes).
    Only regular files are read, and never past the cap (``circuitlab.files.read_regular``): a device,
    FIFO or socket named ``*.py``, or a link to one, is skipped and counted as not regular.
    ``flag`` is the option that named the folder, for the error messages (``--mine-from`` reads a
    folder of code to cut tasks from with the same rules: ``load_code_folder``).
    """
    default = directory is None
    root = default_corpus_dir() if default else Path(directory)
    what = "corpus folder" if flag == "--corpus" else f"{flag} folder"
    if not root.exists():
        raise CircuitlabError(f"{what} {str(root)!r} does not exist; pass {flag} DIR with a folder of .py files")
    if not root.is_dir():
        raise CircuitlabError(f"{what} {str(root)!r} is not a folder; pass {flag} DIR with a folder of .py files")
    files, skipped = [], {"utf8": [], "large": [], "binary": [], "special": []}
    for path in _python_files(root, _STDLIB_SKIP_DIRS if default else _ALWAYS_SKIP_DIRS):
        rel = path.relative_to(root).as_posix()
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # follows links; read_regular checks the open file again
                skipped["special"].append(rel)
                continue
            if path.stat().st_size > max_file_bytes:
                skipped["large"].append(rel)
                continue
            data = read_regular(path, max_file_bytes)
        except OSError:  # unreadable (permissions, a dangling link): not part of the corpus
            skipped["binary"].append(rel)
            continue
        if data is None:  # grew past the cap while read, or replaced by a special file
            skipped["large"].append(rel)
            continue
        if _looks_binary(data):
            skipped["binary"].append(rel)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped["utf8"].append(rel)
            continue
        if text.strip():
            files.append(SourceFile(relpath=rel, sha256=hashlib.sha256(data).hexdigest(),
                                    split="val" if _is_val(rel) else "train", text=text))
    if not files:
        raise CircuitlabError(f"{what} {str(root)!r} has no usable .py files (skipped: {len(skipped['large'])} "
                              f"over {max_file_bytes} bytes, {len(skipped['binary'])} binary, {len(skipped['utf8'])} "
                              f"not UTF-8, {len(skipped['special'])} not regular files); pass {flag} DIR with a "
                              "folder of Python source")
    if len(files) >= 2:
        # Tiny corpora may hash every file into one split; keep both splits non-empty.
        if not any(f.split == "val" for f in files):
            files[-1] = attrs.evolve(files[-1], split="val")
        if not any(f.split == "train" for f in files):
            files[0] = attrs.evolve(files[0], split="train")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relpath}\0{f.sha256}\n".encode())
    return Corpus(root=str(root), files=tuple(files), hash=h.hexdigest(), skipped=tuple(skipped["utf8"]),
                  skipped_large=tuple(skipped["large"]), skipped_binary=tuple(skipped["binary"]),
                  skipped_special=tuple(skipped["special"]))


def load_code_folder(directory: str | os.PathLike, flag: str = "--mine-from",
                     max_file_bytes: int = MAX_FILE_BYTES) -> Corpus:
    """A folder of Python code other than the training corpus (``--mine-from``, ``--eval-on``), read with
    the corpus' rules (size cap, binary and UTF-8 skips) and hashed the same way (``Corpus.hash``).

    Every file counts: the training corpus' file split does not apply to another folder (mined tasks
    split its code positions into train and test instead). The root is resolved, so provenance names the folder wherever the command ran from."""
    if not str(directory).strip():  # "" would resolve to the working folder
        raise CircuitlabError(f"{flag} is empty; pass {flag} DIR with a folder of .py files")
    return load_corpus(Path(directory).expanduser().resolve(), max_file_bytes, flag=flag)
