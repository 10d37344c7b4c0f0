"""Task suites: pair generation, token checks, the task loss, and the standard benchmark files."""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circuitlab import tasks as T
from circuitlab.builtins.tasks_mined import MinedSuite
from circuitlab.builtins.tasks_python import PYTHON_TASKS, PythonSuite
from circuitlab.errors import CircuitlabError, UnknownNameError

PYTHON = {t.name: t for t in PythonSuite().tasks()}
REQUIRED = ("single_double_quote", "bracket_counting", "set_or_string", "for_while", "else_elif", "if_equals",
            "lambda_func", "with_open", "bracket_brace", "enumerate_range", "var_swap", "while_return_true")
# else_elif is the one task whose prompts end in different tokens ('else' vs 'elif'), as in the paper.
DIFFERENT_LAST_TOKEN = {"else_elif"}


@pytest.fixture(scope="session")
def project_tokenizer():
    """The project's BPE on the stdlib (trained once into the session's private cache)."""
    return T.default_task_context().tokenizer


@pytest.fixture(scope="session")
def small_context(small_corpus, project_tokenizer) -> T.TaskContext:
    """The small test corpus' files, all treated as held-out, with the project tokenizer."""
    files = tuple((p.relative_to(small_corpus).as_posix(), p.read_text(encoding="utf-8"))
                  for p in sorted(small_corpus.rglob("*.py")))
    return T.TaskContext(heldout_files=files, corpus_hash="small-test-corpus", tokenizer=project_tokenizer)


