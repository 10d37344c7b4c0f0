"""The ``python`` task suite: the paper's Python tasks (Gao et al. 2025, Table 1), generated from templates.

Every pair is built from one random "frame" (a ``def`` line, a method or a nested block, and a few
realistic preamble lines) shared by both prompts, so the two prompts differ only where the task
says they do. Identifiers, values, quotes and indentation are drawn at random, so no single string
can be memorised. In most tasks both prompts end in the same token, so the answer depends on context
further back than the last token (a bigram table cannot solve them).

Contrast strings are tokens of the project's 2048-token BPE. Where the paper's string is not one
token there, the task contrasts the first token that differs instead; each description says so.
No torch here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from circuitlab.tasks import PromptPair, Task

#: Short, frequent identifiers whose " name" form is one BPE token: the answers of the copy tasks.
#: Kept to names that are single tokens even in a BPE trained on a couple of dozen stdlib files, since a
#: task with any answer that is not one token is unusable for that tokenizer.
COPY_NAMES = ("x", "y", "a", "b", "i", "j", "n", "k", "s", "t", "name", "value", "key", "data", "node",
              "item", "path", "result", "text", "start", "end", "line", "index", "obj")
#: Identifiers for task variables that are not answers (may be several tokens).
VAR_NAMES = ("x", "y", "name", "value", "data", "node", "item", "line", "result", "text", "key", "obj",
             "entry", "values", "items", "parts", "names", "chunk", "words", "lines", "keys", "seen")
#: Names used only by the shared frame and preamble, disjoint from the task pools above.
FRAME_NAMES = ("info", "ctx", "token", "pos", "offset", "limit", "buf", "options", "state", "config",
               "prefix", "level", "flags", "other", "attrs", "kwargs", "source", "target", "mode", "tmp")
FUNC_NAMES = ("process", "handle", "run", "update", "build", "visit", "render", "check", "convert", "reset",
              "flush", "setup", "parse", "format", "apply", "collect", "emit", "feed", "close", "main",
              "_get", "_make", "_read_block", "get_value", "add_item", "_update_state")
ATTR_NAMES = ("_lock", "_cache", "name", "state", "_buffer", "items", "parent", "_closed", "encoding", "level")
WORDS = ("name", "value", "error", "file", "data", "type", "line", "key", "path", "mode", "default", "size",
         "text", "utf", "ascii", "strict", "replace", "ignore", "read", "close", "start", "end", "item",
         "invalid", "missing", "unknown", "expected", "argument", "header", "result", "index", "count")
COLLECTIONS = ("items", "self.items", "values", "lines", "data", "names", "args", "parts", "keys", "seq",
               "self._data", "words", "entries", "nodes", "children", "fields")


def _pick(rng: random.Random, pool: tuple[str, ...], avoid: tuple[str, ...] = ()) -> str:
    choices = [p for p in pool if p not in avoid]
    return rng.choice(choices)


def _picks(rng: random.Random, pool: tuple[str, ...], k: int, avoid: tuple[str, ...] = ()) -> list[str]:
    return rng.sample([p for p in pool if p not in avoid], k)


@attrs.frozen
class Frame:
    """Text both prompts of a pair start with, and the indentation the task's lines continue at."""

    head: str
    indent: str


def _preamble_line(rng: random.Random, ind: str) -> str:
    """One realistic statement at indentation ``ind`` (names from FRAME_NAMES only)."""
    a, b = _picks(rng, FRAME_NAMES, 2)
    word, attr = rng.choice(WORDS), rng.choice(ATTR_NAMES)
    q = rng.choice("'\"")
    forms = (
        f"{a} = {b}.get({q}{word}{q})",
        f"{a} = len({b})",
        f"{a} = {b}.strip()",
        f"if {a} is None:\n{ind}    {a} = {b}",
        f"{a} = []",
        f"{a} = self.{attr}",
        f"# {rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(WORDS)}",
        f"{a} = {rng.choice(FUNC_NAMES)}({b})",
        f"assert {a} is not None",
        f"self.{attr} = {a}",
        f"{a} += {rng.randint(1, 9)}",
        f"{a}.append({b})",
        f"{a} = {b} or {{}}",
        f"if not {a}:\n{ind}    return",
    )
    return ind + rng.choice(forms) + "\n"


