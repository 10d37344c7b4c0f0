"""The ``mined`` task suite: tasks cut from held-out files of the real corpus.

The model never trained on these files (they are the corpus' validation split). Python's
``tokenize`` finds real positions; each prompt is the real text up to the position, starting at a
line start (plus a few earlier lines for context), and the answer is the token the model's tokenizer
produces there. A pair joins two real positions whose answers differ, and records where each prompt
came from (``relpath:line`` of the position).

- ``mined_quote``: the closing quote of a one-line string. A single-quoted and a double-quoted
  string whose closing tokens differ only in the quote (``')`` vs ``")``, ``',`` vs ``",``).
- ``mined_bracket``: a closing ``]`` inside another open bracket (its token: ``]``, ``],``, ``])\\n``
  ...) vs a ``]`` that closes the last open bracket and ends the line (``]\\n``).

Train and test pairs use disjoint positions (a position's split is fixed by a hash of its source).

``--mine-from DIR`` (``TaskContext.mine_from``) cuts the same tasks from every file of another folder
instead of the corpus' held-out files. The training corpus' file split does not apply there, so all
of its files are used, and the position split above divides them: a hash of ``relpath:line`` (relpath
under DIR) sends one position in ``TEST_EVERY`` to the test split. Pruning and the reported figures
then use disjoint positions of DIR, as they do with the corpus.
No torch here.
"""

from __future__ import annotations

import hashlib
import io
import random
import tokenize
from collections.abc import Callable, Iterator

import attrs

from circuitlab.tasks import PromptPair, Task, TaskContext

#: A prompt's own code (from the line start to the position) may be at most this long...
MAX_CORE_CHARS = 120
#: ...and earlier lines are added as context while the whole prompt stays within this many characters.
MAX_PROMPT_CHARS = 100
#: One position in this many goes to the test split.
TEST_EVERY = 4
#: At most this many positions per file and group, evenly spread, so that one table-like file (say a
#: codec's 256 one-character strings) cannot dominate a task.
MAX_PER_FILE = 24


@attrs.frozen(kw_only=True)
class Site:
    """A real code position: the text before it, the token that follows, and where it is."""

    prompt: str
    answer: str
    source: str  # "relpath:line"
    group: str  # quote: "'" or '"'; bracket: "nested" or "outer"

    @property
    def split(self) -> str:
        h = int(hashlib.sha256(self.source.encode()).hexdigest(), 16)
        return "test" if h % TEST_EVERY == 0 else "train"


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def _python_tokens(text: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):  # old or broken files: skip them
        return []


def _with_context(text: str, offsets: list[int], first_line: int, pos: int) -> str | None:
    """Text from the start of ``first_line`` (1-based) to ``pos``, with earlier lines if they fit."""
    start = offsets[first_line - 1]
    if pos - start > MAX_CORE_CHARS:
        return None
    line = first_line
    while line > 1 and pos - offsets[line - 2] <= MAX_PROMPT_CHARS:
        line -= 1
    return text[offsets[line - 1]:pos]


class AnswerReader:
    """The token that follows a prompt in real text: from the model's tokenizer when there is one,
    else the pre-tokenizer's piece (the same regex every circuitlab tokenizer uses)."""

    def __init__(self, tokenizer: object = None):
        self.tokenizer = tokenizer
        if tokenizer is None:
            from tokenizers import Regex, pre_tokenizers

            from circuitlab.data.tokenizer import PRETOKENIZE_PATTERN

            self._split = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")

    def __call__(self, prompt: str, rest: str) -> str | None:
        if self.tokenizer is None:
            pieces = self._split.pre_tokenize_str(rest)
            return pieces[0][0] if pieces else None
        ids = self.tokenizer.encode(prompt).ids
        full = self.tokenizer.encode(prompt + rest).ids
        if full[:len(ids)] != ids or len(full) == len(ids):
            return None  # the prompt's last token merges with the answer: no clean boundary here
        return self.tokenizer.decode([full[len(ids)]])

    def is_one_token(self, text: str) -> bool:
        if self.tokenizer is None:
            return True  # checked later against the model's tokenizer (check_tokens)
        ids = self.tokenizer.encode(text).ids
        return len(ids) == 1 and self.tokenizer.decode(ids) == text


def _spread(sites: list[Site]) -> list[Site]:
    """At most MAX_PER_FILE sites of each group, evenly spaced through the file."""
    out = []
    for group in sorted({s.group for s in sites}):
        mine = [s for s in sites if s.group == group]
        step = len(mine) / MAX_PER_FILE
        out += mine if step <= 1 else [mine[int(i * step)] for i in range(MAX_PER_FILE)]
    return out


def mine_quote_sites(files: tuple[tuple[str, str], ...], read: AnswerReader) -> list[Site]:
    """Closing quotes of one-line, unprefixed, single- or double-quoted strings."""
    found = []
    for relpath, text in files:
        sites: list[Site] = []
        offsets = _line_offsets(text)
        for tok in _python_tokens(text):
            s = tok.string
            if (tok.type != tokenize.STRING or tok.start[0] != tok.end[0] or s[0] not in "'\""
                    or s.startswith(("'''", '"""'))):
                continue
            pos = offsets[tok.end[0] - 1] + tok.end[1] - 1  # the closing quote
            prompt = _with_context(text, offsets, tok.start[0], pos)
            answer = read(prompt, text[pos:pos + 24]) if prompt else None
            if answer and answer[0] == s[0]:
                sites.append(Site(prompt=prompt, answer=answer, source=f"{relpath}:{tok.end[0]}", group=s[0]))
        found += _spread(sites)
    return found


