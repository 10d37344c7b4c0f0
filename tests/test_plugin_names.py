"""Names from several distributions: ``DIST:NAME``, short names two packages register, ``--tasks`` across
suites, and tasks keyed ``suite:task`` in circuit files, stores and comparisons.

The packages of ``make test`` include two small third-party ones (tests/packages): circuitlab-outsider
registers an objective ``margin`` (as circuitlab-example does) and a suite ``strings``, whose task
``single_double_quote`` shares its name with ``python:single_double_quote``; circuitlab-neighbour
registers a suite ``strings`` too. circuitlab-example's ``loops:for_while`` shares its task name with
the built-in ``python:for_while``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circuitlab import hookimpl, plugins
from circuitlab.errors import CircuitlabError, UnknownNameError
from circuitlab.tasks import TaskContext, resolve_tasks

from .conftest import run_cli, run_main

BOTH_MARGINS = "'circuitlab-example:margin' or 'circuitlab-outsider:margin'"


@pytest.fixture
def registry():
    """The registry of every installed package (entry points), built fresh."""
    plugins.reset()
    yield plugins.get_registry()
    plugins.reset()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_short_name_of_two_distributions_is_refused_and_each_stays_usable_qualified(registry):
    with pytest.raises(CircuitlabError) as info:
        registry.get("objective", "margin")
    assert "\n" not in str(info.value) and BOTH_MARGINS in str(info.value)
    example = registry.get("objective", "circuitlab-example:margin")
    outsider = registry.get("objective", "circuitlab-outsider:margin")
    assert (example.dist, outsider.dist) == ("circuitlab-example", "circuitlab-outsider")
    assert example.factory is not outsider.factory and outsider.qualname == "circuitlab-outsider:margin"
    assert registry.get("objective", "Circuitlab_Outsider:margin") is outsider  # compared PEP 503-normalised
    assert registry.get("pruner", "circuitlab:heaviside") is registry.get("pruner", "heaviside")  # the built-ins
    assert {"circuitlab-example:margin", "circuitlab-outsider:margin"} <= set(registry.names("objective"))
    assert "margin" not in registry.names("objective")
    with pytest.raises(UnknownNameError, match="did you mean 'circuitlab-outsider:margin'"):
        registry.get("objective", "circuitlab-outsider:margn")


def test_the_command_line_refuses_the_short_name_in_one_line_and_takes_the_qualified_one(tmp_path: Path):
    proc = run_cli("prune", "--model", str(tmp_path), "--pruner", "heaviside", "--objective", "margin")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(_lines(proc.stderr)) == 1 and BOTH_MARGINS in proc.stderr, proc.stderr
    proc = run_cli("prune", "--model", str(tmp_path), "--pruner", "heaviside", "--objective",
                   "circuitlab-outsider:margin")
    # The name was accepted: the error is about the folder, which is no run.
    assert proc.returncode == 2 and _lines(proc.stderr) == [_lines(proc.stderr)[-1]]
    assert "is not a circuitlab run" in proc.stderr and "margin" not in proc.stderr


def test_plugins_lists_the_qualified_names_and_checks_them():
    doc = json.loads(run_cli("plugins", "--json", check=True).stdout)
    outsider = next(p for p in doc["plugins"] if p["dist"] == "circuitlab-outsider")
    assert [i["use"] for i in outsider["registered"]["objective"]] == ["circuitlab-outsider:margin"]
    assert [i["use"] for i in outsider["registered"]["suite"]] == ["circuitlab-outsider:strings"]
    example = next(p for p in doc["plugins"] if p["dist"] == "circuitlab-example")
    assert {i["use"] for k in ("pruner", "suite") for i in example["registered"][k]} == {"ste", "loops"}
    conflicts = {c["name"]: sorted(c["qualnames"]) for c in doc["conflicts"]}
    assert conflicts["margin"] == ["circuitlab-example:margin", "circuitlab-outsider:margin"]
    assert conflicts["strings"] == ["circuitlab-neighbour:strings", "circuitlab-outsider:strings"]
    listed = run_cli("plugins", check=True).stdout
    assert "circuitlab-outsider:margin" in listed and "circuitlab-neighbour:strings" in listed
    checked = run_cli("plugins", "--check", "circuitlab-example:margin", "--check",
                      "objective:circuitlab-outsider:margin", "--json")
    assert checked.returncode == 0, checked.stderr
    reports = json.loads(checked.stdout)["reports"]
    assert [(r["plugin"], r["name"], r["passed"]) for r in reports] == [
        ("circuitlab-example", "margin", True), ("circuitlab-outsider", "margin", True)]
    refused = run_cli("plugins", "--check", "margin")
    assert refused.returncode == 2 and len(_lines(refused.stderr)) == 1 and BOTH_MARGINS in refused.stderr


def test_tasks_across_suites_and_of_suites_two_distributions_register(registry):
    context = TaskContext()
    keys = [t.qualname for t in resolve_tasks("mined:mined_quote,python:else_elif,if_equals", context)]
    assert keys == ["mined:mined_quote", "python:else_elif", "python:if_equals"]
    keys = [t.qualname for t in resolve_tasks(
        "circuitlab-outsider:strings:single_double_quote,python:single_double_quote,circuitlab-neighbour:strings",
        context)]
    assert keys == ["circuitlab-outsider:strings:single_double_quote", "python:single_double_quote",
                    "circuitlab-neighbour:strings:copy_digit"]
    with pytest.raises(CircuitlabError, match="'circuitlab-neighbour:strings' or 'circuitlab-outsider:strings'"):
        resolve_tasks("strings", context)
    with pytest.raises(UnknownNameError, match="did you mean 'else_elif'"):
        resolve_tasks("mined:mined_quote,python:els_elif", context)
    every = [t.qualname for t in resolve_tasks(None, context)]
    assert len(every) == len(set(every))  # one key per task, whichever suites share a task name
    assert {"loops:for_while", "python:for_while", "circuitlab-outsider:strings:single_double_quote",
            "circuitlab-neighbour:strings:copy_digit"} <= set(every)


def test_tasks_command_lists_tasks_of_two_suites():
    proc = run_cli("tasks", "--suite", "mined:mined_quote,python:else_elif", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(r["suite"], r["task"]) for r in json.loads(proc.stdout)["tasks"]] == [
        ("mined", "mined_quote"), ("python", "else_elif")]


def test_the_old_pruner_hook_name_still_registers_pruners():
    heaviside = plugins.make_registry(entrypoints=False).get("pruner", "heaviside").factory

    class OldStyle:
        @hookimpl
        def register_mask_parameterizations(register):
            register("old_style", heaviside, summary="A pruner registered through the old hook name.")

    with pytest.warns(DeprecationWarning, match="register_pruners"):
        registry = plugins.make_registry(extra_plugins=(OldStyle,), entrypoints=False)
    entry = registry.get("pruner", "old_style")
    assert entry.kind == "pruner" and entry.factory is heaviside and entry.dist == "(in-process)"
    from circuitlab.plugins import NodeMask, PrunerMask  # the old protocol name too

    assert NodeMask is PrunerMask


FAST = ["--steps", "15", "--n-train", "24", "--n-test", "12", "--min-accuracy", "0"]


@pytest.mark.usefixtures("one_thread")
def test_both_for_while_tasks_land_in_files_store_and_comparison(tiny_run, tmp_path, capsys, registry):
    from circuitlab.store import list_methods

    store, out = tmp_path / "store.zarr", tmp_path / "out"
    args = ["prune", "--model", tiny_run, "--pruner", "hardconcrete", "--tasks", "loops:for_while,python:for_while",
            "--target-loss", "0.6", "--store", store, "--out", out, "--json", *FAST]
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err
    assert [(r["suite"], r["task"]) for r in json.loads(stdout)["tasks"]] == [("loops", "for_while"),
                                                                              ("python", "for_while")]
    files = sorted(p.name for p in (out / "circuits").iterdir())
    assert files == ["loops.for_while.json", "python.for_while.json"]
    docs = {f: json.loads((out / "circuits" / f).read_text()) for f in files}
    assert [(d["suite"], d["task"], d["method"]) for d in docs.values()] == [
        ("loops", "for_while", "hardconcrete"), ("python", "for_while", "hardconcrete")]
    both = [("hardconcrete", "loops:for_while"), ("hardconcrete", "python:for_while")]
    assert list_methods(store) == both
    compared = json.loads(run_cli("compare", str(store), "--json", check=True).stdout)
    assert set(compared["tasks"]) == {"loops:for_while", "python:for_while"}
    for key, doc in zip(("loops:for_while", "python:for_while"), docs.values(), strict=True):
        assert compared["tasks"][key]["methods"]["hardconcrete"]["nodes"] == doc["node_count"]
        assert compared["tasks"][key]["basis"] == key  # each task's own recorded examples

    # A folder and a store written before tasks were keyed suite:task: python's circuit as circuits/for_while.json,
    # its store result under methods/hardconcrete/for_while. Both read under the new key, and a rerun continues.
    (out / "circuits" / "python.for_while.json").rename(out / "circuits" / "for_while.json")
    group = store / "methods" / "hardconcrete"
    (group / "python:for_while").rename(group / "for_while")
    meta = json.loads((group / "for_while" / "zarr.json").read_text())
    meta["attributes"]["task"] = "for_while"
    (group / "for_while" / "zarr.json").write_text(json.dumps(meta))
    assert list_methods(store) == both
    assert set(json.loads(run_cli("compare", str(store), "--json", check=True).stdout)["tasks"]) == {
        "loops:for_while", "python:for_while"}
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err
    assert "done python:for_while: kept from an earlier run" in err and "prune python:for_while" not in err
    assert sorted(p.name for p in (out / "circuits").iterdir()) == ["for_while.json", "loops.for_while.json"]

    # Replacing the old result moves it to its suite:task key.
    from circuitlab.store import add_method_result, open_method, read_values
    from circuitlab.store.methods import MethodResult

    ds = open_method(store, "hardconcrete", "python:for_while")
    result = MethodResult(method="hardconcrete", task="python:for_while", scores=read_values(ds["score"], "score"),
                          kept=read_values(ds["kept"], "kept"), loss=ds.attrs["loss"], edges=0,
                          nodes=ds.attrs["nodes"], provenance=ds.attrs["provenance"])
    add_method_result(store, result, overwrite=True)
    assert sorted(p.name for p in group.iterdir() if not p.name.startswith(".")) == [
        "loops:for_while", "python:for_while", "zarr.json"]
    assert list_methods(store) == both


SLUG = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
DIST = st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,8}[A-Za-z0-9]", fullmatch=True)


@given(dist=st.none() | DIST, suite=SLUG, task=SLUG)
def test_a_task_key_reads_back_from_its_file_name(dist, suite, task):
    from circuitlab.plugins.loading import normalise
    from circuitlab.prune.circuit import circuit_file_stem, task_key

    key = task_key(suite if dist is None else f"{normalise(dist)}:{suite}", task)
    stem = circuit_file_stem(key)
    assert ":" not in stem and stem.replace(".", ":") == key


def test_old_method_labels_and_mib_names():
    from circuitlab.bench.mib import _mib_task
    from circuitlab.view.data import store_label

    # Circuit files written before the one label said "pruner/objective".
    assert [store_label(m) for m in ("hardconcrete/binary_ce", "hardconcrete/kl", "hardconcrete+kl", "ste")] == [
        "hardconcrete", "hardconcrete+kl", "hardconcrete+kl", "ste"]
    keys = {"loops:for_while", "python:for_while", "python:else_elif"}
    assert [_mib_task(k, keys) for k in sorted(keys)] == ["loops-for-while", "else-elif", "python-for-while"]
