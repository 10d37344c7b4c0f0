"""Token checks and encoding: task pairs as token ids of one tokenizer.

A contrast string must be exactly one token of the model's tokenizer, and it must be the token the
tokenizer really produces after the prompt (``encode(prompt + token) == encode(prompt) + [token]``).
``check_tokens`` reports a task as unusable, naming the string and how it tokenizes, and drops the
pairs whose boundary merges differently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .types import SEED_TRAIN, PromptPair, Task, TaskBatch, TokenCheck


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


def token_pieces(tokenizer: Any, text: str) -> list[str]:
    """How ``text`` tokenizes, as readable strings (``[']', ']']``)."""
    return [tokenizer.decode([i]) for i in tokenizer.encode(text).ids]


def boundary_ok(tokenizer: Any, prompt: str, token_id: int) -> bool:
    """True when appending the target token's text does not re-tokenize the end of the prompt."""
    ids = tokenizer.encode(prompt).ids
    text = tokenizer.decode([token_id])
    return tokenizer.encode(prompt + text).ids == [*ids, token_id]


def _boundaries_ok(tokenizer: Any, checks: list[tuple[str, int]]) -> list[bool]:
    """``boundary_ok`` for many (prompt, token id) at once: one ``encode_batch`` call where the tokenizer
    has one (the Rust side encodes the batch: 0.5 s for the tasks of ``make run`` against 1.1 s one call a prompt)."""
    if not hasattr(tokenizer, "encode_batch"):
        return [boundary_ok(tokenizer, prompt, tid) for prompt, tid in checks]
    texts = {tid: tokenizer.decode([tid]) for tid in {tid for _, tid in checks}}
    encoded = tokenizer.encode_batch([x for prompt, tid in checks for x in (prompt, prompt + texts[tid])])
    return [encoded[2 * i + 1].ids == [*encoded[2 * i].ids, tid] for i, (_, tid) in enumerate(checks)]


def _contrast_ids(pairs: list[PromptPair], tokenizer: Any) -> tuple[dict[str, int], list[str]]:
    ids: dict[str, int] = {}
    bad: list[str] = []
    for s in dict.fromkeys(t for p in pairs for t in (p.token_a, p.token_b)):
        tid = single_token_id(tokenizer, s)
        if tid is None or tokenizer.decode([tid]) != s:
            bad.append(f"{s!r} tokenizes as {token_pieces(tokenizer, s)!r}")
        else:
            ids[s] = tid
    return ids, bad


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
    ids, bad = _contrast_ids(pairs, tokenizer)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return TokenCheck(usable=False, problem=f"contrast string {bad[0]}{more}; it must be one token")
    kept, first_failure = [], None
    ok = _boundaries_ok(tokenizer, [(prompt, ids[tok]) for p in pairs
                                    for prompt, tok in ((p.prompt_a, p.token_a), (p.prompt_b, p.token_b))])
    for i, p in enumerate(pairs):
        failed = next((prompt for prompt, good in ((p.prompt_a, ok[2 * i]), (p.prompt_b, ok[2 * i + 1]))
                       if not good), None)
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
