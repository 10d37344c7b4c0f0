"""The training corpus: a folder of real Python files, by default the running interpreter's stdlib.

The split into train and validation is by file and deterministic: a file is held out when
``sha256(relpath) % 20 == 0`` (about 5%). Every corpus carries a manifest (paths and sha256) and a
corpus hash, recorded in the provenance of everything trained on it.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

import attrs

from ..errors import CircuitlabError

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


@attrs.frozen(kw_only=True)
class Corpus:
    root: str
    files: tuple[SourceFile, ...]
    hash: str  # sha256 over the sorted (relpath, sha256) manifest
    skipped: tuple[str, ...] = ()  # files that were not valid UTF-8

    def split(self, name: str) -> list[SourceFile]:
        return [f for f in self.files if f.split == name]

    def manifest(self) -> dict:
        return {
            "root": self.root,
            "hash": self.hash,
            "files": [{"path": f.relpath, "sha256": f.sha256, "split": f.split} for f in self.files],
            "skipped_not_utf8": list(self.skipped),
        }


def default_corpus_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_val(relpath: str) -> bool:
    return int(hashlib.sha256(relpath.encode()).hexdigest(), 16) % 20 == 0


def load_corpus(directory: str | os.PathLike | None = None) -> Corpus:
    """Read every ``.py`` file under ``directory`` (default: the stdlib, without its tests)."""
    default = directory is None
    root = default_corpus_dir() if default else Path(directory)
    if not root.exists():
        raise CircuitlabError(f"corpus folder {str(root)!r} does not exist; pass --corpus DIR with a folder of .py files")
    if not root.is_dir():
        raise CircuitlabError(f"corpus {str(root)!r} is not a folder; pass --corpus DIR with a folder of .py files")
    skip = _STDLIB_SKIP_DIRS if default else _ALWAYS_SKIP_DIRS
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        paths.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    files, skipped = [], []
    for path in sorted(paths):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)
            continue
        if not text.strip():
            continue
        files.append(SourceFile(relpath=rel, sha256=hashlib.sha256(data).hexdigest(),
                                split="val" if _is_val(rel) else "train", text=text))
    if not files:
        raise CircuitlabError(f"corpus folder {str(root)!r} has no non-empty UTF-8 .py files; "
                              "pass --corpus DIR with a folder of Python source")
    if len(files) >= 2:
        # Tiny corpora may hash every file into one split; keep both splits non-empty.
        if not any(f.split == "val" for f in files):
            files[-1] = attrs.evolve(files[-1], split="val")
        if not any(f.split == "train" for f in files):
            files[0] = attrs.evolve(files[0], split="train")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relpath}\0{f.sha256}\n".encode())
    return Corpus(root=str(root), files=tuple(files), hash=h.hexdigest(), skipped=tuple(skipped))