def edits(a, b) -> int:
    """Levenshtein distance between two sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@functools.cache
def tokenizer():
    """The project tokenizer, for hypothesis tests (a fixture argument would be printed on failure)."""
    return T.default_task_context().tokenizer


# ---------------------------------------------------------------------------------------------------
# Generation


def test_python_suite_has_the_required_tasks():
    assert set(REQUIRED) <= set(PYTHON)
    assert len(PYTHON) >= 12
    for task in PYTHON.values():
        assert task.suite == "python"
        assert task.description and "\n" not in task.description


@given(name=st.sampled_from(sorted(PYTHON_TASKS)), seed=st.integers(0, 10**6), n=st.integers(1, 12))
def test_python_generation_is_seeded_and_prefix_stable(name, seed, n):
    task = PYTHON[name]
    first = task.make_pairs(n, seed)
    assert first == task.make_pairs(n, seed)
    assert len(first) == n
    assert task.make_pairs(n + 5, seed)[:n] == first  # a larger n extends the same stream
    assert len({(p.prompt_a, p.prompt_b) for p in first}) == n  # no duplicate pairs


@given(name=st.sampled_from(sorted(PYTHON_TASKS)), seed=st.integers(0, 10**6))
def test_python_pairs_differ_minimally_and_hold_both_answers(name, seed):
    pairs = PYTHON[name].make_pairs(8, seed)
    for p in pairs:
        assert p.token_a != p.token_b and p.prompt_a != p.prompt_b
        # The two prompts share their frame and differ in a few tokens only.
        ids_a, ids_b = tokenizer().encode(p.prompt_a).ids, tokenizer().encode(p.prompt_b).ids
        assert edits(ids_a, ids_b) <= min(10, max(len(ids_a), len(ids_b)) // 2), (p.prompt_a, p.prompt_b)
        # Both answers are present as real tokens: each contrast string is one token of the tokenizer.
        assert T.single_token_id(tokenizer(), p.token_a) is not None
        assert T.single_token_id(tokenizer(), p.token_b) is not None


@given(name=st.sampled_from(sorted(PYTHON_TASKS)), seed=st.integers(0, 10**6))
def test_python_prompts_are_short_and_tokens_fit(name, seed):
    project_tokenizer = tokenizer()
    pairs = PYTHON[name].make_pairs(4, seed)
    check = T.check_tokens(pairs, project_tokenizer)
    assert check.usable, check.problem
    assert check.n_dropped == 0
    for p in pairs:
        ids_a, ids_b = project_tokenizer.encode(p.prompt_a).ids, project_tokenizer.encode(p.prompt_b).ids
        assert max(len(ids_a), len(ids_b)) <= 72
        if name not in DIFFERENT_LAST_TOKEN:
            # The answer depends on context before the last token: a bigram table cannot solve the task.
            assert ids_a[-1] == ids_b[-1], (p.prompt_a, p.prompt_b)


@given(seed=st.integers(0, 10**6), n=st.integers(1, 10), kind=st.sampled_from(["mined_quote", "mined_bracket"]))
def test_mined_pairs_are_real_positions(small_context, seed, n, kind):
    task = {t.name: t for t in MinedSuite(small_context).tasks()}[kind]
    texts = dict(small_context.heldout_files)
    pairs = task.make_pairs(n, seed, "train")
    assert pairs == task.make_pairs(n, seed, "train")
    assert pairs, "the small corpus has quotes and brackets to mine"
    for p in pairs:
        assert p.token_a != p.token_b
        for prompt, token, source in ((p.prompt_a, p.token_a, p.source_a), (p.prompt_b, p.token_b, p.source_b)):
            relpath, line = source.rsplit(":", 1)
            text = texts[relpath]
            # The prompt and its answer are real, consecutive text, and the answer is on the recorded line.
            starts, at = [], text.find(prompt + token)
            while at >= 0:
                starts.append(at)
                at = text.find(prompt + token, at + 1)
            assert any(text.count("\n", 0, i + len(prompt)) + 1 == int(line) for i in starts)
            assert token[0] in ("'", '"', "]")


def test_mined_splits_use_disjoint_positions(small_context):
    for task in MinedSuite(small_context).tasks():
        train, test = T.standard_pairs(task, n_train=64, n_test=32)
        assert train and test
        train_sources = {s for p in train for s in (p.source_a, p.source_b)}
        assert not train_sources & {s for p in test for s in (p.source_a, p.source_b)}


def test_mined_suite_without_heldout_files_yields_no_pairs():
    for task in MinedSuite(T.TaskContext()).tasks():
        assert task.make_pairs(5, 0) == []


# ---------------------------------------------------------------------------------------------------
# Token checks


def test_a_string_that_is_not_one_token_makes_the_task_unusable(project_tokenizer):
    pairs = [T.PromptPair(prompt_a="x = [[1, 2], [3, 4", prompt_b="x = [1, 2, 3, 4", token_a="]]", token_b="]\n")]
    check = T.check_tokens(pairs, project_tokenizer)
    assert not check.usable
    assert "']]' tokenizes as [']', ']']" in check.problem


def test_a_tokenizer_without_the_contrast_tokens(tmp_path):
    """A tiny BPE that has no '")' token: the quote task is unusable, and says why."""
    from circuitlab.data.corpus import Corpus, SourceFile
    from circuitlab.data.tokenizer import train_tokenizer

    files = (SourceFile(relpath="a.py", sha256="0", split="train", text="def f(x):\n    return x + 1\n" * 20),)
    tiny = train_tokenizer(Corpus(root=str(tmp_path), files=files, hash="tiny"), vocab_size=280)
    check = T.check_tokens(PYTHON["single_double_quote"], tiny)
    assert not check.usable
    assert check.problem.startswith("contrast string '\")' tokenizes as ['\"', ')']")


def test_pairs_whose_boundary_merges_are_dropped(project_tokenizer):
    good = T.PromptPair(prompt_a="    for x", prompt_b="    while x", token_a=" in", token_b=":\n")
    # "]" followed by "\n" is the single token "]\n", so "\n" is never the next token after "... 4]".
    merged = T.PromptPair(prompt_a="x = [1, 2]", prompt_b="x = [1, 2", token_a="\n", token_b="]")
    check = T.check_tokens([good, merged], project_tokenizer)
    assert check.usable and check.n_dropped == 1 and check.pairs == (good,)
    only_bad = T.check_tokens([merged], project_tokenizer)
    assert not only_bad.usable and "boundary" in only_bad.problem


# ---------------------------------------------------------------------------------------------------
# Loss, accuracy and evaluate()


def test_task_loss_against_a_hand_computation():
    import torch

    logits = torch.tensor([[2.0, 0.5, 9.0],    # right 0, wrong 1: margin +1.5
                           [1.0, -1.0, 0.0]])  # right 1, wrong 0: margin -2.0
    target, contrast = torch.tensor([0, 1]), torch.tensor([1, 0])
    by_hand = [math.log(1 + math.exp(-1.5)), math.log(1 + math.exp(2.0))]
    # The same numbers as -log softmax over only the two candidates (the paper's formula, per prompt).
    assert by_hand[0] == pytest.approx(-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5))))
    assert T.binary_ce(logits, target, contrast).tolist() == pytest.approx(by_hand)
    assert float(T.task_loss(logits, target, contrast)) == pytest.approx(sum(by_hand) / 2)  # mean, not sum
    assert T.task_accuracy(logits, target, contrast) == 0.5


def test_evaluate_against_a_hand_computation(project_tokenizer):
    import torch

    pairs = PYTHON["for_while"].make_pairs(3, 0)
    id_in = project_tokenizer.encode(" in").ids[0]

    class PrefersIn(torch.nn.Module):
        """Every position: logit 2 for ' in', 0 for everything else."""

        def forward(self, idx):
            logits = torch.zeros(*idx.shape, project_tokenizer.get_vocab_size())
            logits[..., id_in] = 2.0
            return logits, None

    res = T.evaluate(PrefersIn(), project_tokenizer, pairs)
    right, wrong = math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(2.0))
    assert res["loss"] == pytest.approx((right + wrong) / 2)
    assert res["pair_loss"] == pytest.approx(right + wrong)  # the paper's two-sided convention
    assert (res["accuracy"], res["accuracy_a"], res["accuracy_b"], res["n_pairs"]) == (0.5, 1.0, 0.0, 3)
    assert T.evaluate(PrefersIn(), project_tokenizer, [])["n_pairs"] == 0


# ---------------------------------------------------------------------------------------------------
# Resolving names


def test_resolve_tasks_specs(small_context):
    everything = T.resolve_tasks(None, small_context)
    assert {t.suite for t in everything} >= {"python", "mined"}
    assert len(everything) >= 14
    assert [t.name for t in T.resolve_tasks("python:var_swap,for_while", small_context)] == ["var_swap", "for_while"]
    assert {t.name for t in T.resolve_tasks("mined", small_context)} == {"mined_quote", "mined_bracket"}
    with pytest.raises(UnknownNameError, match="did you mean 'python'"):
        T.resolve_tasks("pyton", small_context)
    with pytest.raises(UnknownNameError, match="did you mean 'var_swap'"):
        T.resolve_tasks("python:var_swop", small_context)


def test_a_third_party_suite_from_the_docs(monkeypatch, small_context):
    """The example in docs/plugins.md registers and runs like a built-in suite."""
    import types

    from circuitlab import plugins

    doc = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    section = doc.split("## Task suites", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("loops_plugin")
    exec(compile(code, "loops_plugin", "exec"), module.__dict__)
    monkeypatch.setattr(plugins.registry, "_registry", plugins.make_registry(extra_plugins=(module,), entrypoints=False))
    (task,) = T.resolve_tasks("loops", small_context)
    assert task.qualname == "loops:for_while"
    assert T.check_tokens(task, small_context.tokenizer).usable


# ---------------------------------------------------------------------------------------------------
# Standard benchmark files


def test_benchmark_files_are_the_seeded_sets():
    """Every built-in task has a file; python files equal what the generator makes with the seeds."""
    for task in list(PYTHON.values()) + MinedSuite(T.TaskContext()).tasks():
        path = T.taskset_path(task)
        assert path.exists(), f"run python -m circuitlab.tasks.generate_sets ({path} missing)"
        taskset = T.read_taskset(path)
        assert (len(taskset.train), len(taskset.test)) == (T.N_TRAIN, T.N_TEST)
        assert taskset.header["seed_train"] != taskset.header["seed_test"]
        train_prompts = {q for p in taskset.train for q in (p.prompt_a, p.prompt_b)}
        assert not train_prompts & {q for p in taskset.test for q in (p.prompt_a, p.prompt_b)}
    for name in ("for_while", "var_swap", "bracket_counting"):
        train, test = T.standard_pairs(PYTHON[name])
        taskset = T.read_taskset(T.taskset_path(PYTHON[name]))
        assert (list(taskset.train), list(taskset.test)) == (train, test), "stale file: regenerate it"


def test_load_pairs_falls_back_to_the_same_seeded_pairs(tmp_path, monkeypatch):
    task = PYTHON["if_equals"]
    from_file = T.load_pairs(task, "test", 20)
    monkeypatch.setenv("CIRCUITLAB_TASKSETS", str(tmp_path))  # no files here
    assert T.load_pairs(task, "test", 20) == from_file
    assert len(T.load_pairs(task, "train")) == T.N_TRAIN
    with pytest.raises(CircuitlabError, match="unknown split"):
        T.load_pairs(task, "validation")


def test_mined_file_of_another_corpus_is_regenerated(small_context, capsys, monkeypatch):
    from circuitlab import log

    monkeypatch.setattr(log, "_notes_seen", set())
    task = {t.name: t for t in MinedSuite(small_context).tasks()}["mined_bracket"]
    pairs = T.load_pairs(task, "test", 10, small_context)
    assert pairs == T.standard_pairs(task, n_test=10)[1]
    assert all(p.source_a.split(":")[0] in dict(small_context.heldout_files) for p in pairs)
    assert "generating mined:mined_bracket pairs in memory" in capsys.readouterr().err


@pytest.mark.parametrize("bad_line, problem", [
    ("{not json", "not valid JSON"),
    ('{"split": "dev", "prompt_a": "a", "prompt_b": "b", "token_a": "x", "token_b": "y"}', "'split' must be"),
    ('{"split": "train", "prompt_a": "a", "token_a": "x", "token_b": "y"}', "prompt_b"),
])
def test_malformed_task_file_names_file_and_line(tmp_path, bad_line, problem):
    header = json.dumps({"kind": T.TASKSET_KIND, "suite": "python", "task": "for_while", "seed_train": 0,
                         "seed_test": 1})
    good = json.dumps({"split": "train", "prompt_a": "for x", "prompt_b": "while x", "token_a": " in",
                       "token_b": ":\n"})
    path = tmp_path / "for_while.jsonl"
    path.write_text("\n".join([header, good, bad_line]) + "\n")
    with pytest.raises(CircuitlabError) as err:
        T.read_taskset(path)
    assert f"{path}:3: " in str(err.value) and problem in str(err.value)
    path.write_text(good + "\n")
    with pytest.raises(CircuitlabError, match=":1: the first line must be a header"):
        T.read_taskset(path)


def test_task_modules_do_not_import_torch():
    import subprocess

    code = ("import sys, circuitlab.tasks, circuitlab.cli, circuitlab.builtins.tasks, "
            "circuitlab.builtins.tasks_python, circuitlab.builtins.tasks_mined; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_packs_pairs_for_the_same_figures_as_the_full_pass(project_tokenizer):
    """On circuitlab's GPT, evaluate() runs both prompts of a pair in one packed row; a wrapper without
    ``last_final`` takes the plain full pass. The figures agree (float rounding aside)."""
    import torch

    from circuitlab.config import ModelConfig
    from circuitlab.model import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=project_tokenizer.get_vocab_size(), n_ctx=128, d_model=32, n_layer=2,
                            n_head=2, d_head=16, d_mlp=64)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config, self.inner = model.config, model

        def forward(self, idx):
            return self.inner(idx)

    pairs = PYTHON["else_elif"].make_pairs(40, 0) + PYTHON["for_while"].make_pairs(40, 1)
    packed, plain = T.evaluate(model, project_tokenizer, pairs, batch_size=16), T.evaluate(Plain(), project_tokenizer, pairs)
    assert packed["n_pairs"] == plain["n_pairs"] == 80
    assert packed["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert (packed["accuracy_a"], packed["accuracy_b"]) == (plain["accuracy_a"], plain["accuracy_b"])
