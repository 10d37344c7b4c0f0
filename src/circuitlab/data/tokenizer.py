"""A 2048-token byte-level BPE trained with HF ``tokenizers`` on the corpus' train split.

Pre-tokenisation uses the regex of openai/circuit_sparsity (tiktoken_ext/tinypython.py), so punctuation runs absorb trailing
newlines and a leading space (``("``, ``],`` and ``]\\n`` are single tokens). Tokenizers and
encoded corpora are cached by corpus hash under the cache folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..files import atomic_path, cache_dir, write_bytes
from .corpus import Corpus

PRETOKENIZE_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
EOT = "<|endoftext|>"
VOCAB_SIZE = 2048
#: The BPE trains on at most this many characters of the train split (the stdlib's is ~11.5M), so that
#: its cost stays bounded for any corpus.
MAX_TOKENIZER_CHARS = 64_000_000


def _bounded_texts(corpus: Corpus, limit: int = MAX_TOKENIZER_CHARS):
    used = 0
    for f in corpus.split("train"):
        if used >= limit:
            return
        used += len(f.text)
        yield f.text


def train_tokenizer(corpus: Corpus, vocab_size: int = VOCAB_SIZE):
    """Train a byte-level BPE on the corpus' train split (held-out files are never seen)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_bounded_texts(corpus), trainer=trainer)
    return tok


def load_or_train_tokenizer(corpus: Corpus, vocab_size: int = VOCAB_SIZE):
    from tokenizers import Tokenizer

    path = cache_dir() / "tokenizers" / f"{corpus.hash[:24]}-{vocab_size}.json"
    if path.exists():
        try:
            return Tokenizer.from_file(str(path))
        except Exception:  # a damaged cache entry is rebuilt, not trusted
            path.unlink()
    tok = train_tokenizer(corpus, vocab_size)
    write_bytes(path, tok.to_str().encode())
    return tok


def load_tokenizer(path: str | Path):
    """A tokenizer file written by ``tokenizers`` (a run folder's tokenizer.json); one-line errors."""
    from tokenizers import Tokenizer

    from ..errors import CircuitlabError

    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"tokenizer {str(path)!r} does not exist; copy the run's tokenizer.json back or "
                              "retrain the run")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for any malformed file
        raise CircuitlabError(f"tokenizer {str(path)!r} is not a valid tokenizer file ({str(exc)[:120]}); copy "
                              "the run's tokenizer.json back or retrain the run") from None


def tokenizer_hash(tok) -> str:
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def encode_split(corpus: Corpus, tok, split: str) -> np.ndarray:
    """All files of one split, encoded and joined with <|endoftext|>, as uint16 ids (cached)."""
    path = cache_dir() / "tokens" / f"{corpus.hash[:24]}-{tokenizer_hash(tok)}-{split}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except Exception:
            path.unlink()
    eot = tok.token_to_id(EOT)
    files = corpus.split(split)
    ids: list[int] = []
    for enc in tok.encode_batch([f.text for f in files]):
        ids.extend(enc.ids)
        ids.append(eot)
    arr = np.asarray(ids, dtype=np.uint16)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    return arr
