"""Tasks: minimal prompt pairs with two contrast tokens, and the task loss.

A task is a name, a one-line description and a seeded generator of prompt pairs. Prompt A expects
token A and prompt B expects token B; the two prompts differ minimally (paper-spec §4.1).

Task loss (paper-spec §4.1). For each prompt, the binary cross-entropy over the two candidate
tokens at the last position: ``softplus(-(logit[right] - logit[wrong]))``. circuitlab reports the
**mean over prompts** (both members of every pair), i.e. half of the paper's stored two-sided
values, which are summed over the pair. The default pruning target 0.15 is in this per-prompt
convention. Accuracy is the share of prompts whose right token has the larger logit of the two.

Standard pair sets. ``load_pairs(task, "train"|"test")`` reads the fixed-seed benchmark file
``benchmarks/tasks/<suite>/<task>.jsonl`` when there is one (train pairs are for pruning, test pairs for
reporting; no prompt is shared between them), and otherwise generates the same sets in memory with
the same seeds (``SEED_TRAIN``, ``SEED_TEST``).

Token checks. A contrast string must be exactly one token of the model's tokenizer, and it must be
the token the tokenizer really produces after the prompt (``encode(prompt + token) ==
encode(prompt) + [token]``). ``check_tokens`` reports a task as unusable, naming the string and how it
tokenizes, and drops the pairs whose boundary merges differently.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .errors import CircuitlabError, UnknownNameError

if TYPE_CHECKING:
    import torch

    from .runs import RunInfo

#: The fixed seeds of the standard pair sets: train pairs (pruning) and test pairs (reporting).
SEED_TRAIN = 0
SEED_TEST = 1
#: Default sizes of the standard sets, in pairs.
N_TRAIN = 256
N_TEST = 128
#: First-line ``kind`` of a benchmark task file.
TASKSET_KIND = "circuitlab-taskset"
TASKSET_VERSION = 1
SPLITS = ("train", "test")


@attrs.frozen(kw_only=True)
class PromptPair:
    """Two prompts that differ minimally, and the token each should be followed by."""

    prompt_a: str
    prompt_b: str
    token_a: str  # the right next token after prompt_a (and the wrong one after prompt_b)
    token_b: str
    source_a: str | None = None  # where a mined prompt came from, "relpath:line"
    source_b: str | None = None


@attrs.frozen(kw_only=True)
class TaskContext:
    """What a task suite may use to build its tasks."""

    heldout_files: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)  # (relpath, text), val split
    corpus_hash: str | None = None  # the corpus the held-out files come from (mined sets depend on it)
    tokenizer: Any = attrs.field(default=None, eq=False, repr=False)  # the model's tokenizer, if known

    @property
    def tokenizer_hash(self) -> str | None:
        if self.tokenizer is None:
            return None
        from .tokenizer import tokenizer_hash

        return tokenizer_hash(self.tokenizer)


@attrs.frozen(kw_only=True)
class Task:
    name: str
    description: str  # one line
    generate: Callable[[int, int], list[PromptPair]] = attrs.field(eq=False, repr=False)  # (n, seed) -> pairs
    suite: str = ""
    # Optional (n, seed, split) -> pairs, for tasks whose train and test pairs must come from disjoint
    # sources (mined code positions). Without it, both splits come from ``generate`` with their seeds.
    generate_split: Callable[[int, int, str], list[PromptPair]] | None = attrs.field(
        default=None, eq=False, repr=False)
    depends_on_corpus: bool = False  # its pairs come from the corpus (benchmark files record its hash)
    corpus_hash: str | None = None  # for such tasks: the corpus and tokenizer the pairs were cut with
    tokenizer_hash: str | None = None

    @property
    def qualname(self) -> str:
        return f"{self.suite}:{self.name}" if self.suite else self.name

    def make_pairs(self, n: int, seed: int, split: str | None = None) -> list[PromptPair]:
        """Up to ``n`` pairs; the same (n, seed, split) always gives the same pairs."""
        if split is not None and self.generate_split is not None:
            return list(self.generate_split(n, seed, split))
        return list(self.generate(n, seed))


@attrs.frozen(kw_only=True)
class TokenCheck:
    """Whether a task can be scored with a tokenizer, and the pairs that can."""

    usable: bool
    problem: str | None = None  # names the string and how it tokenizes, e.g. "']]' tokenizes as [']', ']']"
    pairs: tuple[PromptPair, ...] = attrs.field(default=(), repr=False)  # the pairs that pass both checks
    n_dropped: int = 0  # pairs dropped because the prompt/token boundary merges differently


@attrs.frozen(kw_only=True)
class TaskBatch:
    """Encoded prompts, two rows per pair: row 2i is prompt A, row 2i+1 is prompt B."""

    ids: Any  # (N, T) long, right-padded with 0
    last: Any  # (N,) long: index of each row's last prompt token
    target: Any  # (N,) long: the right token id
    contrast: Any  # (N,) long: the wrong token id

    def to(self, device: Any) -> TaskBatch:
        return TaskBatch(ids=self.ids.to(device), last=self.last.to(device), target=self.target.to(device),
                         contrast=self.contrast.to(device))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` if the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer.encode(text).ids
    return ids[0] if len(ids) == 1 else None


def encode_pairs(pairs: Sequence[PromptPair], tokenizer: Any, max_len: int | None = None) -> TaskBatch:
    """Tokenize pairs into a right-padded batch. Prompts longer than ``max_len`` keep their last tokens."""
    import torch

    rows, target, contrast = [], [], []
    for p in pairs:
        ta, tb = single_token_id(tokenizer, p.token_a), single_token_id(tokenizer, p.token_b)
        if ta is None or tb is None:
            raise ValueError(f"contrast tokens {p.token_a!r}/{p.token_b!r} are not single tokens")
        for prompt, right, wrong in ((p.prompt_a, ta, tb), (p.prompt_b, tb, ta)):
            ids = tokenizer.encode(prompt).ids
            if max_len is not None:
                ids = ids[-max_len:]
            rows.append(ids)
            target.append(right)
            contrast.append(wrong)
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    last = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    return TaskBatch(ids=ids, last=last, target=torch.tensor(target), contrast=torch.tensor(contrast))


def last_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """(N, T, V) logits -> (N, V) logits at each row's last prompt token."""
    return logits[torch_arange(len(batch), logits.device), batch.last]