def make_frame(rng: random.Random, max_preamble: int = 2) -> Frame:
    """A function, a method or a nested block, with 0..max_preamble preamble statements."""
    func, p = rng.choice(FUNC_NAMES), _pick(rng, FRAME_NAMES)
    kind = rng.randrange(3)
    if kind == 0:
        head, ind = f"def {func}({p}):\n", "    "
    elif kind == 1:
        head, ind = f"    def {func}(self, {p}):\n", "        "
    else:
        head, ind = f"def {func}({p}):\n    if {p}:\n", "        "
    for _ in range(rng.randint(0, max_preamble)):
        head += _preamble_line(rng, ind)
    return Frame(head=head, indent=ind)


def _pair(frame: Frame, body_a: str, body_b: str, token_a: str, token_b: str) -> PromptPair:
    return PromptPair(prompt_a=frame.head + body_a, prompt_b=frame.head + body_b, token_a=token_a,
                      token_b=token_b)


# ----------------------------------------------------------------------------------------------------
# One function per task: (rng) -> PromptPair. Both prompts share the frame.


def single_double_quote(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    ind = frame.indent
    v, obj = _pick(rng, VAR_NAMES), _pick(rng, FRAME_NAMES)
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    opener = rng.choice((f"{v} = {obj}.get(", f"{v} = str(", "print(", f"return {obj}.get(",
                         f"{obj}.append(", "raise ValueError(", f"if {obj}.startswith(", f"{v} = getattr({obj}, "))

    def body(q: str) -> str:
        return f"{ind}{opener}{q}{words}"

    return _pair(frame, body('"'), body("'"), '")', "')")


def bracket_counting(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    v = _pick(rng, VAR_NAMES)
    rows, cols = rng.randint(2, 3), rng.randint(2, 3)
    if rng.random() < 0.7:
        elems = [str(rng.randint(0, 99)) for _ in range(rows * cols)]
    else:
        elems = [rng.choice("abcdefghkmnpxyz") for _ in range(rows * cols)]
    grid = [elems[r * cols:(r + 1) * cols] for r in range(rows)]
    nested = "[" + "], ".join("[" + ", ".join(row) for row in grid[:-1]) + "], [" + ", ".join(grid[-1])
    flat = "[" + ", ".join(elems)
    return _pair(frame, f"{frame.indent}{v} = {nested}", f"{frame.indent}{v} = {flat}", "]", "]\n")


def _set_or_string(rng: random.Random, v: str) -> PromptPair:
    frame = make_frame(rng, max_preamble=1)
    ind = frame.indent
    x = _pick(rng, ("x", "name", "item", "line", "c", "key", "word", "part"), avoid=(v,))
    coll = rng.choice(COLLECTIONS)
    empty = rng.choice(("''", '""'))
    middle = f"{ind}for {x} in {coll}:\n"
    if rng.random() < 0.4:
        middle += f"{ind}    if {x}:\n"
        inner = ind + "        "
    else:
        inner = ind + "    "
    return _pair(frame, f"{ind}{v} = set()\n{middle}{inner}{v}", f"{ind}{v} = {empty}\n{middle}{inner}{v}",
                 ".add", " +=")


def set_or_string(rng: random.Random) -> PromptPair:
    return _set_or_string(rng, _pick(rng, ("result", "seen", "names", "out", "chars", "words", "keys", "text",
                                           "found", "s", "acc", "buf")))


def set_or_string_fixedvarname(rng: random.Random) -> PromptPair:
    return _set_or_string(rng, "current")


def for_while(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    # Names that are natural after both keywords ("for node in", "while node:").
    x = _pick(rng, ("line", "node", "item", "key", "name", "part", "entry", "c", "arg", "path", "child", "token"))
    return _pair(frame, f"{frame.indent}for {x}", f"{frame.indent}while {x}", " in", ":\n")


def else_elif(rng: random.Random) -> PromptPair:
    frame = make_frame(rng, max_preamble=1)
    ind = frame.indent
    v = _pick(rng, COPY_NAMES)
    val = rng.choice(("0", "1", "None", "'r'", "'w'", "self.name", "-1", "2"))
    op = rng.choice(("==", "is", "<", ">", "!="))
    ret = rng.choice(("return None", "return True", "pass", f"{v} = 0", "raise ValueError", "return " + v))
    head = f"{ind}if {v} {op} {val}:\n{ind}    {ret}\n"
    return _pair(frame, f"{head}{ind}else", f"{head}{ind}elif", ":\n", f" {v}")


def if_equals(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    v = _pick(rng, VAR_NAMES)
    return _pair(frame, f"{frame.indent}if {v}", f"{frame.indent}{v}", " ==", " =")


def lambda_func(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    name = rng.choice(("key", "func", "callback", "check", "get", "_convert", "sort_key", "handler", "pred"))
    args = ", ".join(_picks(rng, ("x", "y", "a", "b", "k", "v", "item", "value", "name", "i"), rng.randint(2, 3)))
    return _pair(frame, f"{frame.indent}{name} = lambda {args}", f"{frame.indent}def {name}({args}", ":", "):\n")


def with_open(rng: random.Random) -> PromptPair:
    noun = rng.choice(("config", "file", "data", "lines", "text", "cache", "index", "state", "log", "table"))
    read_verb, write_verb = rng.choice((("read", "write"), ("load", "save"), ("load", "dump"), ("get", "put"),
                                        ("read", "store"), ("parse", "write")))
    p = rng.choice(("path", "filename", "fn", "file", "self.path", "fname", "name"))
    param = p if not p.startswith("self.") else "self"
    q = rng.choice("'\"")
    pre = "".join(_preamble_line(rng, "    ") for _ in range(rng.randint(0, 1)))

    def prompt(verb: str) -> str:
        return f"def {verb}_{noun}({param}):\n{pre}    with open({p}, {q}"

    return PromptPair(prompt_a=prompt(read_verb), prompt_b=prompt(write_verb), token_a="r", token_b="w")


def bracket_brace(rng: random.Random) -> PromptPair:
    frame = make_frame(rng, max_preamble=1)
    v = _pick(rng, VAR_NAMES)
    keys = _picks(rng, WORDS, 2 * rng.randint(1, 2) + 1)
    q = rng.choice("'\"")
    quoted = [f"{q}{k}{q}" for k in keys[:-1]]
    as_dict = "{" + ", ".join(f"{quoted[i]}: {quoted[i + 1]}" for i in range(0, len(quoted), 2))
    as_list = "[" + ", ".join(quoted)
    last = f", {q}{keys[-1]}"
    return _pair(frame, f"{frame.indent}{v} = {as_dict}{last}", f"{frame.indent}{v} = {as_list}{last}", f"{q}:", f"{q},")


def enumerate_range(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    i, x = _picks(rng, ("i", "j", "n", "idx", "index", "k", "pos", "lineno"), 1)[0], _pick(rng, VAR_NAMES)
    return _pair(frame, f"{frame.indent}for {i}, {x} in", f"{frame.indent}for {i} in", " en", " range")


def var_swap(rng: random.Random) -> PromptPair:
    frame = make_frame(rng, max_preamble=1)
    a, b = _picks(rng, COPY_NAMES, 2)
    ind = frame.indent
    # The optional guard is the same in both prompts (either order swaps), so only the swap line differs.
    lead = f"{ind}if {a} > {b}:\n{ind}    " if rng.random() < 0.5 else ind
    return _pair(frame, f"{lead}{a}, {b} = {b},", f"{lead}{b}, {a} = {a},", f" {a}", f" {b}")


def while_return_true(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    return _pair(frame, f"{frame.indent}while True", f"{frame.indent}return True", ":\n", "\n")


def class_init(rng: random.Random) -> PromptPair:
    cls = rng.choice(("Node", "Item", "Entry", "Token", "Handler", "Record", "Point", "Field", "Reader", "Job"))
    a, b, c = _picks(rng, COPY_NAMES, 3, avoid=("self",))
    params = [a, b] + ([c] if rng.random() < 0.5 else [])
    rng.shuffle(params)
    head = f"class {cls}:\n    def __init__(self, {', '.join(params)}):\n"
    if rng.random() < 0.5:
        head += "        super().__init__()\n"
    return PromptPair(prompt_a=f"{head}        self.{a} =", prompt_b=f"{head}        self.{b} =",
                      token_a=f" {a}", token_b=f" {b}")


def final_kwarg(rng: random.Random) -> PromptPair:
    name = rng.choice(FUNC_NAMES)
    a, b = _picks(rng, VAR_NAMES + ("default", "timeout", "encoding", "mode", "strict"), 2)
    lead = rng.choice(("", "self, ", "cls, "))
    ind = "    " if lead else ""
    default = rng.choice(("None", "None", "False", "True", "0"))
    return PromptPair(prompt_a=f"{ind}def {name}({lead}{a}={default}, {b}", prompt_b=f"{ind}def {name}({lead}{a}, {b}",
                      token_a="=None", token_b="):\n")


def if_ternary(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    v = _pick(rng, VAR_NAMES)
    w, default = _pick(rng, FRAME_NAMES), rng.choice(("0", "''", "[]", "self.default", "-1", "{}"))
    return _pair(frame, f"{frame.indent}if {v} is None", f"{frame.indent}{w} = {default} if {v} is None", ":\n", " else")


def var_if(rng: random.Random) -> PromptPair:
    frame = make_frame(rng)
    v = _pick(rng, VAR_NAMES)
    const = rng.choice(("True", "False", "0", "1", "None"))
    return _pair(frame, f"{frame.indent}if {v} == {const}", f"{frame.indent}{v} = {const}", ":\n", "\n")


def indent_for(rng: random.Random) -> PromptPair:
    func, p = rng.choice(FUNC_NAMES), _pick(rng, FRAME_NAMES)
    x, coll = _pick(rng, VAR_NAMES), rng.choice(COLLECTIONS)
    cond = rng.choice((p, f"not {p}", f"{p} is None", f"len({p}) > 1"))
    head = f"def {func}({p}):\n    if {cond}:\n        {p} = {rng.choice(FUNC_NAMES)}({p})\n"
    # The loop is either after the if block or inside it; the next line is indented one level deeper.
    return PromptPair(prompt_a=f"{head}    for {x} in {coll}:\n", prompt_b=f"{head}        for {x} in {coll}:\n",
                      token_a=" " * 7, token_b=" " * 11)


def with_as(rng: random.Random) -> PromptPair:
    frame = make_frame(rng, max_preamble=1)
    p = rng.choice(("path", "filename", "fn", "self.path", "fname"))
    v = rng.choice(("f", "fp", "fh", "fd", "stream", "infile"))
    mode = rng.choice(("", "", ", 'rb'", ", 'w'", ", 'r'"))
    close_a, close_b = (")", ")\n") if not mode else ("')", "')\n")
    return _pair(frame, f"{frame.indent}with open({p}{mode[:-1]}", f"{frame.indent}{v} = open({p}{mode[:-1]}", close_a,
                 close_b)


def fstring_brace(rng: random.Random) -> PromptPair:
    frame = make_frame(rng, max_preamble=1)
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    label = rng.choice((words.capitalize(), words))
    # print only: logging calls take '%s' arguments, so a plain string there would not close early.
    # An f-string inserts the variable inside the string (" {"); a plain string closes first and passes
    # it as the next argument ('",'). Both prompts end in the same ':' token. ':",' is one pre-token run;
    # it splits as ':' + '",' only by this BPE's merges, so another corpus' tokenizer may drop pairs
    # (check_tokens reports it).
    return _pair(frame, f'{frame.indent}print(f"{label}:', f'{frame.indent}print("{label}:', " {", '",')


MODULES = ("os", "sys", "re", "time", "string", "warnings", "types", "io", "collections", "functools",
           "itertools", "operator", "typing", "json", "os.path", "email.utils", "importlib", "contextlib")


def from_import(rng: random.Random) -> PromptPair:
    """A module header: 'from M' continues with ' import', 'import M' ends the line."""
    head = rng.choice(("", '"""Utilities."""\n\n', "# Copyright (C) 2001 Python Software Foundation\n\n",
                       "from __future__ import annotations\n\n"))
    earlier = rng.sample(MODULES, rng.randint(0, 3))
    for mod in earlier:
        head += f"import {mod}\n" if rng.random() < 0.6 else f"from {mod} import {rng.choice(WORDS)}\n"
    mod = _pick(rng, MODULES, avoid=tuple(earlier))
    return PromptPair(prompt_a=f"{head}from {mod}", prompt_b=f"{head}import {mod}", token_a=" import", token_b="\n")


#: name -> (one-line description, pair function).
PYTHON_TASKS: dict[str, tuple[str, Callable[[random.Random], PromptPair]]] = {
    "single_double_quote": ("close a string with the quote it opened with: '\")' vs \"')\"", single_double_quote),
    "bracket_counting": ("close a nested list row ']' vs a flat list ']\\n' (']]' is not one token, so the "
                         "contrast is the first closing token)", bracket_counting),
    "set_or_string": ("'.add' vs ' +=' after a loop variable initialised as set() or as a string",
                      set_or_string),
    "set_or_string_fixedvarname": ("set_or_string with the variable always named 'current'",
                                   set_or_string_fixedvarname),
    "for_while": ("' in' after 'for x' vs ':\\n' after 'while x' (':' merges with the newline)", for_while),
    "else_elif": ("':\\n' after 'else' vs the tested variable after 'elif'", else_elif),
    "if_equals": ("' ==' after 'if x' (a condition) vs ' =' after 'x' (an assignment)", if_equals),
    "lambda_func": ("':' after 'f = lambda a, b' vs '):\\n' after 'def f(a, b' (two arguments, so both "
                    "prompts end in the same token)", lambda_func),
    "with_open": ("open mode 'r' vs 'w' in a read_*/load_* vs write_*/save_* function", with_open),
    "bracket_brace": ("\"':\" inside a dict vs \"',\" inside a list, after a string key (quote merges with "
                      "the punctuation)", bracket_brace),
    "enumerate_range": ("' en' (first token of ' enumerate') for 'for i, x in' vs ' range' for 'for i in'",
                        enumerate_range),
    "var_swap": ("copy the first name in 'a, b = b, a': ' a' vs ' b'", var_swap),
    "while_return_true": ("':\\n' after 'while True' vs '\\n' after 'return True'", while_return_true),
    "class_init": ("copy the attribute name in 'self.x = x' inside __init__", class_init),
    "final_kwarg": ("'=None' for an argument after a keyword argument vs '):\\n' after positional ones",
                    final_kwarg),
    "if_ternary": ("':\\n' after a statement 'if x is None' vs ' else' inside a conditional expression",
                   if_ternary),
    "var_if": ("':\\n' after 'if x == C' vs '\\n' after 'x = C'", var_if),
    "indent_for": ("indentation after a for loop at depth 1 (7 spaces) vs depth 2 (11 spaces); the line's "
                   "first space joins the next token", indent_for),
    "fstring_brace": ("' {' inserting a variable in 'print(f\"label:' vs '\",' passing it as the next argument "
                      "in 'print(\"label:'", fstring_brace),
    "from_import": ("' import' after 'from M' vs '\\n' after 'import M' (not one of the paper's 20)", from_import),
    "with_as": ("')' before ' as' in 'with open(...)' vs ')\\n' in 'f = open(...)' (')' merges with the "
                "newline)", with_as),
}


def pair_stream(make: Callable[[random.Random], PromptPair], name: str, n: int, seed: int) -> list[PromptPair]:
    """``n`` distinct pairs from a seeded generator; a prefix of the same stream for a larger ``n``."""
    rng = random.Random(f"{name}:{seed}")
    out: list[PromptPair] = []
    seen: set[tuple[str, str]] = set()
    attempts = 0
    while len(out) < n and attempts < 50 * n + 100:
        attempts += 1
        pair = make(rng)
        key = (pair.prompt_a, pair.prompt_b)
        if key not in seen:
            seen.add(key)
            out.append(pair)
    return out


def make_task(name: str) -> Task:
    description, make = PYTHON_TASKS[name]
    return Task(name=name, description=description, suite="python",
                generate=lambda n, seed: pair_stream(make, name, n, seed))


class PythonSuite:
    """The paper's Python tasks, generated from templates (no corpus needed)."""

    def __init__(self, context: object = None):
        self.context = context

    def tasks(self) -> list[Task]:
        return [make_task(name) for name in PYTHON_TASKS]