def mine_bracket_sites(files: tuple[tuple[str, str], ...], read: AnswerReader) -> list[Site]:
    """Closing ``]``: nested (another bracket is still open) or outer (the last one, ending the line)."""
    found = []
    for relpath, text in files:
        offsets = _line_offsets(text)
        sites: list[Site] = []
        stack: list[tokenize.TokenInfo] = []
        for tok in _python_tokens(text):
            if tok.type != tokenize.OP:
                continue
            if tok.string in "([{":
                stack.append(tok)
                continue
            if tok.string not in ")]}" or not stack:
                continue
            opener = stack.pop()
            if tok.string != "]":
                continue
            first = stack[0] if stack else opener  # the prompt must hold every bracket still open
            pos = offsets[tok.start[0] - 1] + tok.start[1]
            prompt = _with_context(text, offsets, first.start[0], pos)
            answer = read(prompt, text[pos:pos + 24]) if prompt else None
            if not answer or answer[0] != "]":
                continue
            group = "nested" if stack else "outer"
            if group == "outer" and (len(answer) == 1 or answer[1:].strip(" \n")):
                continue  # outer sites are the ones that end the line: "]\n", "]\n\n"
            sites.append(Site(prompt=prompt, answer=answer, source=f"{relpath}:{tok.start[0]}", group=group))
        found += _spread(sites)
    return found


def quote_combos(sites: list[Site], read: AnswerReader) -> list[tuple[list[Site], list[Site]]]:
    """Groups of (single-quoted, double-quoted) sites whose answers differ only in the quote."""
    by_suffix: dict[str, tuple[list[Site], list[Site]]] = {}
    for site in sites:
        single, double = by_suffix.setdefault(site.answer[1:], ([], []))
        (single if site.group == "'" else double).append(site)
    return [(a, b) for suffix, (a, b) in sorted(by_suffix.items())
            if a and b and read.is_one_token("'" + suffix) and read.is_one_token('"' + suffix)]


def bracket_combos(sites: list[Site]) -> list[tuple[list[Site], list[Site]]]:
    """(nested, outer) site groups whose answers differ: one group per outer answer."""
    outer_answers = sorted({s.answer for s in sites if s.group == "outer"})
    groups = []
    for answer in outer_answers:
        nested = [s for s in sites if s.group == "nested" and s.answer != answer]
        outer = [s for s in sites if s.group == "outer" and s.answer == answer]
        if nested and outer:
            groups.append((nested, outer))
    return groups


def _combo_indices(total: int, rng: random.Random) -> Iterator[int]:
    """Distinct indices in [0, total) in a seeded order; the order does not depend on how many are taken."""
    if total <= 200_000:
        order = list(range(total))
        rng.shuffle(order)
        yield from order
        return
    seen: set[int] = set()
    while len(seen) < total:
        i = rng.randrange(total)
        if i not in seen:
            seen.add(i)
            yield i


def pairs_from_groups(groups: list[tuple[list[Site], list[Site]]], n: int, rng: random.Random) -> list[PromptPair]:
    """Up to ``n`` distinct pairs (A from the first list of a group, B from the second)."""
    sizes = [len(a) * len(b) for a, b in groups]
    out = []
    for index in _combo_indices(sum(sizes), rng):
        if len(out) >= n:
            break
        g = 0
        while index >= sizes[g]:
            index -= sizes[g]
            g += 1
        a_sites, b_sites = groups[g]
        a, b = a_sites[index // len(b_sites)], b_sites[index % len(b_sites)]
        out.append(PromptPair(prompt_a=a.prompt, prompt_b=b.prompt, token_a=a.answer, token_b=b.answer,
                              source_a=a.source, source_b=b.source))
    return out


_MINED_CACHE: dict[tuple, dict[str, list[Site]]] = {}


class MinedSuite:
    """Tasks cut from held-out files of the real corpus (closing quotes, closing brackets)."""

    def __init__(self, context: TaskContext | None = None):
        self.context = context if context is not None else TaskContext()
        self.read = AnswerReader(self.context.tokenizer)
        self._tokenizer_hash = self.context.tokenizer_hash  # hashing a tokenizer costs a few ms: once

    def _sites(self) -> dict[str, list[Site]]:
        key = (self.context.corpus_hash, self._tokenizer_hash, len(self.context.heldout_files))
        cached = _MINED_CACHE.get(key) if self.context.corpus_hash else None
        if cached is None:
            files = self.context.heldout_files
            cached = {"quote": mine_quote_sites(files, self.read), "bracket": mine_bracket_sites(files, self.read)}
            if self.context.corpus_hash:
                _MINED_CACHE[key] = cached
        return cached

    def _groups(self, kind: str, split: str | None) -> list[tuple[list[Site], list[Site]]]:
        sites = [s for s in self._sites()[kind] if split is None or s.split == split]
        return quote_combos(sites, self.read) if kind == "quote" else bracket_combos(sites)

    def _task(self, name: str, kind: str, description: str) -> Task:
        def generate_split(n: int, seed: int, split: str | None) -> list[PromptPair]:
            rng = random.Random(f"{name}:{seed}:{split or 'all'}")
            return pairs_from_groups(self._groups(kind, split), n, rng)

        generate: Callable[[int, int], list[PromptPair]] = lambda n, seed: generate_split(n, seed, None)  # noqa: E731
        return Task(name=name, description=description, suite="mined", generate=generate,
                    generate_split=generate_split, depends_on_corpus=True,
                    corpus_hash=self.context.corpus_hash, tokenizer_hash=self._tokenizer_hash)

    def tasks(self) -> list[Task]:
        return [
            self._task("mined_quote", "quote",
                       "close a real one-line string from held-out code: the single vs double quote token"),
            self._task("mined_bracket", "bracket",
                       "close a real ']' from held-out code: nested in another bracket vs ending the line ']\\n'"),
        ]