def torch_arange(n: int, device: Any) -> torch.Tensor:
    import torch

    return torch.arange(n, device=device)


def binary_ce(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Per-prompt binary cross-entropy over the two candidate tokens, shape (N,)."""
    import torch.nn.functional as F

    right = logits_last.gather(1, target[:, None]).squeeze(1).float()
    wrong = logits_last.gather(1, contrast[:, None]).squeeze(1).float()
    return F.softplus(-(right - wrong))


def task_loss(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """The task loss: binary CE averaged over prompts (half the paper's two-sided sum)."""
    return binary_ce(logits_last, target, contrast).mean()


def task_accuracy(logits_last: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor) -> float:
    right = logits_last.gather(1, target[:, None]).squeeze(1)
    wrong = logits_last.gather(1, contrast[:, None]).squeeze(1)
    return float((right > wrong).float().mean())


# ----------------------------------------------------------------------------------------------------
# Token checks


def token_pieces(tokenizer: Any, text: str) -> list[str]:
    """How ``text`` tokenizes, as readable strings (``[']', ']']``)."""
    return [tokenizer.decode([i]) for i in tokenizer.encode(text).ids]


def boundary_ok(tokenizer: Any, prompt: str, token_id: int) -> bool:
    """True when appending the target token's text does not re-tokenize the end of the prompt."""
    ids = tokenizer.encode(prompt).ids
    text = tokenizer.decode([token_id])
    return tokenizer.encode(prompt + text).ids == [*ids, token_id]


def check_tokens(task_pairs_or_task: Task | Iterable[PromptPair], tokenizer: Any,
                 n: int = 64) -> TokenCheck:
    """Check a task's (or a list of pairs') contrast strings against a tokenizer.

    Every distinct contrast string must be one token; otherwise the task is unusable and ``problem``
    names the string and how it tokenizes. Pairs whose target is not the token the tokenizer really
    produces after the prompt are dropped (``n_dropped``). A task given as a ``Task`` is checked on its
    first ``n`` train pairs.
    """
    if isinstance(task_pairs_or_task, Task):
        pairs = task_pairs_or_task.make_pairs(n, SEED_TRAIN, "train")
    else:
        pairs = list(task_pairs_or_task)
    if not pairs:
        return TokenCheck(usable=False, problem="no pairs to check")
    ids: dict[str, int] = {}
    bad: list[str] = []
    for s in dict.fromkeys(t for p in pairs for t in (p.token_a, p.token_b)):
        tid = single_token_id(tokenizer, s)
        if tid is None or tokenizer.decode([tid]) != s:
            bad.append(f"{s!r} tokenizes as {token_pieces(tokenizer, s)!r}")
        else:
            ids[s] = tid
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return TokenCheck(usable=False, problem=f"contrast string {bad[0]}{more}; it must be one token")
    kept, first_failure = [], None
    for p in pairs:
        failed = next((prompt for prompt, tok in ((p.prompt_a, p.token_a), (p.prompt_b, p.token_b))
                       if not boundary_ok(tokenizer, prompt, ids[tok])), None)
        if failed is None:
            kept.append(p)
        elif first_failure is None:
            first_failure = (failed, p.token_a if failed == p.prompt_a else p.token_b)
    if not kept:
        prompt, tok = first_failure
        tail = prompt[-20:] + tok
        return TokenCheck(usable=False, n_dropped=len(pairs),
                          problem=f"no pair survives the boundary check: e.g. ...{tail!r} tokenizes as "
                                  f"{token_pieces(tokenizer, tail)!r}, so {tok!r} is not the next token")
    return TokenCheck(usable=True, pairs=tuple(kept), n_dropped=len(pairs) - len(kept))


# ----------------------------------------------------------------------------------------------------
# Suites and contexts


def default_task_context() -> TaskContext:
    """Held-out files of the default corpus (the stdlib) and its tokenizer."""
    return _context_for_corpus(None)


@functools.lru_cache(maxsize=4)
def _context_for_corpus(corpus_dir: str | None, tokenizer_path: str | None = None) -> TaskContext:
    from .corpus import load_corpus
    from .tokenizer import load_or_train_tokenizer, load_tokenizer

    corpus = load_corpus(corpus_dir)
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else load_or_train_tokenizer(corpus)
    return TaskContext(heldout_files=tuple((f.relpath, f.text) for f in corpus.split("val")),
                       corpus_hash=corpus.hash, tokenizer=tok)


def task_context_for_run(info: RunInfo) -> TaskContext:
    """The held-out (validation-split) files of the corpus the run was trained on, and its tokenizer.

    When that corpus folder is gone, the context has the tokenizer but no held-out files (templated
    tasks still work; mined tasks have no pairs), and a note goes to stderr.
    """
    tok_path = info.path / "tokenizer.json"
    tokenizer_path = str(tok_path) if tok_path.exists() else None
    try:
        return _context_for_corpus(info.train.corpus, tokenizer_path)
    except CircuitlabError as exc:
        _note_once(f"circuitlab: no held-out files for tasks mined from the corpus: {exc}")
        from .tokenizer import load_tokenizer

        return TaskContext(tokenizer=load_tokenizer(tok_path) if tokenizer_path else None)


def suite_names() -> list[str]:
    from . import plugins

    return plugins.get_registry().names("suite")


def suite_tasks(suite: str, context: TaskContext | None = None) -> list[Task]:
    """All tasks of one registered suite (unknown suite: UnknownNameError with did-you-mean)."""
    from . import plugins

    entry = plugins.get("suite", suite)
    built = entry.factory(context if context is not None else default_task_context())
    tasks = list(built.tasks())
    # The registered name is authoritative: a task's qualified name is always "suite:task".
    return [t if t.suite == suite else attrs.evolve(t, suite=suite) for t in tasks]


def resolve_tasks(spec: str | None, context: TaskContext | None = None) -> list[Task]:
    """Tasks named by ``spec``: ``None``/``"all"`` (every suite), ``"SUITE"`` or ``"SUITE:task,task"``."""
    spec = (spec or "all").strip()
    if spec == "all":
        return [t for s in suite_names() for t in suite_tasks(s, context)]
    suite, _, names = spec.partition(":")
    tasks = suite_tasks(suite.strip(), context)
    if not names.strip():
        return tasks
    by_name = {t.name: t for t in tasks}
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in by_name:
            raise UnknownNameError("task", name, by_name, f"(the tasks of suite {suite.strip()!r})")
        chosen.append(by_name[name])
    return chosen


# ----------------------------------------------------------------------------------------------------
# Standard benchmark sets


def benchmark_dir() -> Path:
    """``$CIRCUITLAB_TASKSETS``, else ``benchmarks/tasks`` of the source checkout this module lives in."""
    env = os.environ.get("CIRCUITLAB_TASKSETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "benchmarks" / "tasks"


def taskset_path(task: Task, root: Path | None = None) -> Path:
    return (root or benchmark_dir()) / task.suite / f"{task.name}.jsonl"


@attrs.frozen(kw_only=True)
class TaskSet:
    """A benchmark task file: its header and the pairs of each split."""

    header: dict = attrs.field(eq=False)
    train: tuple[PromptPair, ...]
    test: tuple[PromptPair, ...]

    def split(self, name: str) -> tuple[PromptPair, ...]:
        return self.train if name == "train" else self.test


_PAIR_FIELDS = ("prompt_a", "prompt_b", "token_a", "token_b")
_SOURCE_FIELDS = ("source_a", "source_b")


def pair_to_record(pair: PromptPair, split: str) -> dict:
    rec = {"split": split, **{f: getattr(pair, f) for f in _PAIR_FIELDS}}
    rec.update({f: getattr(pair, f) for f in _SOURCE_FIELDS if getattr(pair, f) is not None})
    return rec


def _bad_line(path: Path, lineno: int, problem: str) -> CircuitlabError:
    return CircuitlabError(f"{path}:{lineno}: {problem}; regenerate the file with "
                           "'python benchmarks/tasks/generate.py' or delete it")


def read_taskset(path: str | os.PathLike) -> TaskSet:
    """Parse and check a benchmark task file (malformed: CircuitlabError naming the file and line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CircuitlabError(f"cannot read task file {str(path)!r} ({exc}); regenerate it with "
                              "'python benchmarks/tasks/generate.py'") from None
    header: dict | None = None
    splits: dict[str, list[PromptPair]] = {s: [] for s in SPLITS}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad_line(path, lineno, f"not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise _bad_line(path, lineno, "expected a JSON object")
        if header is None:
            header = _check_header(path, lineno, rec)
            continue
        split = rec.get("split")
        if split not in SPLITS:
            raise _bad_line(path, lineno, f"'split' must be 'train' or 'test', got {split!r}")
        missing = [f for f in _PAIR_FIELDS if not isinstance(rec.get(f), str) or not rec.get(f)]
        if missing:
            raise _bad_line(path, lineno, f"missing or empty string field(s) {', '.join(missing)}")
        if rec["token_a"] == rec["token_b"]:
            raise _bad_line(path, lineno, f"token_a and token_b are both {rec['token_a']!r}")
        splits[split].append(PromptPair(**{f: rec[f] for f in _PAIR_FIELDS},
                                        **{f: rec.get(f) for f in _SOURCE_FIELDS}))
    if header is None:
        raise _bad_line(path, 1, "the file is empty (expected a header line)")
    train_prompts = {q for p in splits["train"] for q in (p.prompt_a, p.prompt_b)}
    if any(q in train_prompts for p in splits["test"] for q in (p.prompt_a, p.prompt_b)):
        raise CircuitlabError(f"{path}: a test prompt also appears among the train prompts; regenerate the "
                              "file with 'python benchmarks/tasks/generate.py'")
    return TaskSet(header=header, train=tuple(splits["train"]), test=tuple(splits["test"]))


def _check_header(path: Path, lineno: int, rec: dict) -> dict:
    if rec.get("kind") != TASKSET_KIND:
        raise _bad_line(path, lineno, f"the first line must be a header with kind={TASKSET_KIND!r}")
    for key in ("suite", "task"):
        if not isinstance(rec.get(key), str):
            raise _bad_line(path, lineno, f"header field {key!r} must be a string")
    for key in ("seed_train", "seed_test"):
        if not isinstance(rec.get(key), int):
            raise _bad_line(path, lineno, f"header field {key!r} must be an integer")
    return rec


@functools.lru_cache(maxsize=256)
def _read_taskset_cached(path: str, mtime_ns: int) -> TaskSet:
    return read_taskset(path)


def make_taskset_header(task: Task, context: TaskContext | None, n_train: int, n_test: int) -> dict:
    from . import __version__

    header = {"kind": TASKSET_KIND, "version": TASKSET_VERSION, "suite": task.suite, "task": task.name,
              "description": task.description, "seed_train": SEED_TRAIN, "seed_test": SEED_TEST,
              "n_train": n_train, "n_test": n_test, "circuitlab_version": __version__}
    if task.depends_on_corpus:
        header["corpus_hash"] = task.corpus_hash or (context.corpus_hash if context else None)
        header["tokenizer_hash"] = task.tokenizer_hash or (context.tokenizer_hash if context else None)
    return header


def standard_pairs(task: Task, n_train: int = N_TRAIN, n_test: int = N_TEST
                   ) -> tuple[list[PromptPair], list[PromptPair]]:
    """The standard (train, test) sets, generated with the fixed seeds; no prompt is in both."""
    train = task.make_pairs(max(n_train, N_TRAIN), SEED_TRAIN, "train")
    seen = {q for p in train[:N_TRAIN] for q in (p.prompt_a, p.prompt_b)}
    # Over-generate test pairs so that dropping the ones that collide with train still leaves n_test.
    test = [p for p in task.make_pairs(2 * n_test + 16, SEED_TEST, "test")
            if p.prompt_a not in seen and p.prompt_b not in seen][:n_test]
    test_prompts = {q for p in test for q in (p.prompt_a, p.prompt_b)}
    train = [p for p in train if p.prompt_a not in test_prompts and p.prompt_b not in test_prompts]
    return train[:n_train], test


def write_taskset(path: str | os.PathLike, task: Task, context: TaskContext | None = None,
                  n_train: int = N_TRAIN, n_test: int = N_TEST) -> TaskSet:
    """Generate the standard sets of ``task`` and write them as a benchmark task file (JSONL)."""
    from .files import write_bytes

    train, test = standard_pairs(task, n_train, n_test)
    header = make_taskset_header(task, context, len(train), len(test))
    lines = [json.dumps(header)]
    lines += [json.dumps(pair_to_record(p, "train")) for p in train]
    lines += [json.dumps(pair_to_record(p, "test")) for p in test]
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    return TaskSet(header=header, train=tuple(train), test=tuple(test))


def _stale_reason(task: Task, header: dict, context: TaskContext | None) -> str | None:
    """Why a corpus-mined task's file does not fit the task (another corpus or tokenizer), or None."""
    if not task.depends_on_corpus:
        return None
    for key in ("corpus_hash", "tokenizer_hash"):
        current = getattr(task, key) or (getattr(context, key) if context is not None else None)
        if current is None:
            return f"the task does not say which {key.split('_')[0]} it was cut from"
        if header.get(key) != current:
            return f"its {key.replace('_', ' ')} differs from this model's"
    return None


def load_pairs(task: Task, split: str, n: int | None = None, context: TaskContext | None = None
               ) -> list[PromptPair]:
    """The standard ``split`` ("train" or "test") pairs of ``task``: at most ``n`` (default: all).

    Read from ``benchmarks/tasks/<suite>/<task>.jsonl`` when that file exists and fits (a mined task's
    file must match the corpus and tokenizer the task was built with, else those of ``context``);
    otherwise generated in memory with the same fixed seeds, which gives the pairs the file would hold.
    """
    if split not in SPLITS:
        raise CircuitlabError(f"unknown split {split!r}; use 'train' or 'test'")
    path = taskset_path(task)
    if path.exists():
        taskset = _read_taskset_cached(str(path), path.stat().st_mtime_ns)
        stale = _stale_reason(task, taskset.header, context)
        if stale:
            _note_once(f"circuitlab: {path.name}: {stale}; generating {task.qualname} pairs in memory instead")
        elif n is None or n <= len(taskset.split(split)):
            return list(taskset.split(split)[:n])
    want = n if n is not None else (N_TRAIN if split == "train" else N_TEST)
    train, test = standard_pairs(task, n_train=want if split == "train" else N_TRAIN,
                                 n_test=want if split == "test" else N_TEST)
    pairs = train if split == "train" else test
    if len(pairs) < want:
        _note_once(f"circuitlab: {task.qualname} has only {len(pairs)} {split} pairs (asked for {want}); "
                   "its source has no more candidates")
    return pairs[:want]


_notes_seen: set[str] = set()


def _note_once(message: str) -> None:
    """A stderr note printed once per process (progress and caveats never go to stdout)."""
    if message not in _notes_seen:
        _notes_seen.add(message)
        print(message, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# Evaluation


def evaluate(model: Any, tokenizer: Any, pairs: Sequence[PromptPair], device: Any = "cpu",
             batch_size: int = 64) -> dict:
    """The full model on ``pairs``: per-prompt mean binary CE (``loss``), ``accuracy`` and ``n_pairs``.

    Also ``accuracy_a``/``accuracy_b`` (A and B prompts separately: a model that always prefers one
    token scores 1.0/0.0) and ``pair_loss`` (the paper's two-sided sum over a pair, 2 x ``loss``).
    Prompts longer than the model's context keep their last tokens.
    """
    import torch

    if not pairs:
        return {"loss": None, "accuracy": None, "accuracy_a": None, "accuracy_b": None,
                "pair_loss": None, "n_pairs": 0}
    max_len = getattr(getattr(model, "config", None), "n_ctx", None)
    losses, wins = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = encode_pairs(pairs[start:start + batch_size], tokenizer, max_len=max_len).to(device)
            logits, _ = model(batch.ids)
            last = last_logits(logits, batch)
            losses.append(binary_ce(last, batch.target, batch.contrast).cpu())
            right = last.gather(1, batch.target[:, None]).squeeze(1)
            wrong = last.gather(1, batch.contrast[:, None]).squeeze(1)
            wins.append((right > wrong).float().cpu())
    loss, win = torch.cat(losses), torch.cat(wins)
    return {"loss": float(loss.mean()), "accuracy": float(win.mean()),
            "accuracy_a": float(win[0::2].mean()), "accuracy_b": float(win[1::2].mean()),
            "pair_loss": float(2 * loss.mean()), "n_pairs": len(pairs)}
