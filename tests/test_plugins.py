"""The plugin system: built-ins through the hooks, entry points, broken plugins, allow-list, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from circuitlab import hookimpl, plugins
from circuitlab.errors import CircuitlabError, UnknownNameError

from .conftest import FullEnv, run_cli


def test_builtins_register_through_the_hooks():
    reg = plugins.make_registry(entrypoints=False)
    assert {"dense", "topk", "gmp"} <= set(reg.names("sparsity"))
    entry = reg.get("sparsity", "topk")
    assert entry.plugin == "circuitlab.builtins.sparsity" and entry.dist == "circuitlab"
    assert entry.summary  # taken from the docstring


def test_duplicate_name_names_both_plugins():
    class First:
        @hookimpl
        def register_sparsity_schedules(self, register):
            register("same", object)

    class Second:
        @hookimpl
        def register_sparsity_schedules(self, register):
            register("same", object)

    first, second = First(), Second()
    first.__name__, second.__name__ = "first-plugin", "second-plugin"
    registry = plugins.make_registry(extra_plugins=(first, second), entrypoints=False)  # the rest keeps working
    assert "same" not in registry.names("sparsity") and "topk" in registry.names("sparsity")
    with pytest.raises(CircuitlabError) as info:
        registry.get("sparsity", "same")
    assert "first-plugin" in str(info.value) and "second-plugin" in str(info.value)


def test_plugin_api_version_declarations():
    from circuitlab import OLDEST_PLUGIN_API_VERSION, PLUGIN_API_VERSION
    from circuitlab.plugins.loading import api_problem

    assert api_problem(None) is None and api_problem(PLUGIN_API_VERSION) is None
    assert api_problem(OLDEST_PLUGIN_API_VERSION) is None
    assert "needs plugin API" in api_problem(PLUGIN_API_VERSION + 1)
    assert "upgrade the plugin" in api_problem(OLDEST_PLUGIN_API_VERSION - 1)
    assert "not an integer" in api_problem("2")


def test_hookspecs_are_typed_with_the_protocols():
    import typing

    from circuitlab.plugins import hookspecs, protocols

    hints = typing.get_type_hints(hookspecs.RegisterMask.__call__, vars(protocols) | vars(hookspecs))
    assert hints["factory"] is protocols.MaskFactory
    assert typing.get_type_hints(hookspecs.register_task_suites, vars(hookspecs))["register"] is hookspecs.RegisterSuite


def test_unknown_name_suggests_and_lists():
    reg = plugins.make_registry(entrypoints=False)
    with pytest.raises(UnknownNameError) as info:
        reg.get("sparsity", "topkk")
    msg = str(info.value)
    assert "did you mean 'topk'" in msg and "dense, gmp, topk" in msg


def _fake_distribution(root: Path, dist: str, module: str, source: str, ep_name: str | None = None) -> None:
    """A real installed distribution (dist-info with an entry point) on a path we control."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[circuitlab]\n{ep_name or dist} = {module}\n")


@pytest.fixture()
def plugin_path(tmp_path: Path) -> Path:
    _fake_distribution(tmp_path, "circuitlab-broken", "circuitlab_broken", "import not_a_real_module_xyz\n")
    _fake_distribution(tmp_path, "circuitlab-typo", "circuitlab_typo", """
        from circuitlab import hookimpl

        @hookimpl
        def register_sparsity_schedule(register):  # misspelled: no trailing s
            register("never", object)
    """)
    _fake_distribution(tmp_path, "circuitlab-good", "circuitlab_good", """
        from circuitlab import hookimpl

        class Half:
            '''Keeps half of the weights.'''

        @hookimpl
        def register_sparsity_schedules(register):
            register("half", Half)
    """)
    return tmp_path


def _env(plugin_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUITLAB_") or k == "CIRCUITLAB_CACHE"}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), env.get("PYTHONPATH", "")])
    env.update(extra)
    return FullEnv(env)


def test_broken_and_misspelled_plugins_warn_and_everything_else_works(plugin_path: Path):
    proc = run_cli("plugins", "--json", env=_env(plugin_path))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 2, proc.stderr
    broken = next(w for w in warnings if "circuitlab-broken" in w)
    assert "ModuleNotFoundError" in broken and "CIRCUITLAB_RAISE_PLUGIN_ERRORS=1" in broken
    assert any("circuitlab-typo" in w and "register_sparsity_schedule" in w for w in warnings)
    doc = json.loads(proc.stdout)
    assert {"dense", "topk", "gmp", "half"} <= set(doc["names"]["sparsity"])
    assert "never" not in doc["names"]["sparsity"]
    good = next(p for p in doc["plugins"] if p["plugin"] == "circuitlab-good")
    assert good["dist"] == "circuitlab-good" and good["version"] == "0.3"
    assert {f["plugin"] for f in doc["failed"]} == {"circuitlab-broken", "circuitlab-typo"}


def test_raise_plugin_errors_gives_the_traceback(plugin_path: Path):
    proc = run_cli("plugins", env=_env(plugin_path, CIRCUITLAB_RAISE_PLUGIN_ERRORS="1"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "not_a_real_module_xyz" in proc.stderr


@pytest.mark.parametrize(("allow", "expected_half"), [("", False), ("circuitlab-good", True), ("other", False)])
def test_load_plugins_allow_list(plugin_path: Path, allow: str, expected_half: bool):
    proc = run_cli("plugins", "--json", env=_env(plugin_path, CIRCUITLAB_LOAD_PLUGINS=allow))
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert not any("circuitlab-broken" in w or "circuitlab-typo" in w for w in warnings)  # never imported
    assert len(warnings) == (allow == "other")  # an allow-list entry matching nothing is warned about
    names = json.loads(proc.stdout)["names"]["sparsity"]
    assert ("half" in names) is expected_half
    assert {"dense", "topk", "gmp"} <= set(names)


def test_help_and_plugin_loading_do_not_import_torch(plugin_path: Path):
    code = textwrap.dedent("""
        import sys
        from circuitlab.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        assert "torch" not in sys.modules, "--help imported torch"
        from circuitlab import plugins
        plugins.get_registry()
        assert "torch" not in sys.modules, "loading plugins imported torch"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(plugin_path))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_plugins_command_lists_builtin_schedules():
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"dense", "topk", "gmp"} <= set(doc["names"]["sparsity"])
    builtin = next(p for p in doc["plugins"] if p["plugin"] == "circuitlab.builtins.sparsity")
    assert builtin["dist"] == "circuitlab" and builtin["version"]
