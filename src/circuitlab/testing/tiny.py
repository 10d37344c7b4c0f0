"""Tiny real components for plugin tests: a corpus of real stdlib files, its BPE tokenizer, a tiny
``TrainConfig``, a tiny GPT and a tiny trained run folder. Each is built in seconds on a CPU.

``Tiny(root)`` builds everything under ``root`` (the corpus is a copy of a few stdlib modules, so
the code is real Python); the tokenizer and encoded tokens go to circuitlab's cache
(``$CIRCUITLAB_CACHE``) like any other. The pytest fixtures in ``circuitlab.testing.pytest_plugin``
wrap one ``Tiny`` per test session.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import attrs

from ..config import ModelConfig, TrainConfig

#: Real stdlib modules copied into the tiny corpus: enough Python for a tokenizer and a tiny model.
TINY_CORPUS_FILES = (
    "abc.py", "bisect.py", "calendar.py", "csv.py", "fnmatch.py", "glob.py", "heapq.py", "json/decoder.py",
    "json/encoder.py", "shlex.py", "string.py", "textwrap.py", "copy.py", "pprint.py", "base64.py",
)
#: The tiny model: 2 layers of width 32, context 32, no bigram table (a 2048 x 2048 table would be most
#: of the compute); about 600 nodes. A training step takes a few milliseconds on an idle CPU core.
TINY_MODEL = ModelConfig(n_ctx=32, d_model=32, n_layer=2, n_head=2, d_head=16, d_mlp=64, bigram_table=False)


def copy_tiny_corpus(folder: Path) -> Path:
    """Copy ``TINY_CORPUS_FILES`` from this interpreter's stdlib into ``folder`` and return it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    folder.mkdir(parents=True, exist_ok=True)
    for rel in TINY_CORPUS_FILES:
        src = stdlib / rel
        if src.exists():
            dst = folder / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return folder


@attrs.define(slots=False)  # functools.cached_property needs an instance __dict__ (attrs < 24.1)
class Tiny:
    """Tiny real parts under one folder: corpus, tokenizer, config, model, trained run."""

    root: Path = attrs.field(converter=Path)
    _run: Path | None = attrs.field(default=None, init=False)

    @functools.cached_property
    def corpus_dir(self) -> Path:
        return copy_tiny_corpus(self.root / "corpus")

    @functools.cached_property
    def corpus(self) -> Any:
        from ..data.corpus import load_corpus

        return load_corpus(self.corpus_dir)

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The project's BPE (2048 tokens, the paper's pre-tokenisation) trained on the tiny corpus."""
        from ..data.tokenizer import load_or_train_tokenizer

        return load_or_train_tokenizer(self.corpus)

    def config(self, sparsity: str = "topk", **settings: Any) -> TrainConfig:
        """A ``TrainConfig`` for the tiny corpus: 12 steps of 4 sequences, target density 0.25."""
        values = {"sparsity": sparsity, "density": 0.25, "steps": 12, "batch_size": 4, "eval_every": 6,
                  "eval_batches": 1, "ckpt_every": 6, "corpus": str(self.corpus_dir), **settings}
        return TrainConfig.for_preset("tiny", **values)

    def model_config(self) -> ModelConfig:
        return attrs.evolve(TINY_MODEL, vocab_size=self.tokenizer.get_vocab_size())

    def model(self, seed: int = 0) -> Any:
        """A freshly initialised tiny GPT (seeded), on the CPU."""
        import torch

        from ..model.gpt import GPT

        torch.manual_seed(seed)
        return GPT(self.model_config())

    @functools.cached_property
    def train_ids(self) -> Any:
        """The tiny corpus' train split as a 1-D int64 tensor of token ids."""
        import numpy as np
        import torch

        from ..data.tokenizer import encode_split

        return torch.from_numpy(encode_split(self.corpus, self.tokenizer, "train").astype(np.int64))

    def batch(self, step: int, batch_size: int = 4, seed: int = 0) -> tuple[Any, Any]:
        """Inputs and next-token targets (batch_size, n_ctx) from real code, fixed by (seed, step)."""
        import torch

        n_ctx = TINY_MODEL.n_ctx
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        starts = torch.randint(0, len(self.train_ids) - n_ctx - 1, (batch_size,), generator=g)
        window = self.train_ids[starts[:, None] + torch.arange(n_ctx + 1)]  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def run(self) -> Path:
        """A trained tiny run folder (12 topk steps, seconds); trained once per ``Tiny``."""
        if self._run is None or not (self._run / "model.safetensors").exists():
            from ..train.loop import train_run

            out = self.root / "run"
            if not (out / "model.safetensors").exists():
                train_run(self.config(), out, model_config=self.model_config(), progress=False)
            self._run = out
        return self._run


@functools.lru_cache(maxsize=1)
def shared_tiny() -> Tiny:
    """One ``Tiny`` in a temporary folder for this process (``circuitlab plugins --check``), removed at exit."""
    root = tempfile.mkdtemp(prefix="circuitlab-tiny-")
    atexit.register(shutil.rmtree, root, True)
    return Tiny(Path(root))
