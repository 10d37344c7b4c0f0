"""Broken plugins, installed as real distributions: each failure is one line naming the plugin, load-time
problems are warnings, run-time ones exit 2, there is never a traceback, and everything else keeps working."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from circuitlab import plugins
from circuitlab.cli import main
from circuitlab.errors import PluginError
from circuitlab.interrupts import Interrupted
from circuitlab.plugins.calls import calling

from .broken_plugins import LOAD_TIME, RUN_TIME, SLOW, install
from .conftest import FullEnv, run_cli


def _env(path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUITLAB_") or k == "CIRCUITLAB_CACHE"}
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    env.update(extra)
    return FullEnv(env)


@pytest.fixture(scope="module")
def load_time_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("load-time")
    for dist, source in LOAD_TIME.items():
        install(root, dist, dist.replace("-", "_"), source)
    return root


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_load_time_failures_are_one_warning_line_each(load_time_path: Path):
    proc = run_cli("plugins", "--json", env=_env(load_time_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _lines(proc.stderr)
    expected = {
        "circuitlab-importerror": "ModuleNotFoundError: No module named 'not_a_real_module_xyz'",
        "circuitlab-exits": "it called sys.exit(3) while being imported",
        "circuitlab-raisinghook": "register_sparsity_schedules() raised RuntimeError: boom in hook",
        "circuitlab-badname": "invalid name '123'",
        "circuitlab-shadow": "built-in sparsity schedule 'topk', which keeps the short name; the plugin's is "
                             "'circuitlab-shadow:topk'",
        "circuitlab-twice": "registered 2 times by the same plugin 'circuitlab-twice'",
        "circuitlab-future": "it needs plugin API 99",
    }
    for plugin, text in expected.items():
        mine = [line for line in lines if f"'{plugin}'" in line]
        assert len(mine) == 1 and text in mine[0], (plugin, lines)
    # Two distributions registering 'clash' is no warning: each is usable as DIST:clash; the bare name is an error.
    assert not [line for line in lines if "'clash'" in line], lines
    assert len(lines) == len(expected), lines
    doc = json.loads(proc.stdout)
    sparsity = doc["names"]["sparsity"]
    assert {"dense", "topk", "gmp", "half_ok"} <= set(sparsity) and "123" not in sparsity
    assert next(p for p in doc["plugins"] if p["plugin"] == "circuitlab.builtins.sparsity")["builtin"]
    assert "twin" not in doc["names"]["pruner"] and "clash" not in doc["names"]["objective"]
    assert {s["plugin"] for s in doc["skipped"]} == {"circuitlab-badname"}
    assert [(s["name"], s["qualname"]) for s in doc["shadowed"]] == [("topk", "circuitlab-shadow:topk")]
    assert "circuitlab-shadow:topk" in sparsity  # the plugin's topk stays usable, qualified
    assert {"twin", "clash"} <= {c["name"] for c in doc["conflicts"]}  # (and the test packages' margin, strings)
    clash = next(c for c in doc["conflicts"] if c["name"] == "clash")
    assert sorted(clash["qualnames"]) == ["circuitlab-clash-a:clash", "circuitlab-clash-b:clash"]
    assert {"circuitlab-clash-a:clash", "circuitlab-clash-b:clash"} <= set(doc["names"]["objective"])
    twin = next(c for c in doc["conflicts"] if c["name"] == "twin")
    assert twin["qualnames"] == [] and "circuitlab-twice:twin" not in doc["names"]["pruner"]
    assert {f["plugin"] for f in doc["failed"]} == {"circuitlab-importerror", "circuitlab-exits",
                                                     "circuitlab-raisinghook", "circuitlab-future"}


def test_other_commands_keep_working_with_broken_plugins_installed(load_time_path: Path):
    env = _env(load_time_path)
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0 and "CONFLICT" in listed.stdout
    assert "SHADOWED: sparsity 'topk'" in listed.stdout and "circuitlab-clash-a:clash" in listed.stdout
    tasks = run_cli("tasks", "--suite", "python:if_equals", "--json", env=env)
    assert tasks.returncode == 0, tasks.stderr
    assert json.loads(tasks.stdout)["tasks"][0]["task"] == "if_equals"
    clash = run_cli("prune", "--model", "nowhere", "--pruner", "heaviside", "--objective", "clash", env=env)
    assert clash.returncode == 2 and "Traceback" not in clash.stderr
    error = _lines(clash.stderr)[-1]
    assert "'circuitlab-clash-a:clash' or 'circuitlab-clash-b:clash'" in error, error


def test_a_builtin_name_shadowed_by_a_plugin_still_means_the_builtin(load_time_path: Path, tmp_path: Path):
    proc = run_cli("train", "--sparsity", "topk", "--preset", "tiny", "--resume", "--out", str(tmp_path / "none"),
                   env=_env(load_time_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _lines(proc.stderr)[-1].startswith("error: nothing to resume"), proc.stderr  # --sparsity topk was accepted


def test_raise_plugin_errors_gives_the_import_traceback(load_time_path: Path):
    proc = run_cli("plugins", env=_env(load_time_path, CIRCUITLAB_RAISE_PLUGIN_ERRORS="1"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_allow_list_is_normalised_and_warns_about_unmatched_entries(load_time_path: Path):
    proc = run_cli("plugins", "--json", env=_env(load_time_path, CIRCUITLAB_LOAD_PLUGINS="Circuitlab_BadName, nothing.here"))
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stderr)
    assert any("'circuitlab-badname'" in line for line in lines)  # loaded: its bad name is warned about
    assert any("'nothing-here'" in line and "matches no installed plugin" in line for line in lines), lines
    assert "half_ok" in json.loads(proc.stdout)["names"]["sparsity"]
    assert not any("circuitlab-exits" in line for line in lines)  # not on the list: never imported


def test_unknown_name_mentions_an_empty_allow_list(load_time_path: Path):
    proc = run_cli("train", "--sparsity", "half_ok", "--preset", "tiny", env=_env(load_time_path, CIRCUITLAB_LOAD_PLUGINS=""))
    assert proc.returncode == 2
    assert "unknown sparsity schedule 'half_ok'" in proc.stderr and "CIRCUITLAB_LOAD_PLUGINS is set and empty" in proc.stderr


# ---------------------------------------------------------------------------------------------------
# Run-time failures, in process (the CLI's main with the same real entry points on sys.path).


@pytest.fixture()
def broken(tmp_path: Path, monkeypatch):
    install(tmp_path, "circuitlab-dist", f"circuitlab_dist_{tmp_path.name.replace('-', '_')}", RUN_TIME)
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("CIRCUITLAB_LOAD_PLUGINS", "CIRCUITLAB_RAISE_PLUGIN_ERRORS", "CIRCUITLAB_RAISE_ERRORS"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()
    yield
    plugins.reset()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    errors = [line for line in _lines(err) if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: plugin 'circuitlab-dist' (")
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize(("schedule", "message"), [
    ("zero_density", "(sparsity 'zero_density'): density_at(0) returned 0.0; it must be a number in (0, 1]"),
    ("raising_apply", "(sparsity 'raising_apply'): apply(model, 0) raised ValueError: apply exploded; "
                      "set CIRCUITLAB_RAISE_PLUGIN_ERRORS=1 for the traceback"),
    ("list_state", "(sparsity 'list_state'): state_dict() holds a list under 'masks'; values must be torch.Tensor"),
])
def test_schedule_contract_violations_exit_2_naming_the_plugin(broken, capsys, small_corpus, tmp_path, schedule,
                                                               message):
    code, _, err = cli(capsys, "train", "--sparsity", schedule, "--preset", "tiny", "--steps", "2", "--batch-size", "2",
                       "--corpus", str(small_corpus), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2
    _one_error_line(err, message)


@pytest.mark.parametrize(("pruner", "objective", "message"), [
    ("wrong_gate", "binary_ce", "(pruner 'wrong_gate'): gate() returned shape"),
    ("vector_penalty", "binary_ce", "(pruner 'vector_penalty'): penalty() returned shape"),
    ("heaviside", "vector", "(objective 'vector'): objective(logits"),
    ("heaviside", "detached", "returned a tensor without a gradient"),
])
def test_mask_and_objective_violations_exit_2_naming_the_plugin(broken, capsys, tiny_run, tmp_path, pruner, objective,
                                                                message):
    code, _, err = cli(capsys, "prune", "--model", str(tiny_run), "--pruner", pruner, "--objective", objective,
                       "--tasks", "python:if_equals", "--min-accuracy", "0", "--steps", "2", "--n-train", "4",
                       "--n-test", "2", "--out", str(tmp_path / "pruned"))
    assert code == 2
    _one_error_line(err, message)


def test_a_failing_suite_is_skipped_and_the_others_keep_working(broken, capsys):
    code, out, err = cli(capsys, "tasks", "--json")
    assert code == 0 and "Traceback" not in err
    names = {(t["suite"], t["task"]) for t in json.loads(out)["tasks"]}
    assert ("python", "if_equals") in names and ("fewpairs", "few") in names
    warned = [line for line in _lines(err) if "skipped task suite" in line]
    assert len(warned) == 2, err
    assert any("'raising'" in w and "factory(context) raised KeyError: 'no such corpus'" in w for w in warned)
    assert any("'duplicates'" in w and "two tasks named 'same'" in w for w in warned)
    code, _, err = cli(capsys, "tasks", "--suite", "raising")
    assert code == 2
    _one_error_line(err, "(suite 'raising'): factory(context) raised KeyError")


def test_check_fails_readably_for_wrong_plugins(broken, capsys):
    code, out, err = cli(capsys, "plugins", "--check", "sparsity:rising", "--check", "wrong_gate", "--check", "vector",
                         "--check", "fewpairs")
    assert code == 1 and "Traceback" not in err
    failures = [line.strip() for line in out.splitlines() if line.strip().startswith("FAIL")]
    assert any("density_at(5) = 1 is above density_at(4) = 0.5" in f for f in failures), out
    assert any("gate() returned shape" in f for f in failures), out
    assert any("objective(logits (16, 2048), target, contrast, reference_logits) returned shape (16,)" in f
               for f in failures), out
    assert any("the standard sets hold" in f and "distinct pairs" in f for f in failures), out
    assert "0 of 4 plugin entries passed every check" in err


def test_raise_plugin_errors_gives_the_run_time_traceback(broken, capsys, monkeypatch, small_corpus, tmp_path):
    monkeypatch.setenv("CIRCUITLAB_RAISE_PLUGIN_ERRORS", "1")
    with pytest.raises(ValueError, match="apply exploded"):
        main(["train", "--sparsity", "raising_apply", "--preset", "tiny", "--steps", "2", "--batch-size", "2",
              "--corpus", str(small_corpus), "--out", str(tmp_path / "run"), "--quiet"])


def test_tasks_given_twice_is_an_error_and_run_help_lists_gmp(capsys):
    code, _, err = cli(capsys, "prune", "--model", "x", "--pruner", "heaviside", "--tasks", "python", "--tasks", "mined")
    assert code == 2 and "given 2 times" in err and "Traceback" not in err
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0 and "gmp" in out


# ---------------------------------------------------------------------------------------------------
# sys.exit() inside a plugin's run-time code: one line naming the plugin and the call, exit 2, never the
# plugin's own exit code.


@pytest.mark.parametrize(("pruner", "objective", "message"), [
    ("heaviside", "exiting", "(objective 'exiting'): objective(logits"),
    ("exiting_gate", "binary_ce", "(pruner 'exiting_gate'): gate() called sys.exit(8)"),
    ("exiting_lr", "binary_ce", "(pruner 'exiting_lr'): its attribute lr called sys.exit(9)"),
    ("exiting_factory", "binary_ce", "(pruner 'exiting_factory'): factory(num_nodes=..., generator=...) called "
                                     "sys.exit('no mask today')"),
])
def test_a_plugin_calling_sys_exit_while_pruning_exits_2_naming_it(broken, capsys, tiny_run, tmp_path, pruner,
                                                                  objective, message):
    code, _, err = cli(capsys, "prune", "--model", str(tiny_run), "--pruner", pruner, "--objective", objective,
                       "--tasks", "python:if_equals", "--min-accuracy", "0", "--steps", "2", "--n-train", "4",
                       "--n-test", "2", "--out", str(tmp_path / "pruned"))
    assert code == 2
    _one_error_line(err, message, "set CIRCUITLAB_RAISE_PLUGIN_ERRORS=1 for the traceback")
    if objective == "exiting":
        assert "called sys.exit(7)" in err


def test_sys_exit_in_a_schedule_exits_2_and_in_a_task_generator_skips_the_task(broken, capsys, small_corpus, tiny_run, tmp_path):
    code, _, err = cli(capsys, "train", "--sparsity", "exiting_density", "--preset", "tiny", "--steps", "2",
                       "--batch-size", "2", "--corpus", str(small_corpus), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2
    _one_error_line(err, "(sparsity 'exiting_density'): density_at(0) called sys.exit(6)")
    code, _, err = cli(capsys, "prune", "--model", str(tiny_run), "--pruner", "heaviside", "--tasks", "exiting",
                       "--min-accuracy", "0", "--steps", "2", "--n-train", "4", "--n-test", "2",
                       "--out", str(tmp_path / "pruned"))
    # A task whose pairs cannot be made is skipped, like any other (the pipeline goes on to the next task).
    assert code == 0 and "Traceback" not in err
    warned = [line for line in _lines(err) if line.startswith("circuitlab: plugin 'circuitlab-dist'")]
    assert len(warned) == 1 and "(suite 'exiting'): task 'exits': generate(" in warned[0], err
    assert "called sys.exit(4)" in warned[0]


def test_check_reports_sys_exit_as_a_failed_check(broken, capsys):
    code, out, err = cli(capsys, "plugins", "--check", "objective:exiting", "--check", "pruner:exiting_gate")
    assert code == 1 and "Traceback" not in err  # a failed check, not the plugin's exit code
    failures = [line.strip() for line in out.splitlines() if line.strip().startswith("FAIL")]
    assert any("called sys.exit(7)" in f for f in failures), out
    assert any("gate() called sys.exit(8)" in f for f in failures), out
    assert "0 of 2 plugin entries passed every check" in err


def test_sys_exit_in_an_objective_ends_the_real_process_with_2(tmp_path: Path, tiny_run):
    install(tmp_path / "site", "circuitlab-dist", "circuitlab_dist_exits", RUN_TIME)
    proc = run_cli("prune", "--model", str(tiny_run), "--pruner", "heaviside", "--objective", "exiting",
                   "--tasks", "python:if_equals", "--min-accuracy", "0", "--steps", "2", "--n-train", "4",
                   "--n-test", "2", "--out", str(tmp_path / "pruned"), env=_env(tmp_path / "site"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _lines(proc.stderr)[-1].startswith("error: plugin 'circuitlab-dist' (objective 'exiting'): objective(")
    assert "called sys.exit(7)" in _lines(proc.stderr)[-1]


def test_a_plugin_slow_to_import_is_named_while_it_loads(tmp_path: Path):
    install(tmp_path, "circuitlab-slow", "circuitlab_slow", SLOW)
    env = _env(tmp_path, CIRCUITLAB_PLUGIN_SLOW_SECONDS="0.3", CIRCUITLAB_TEST_IMPORT_SECONDS="1.5")
    proc = run_cli("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    slow = [line for line in _lines(proc.stderr) if "taking long" in line]
    assert slow == ["circuitlab: loading plugin 'circuitlab-slow' (dist circuitlab-slow 0.3) is taking long (over "
                    "0.3 s); if it hangs, press Ctrl-C and uninstall circuitlab-slow, or leave it out of "
                    "CIRCUITLAB_LOAD_PLUGINS"], proc.stderr
    assert "patient" in json.loads(proc.stdout)["names"]["sparsity"]  # it loaded in the end
    quick = run_cli("plugins", "--json", env=_env(tmp_path, CIRCUITLAB_TEST_IMPORT_SECONDS="0"))
    assert quick.returncode == 0 and "taking long" not in quick.stderr


# ---------------------------------------------------------------------------------------------------
# A signal that lands while plugin code runs stops the command (exit 128 + signal); it is not the plugin's error.


@pytest.mark.parametrize("stop", [Interrupted(signal.SIGTERM), KeyboardInterrupt()])
def test_a_stop_inside_plugin_code_passes_through_unchanged(stop):
    entry = plugins.get("pruner", "heaviside")
    with pytest.raises(type(stop)) as raised, calling(entry, "after_step(0.5)"):
        raise stop
    assert raised.value is stop
    with pytest.raises(PluginError, match=r"\(pruner 'heaviside'\): after_step\(0.5\) raised ValueError: bad"), \
            calling(entry, "after_step(0.5)"):
        raise ValueError("bad")
