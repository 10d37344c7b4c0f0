"""The plugin kit (circuitlab.testing and its pytest plugin), the model cache key with plugin versions,
the mask factory's device, score-only masks and the suite in circuit provenance."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from circuitlab import plugins
from circuitlab.cli import main
from circuitlab.config import PruneConfig, TrainConfig, config_hash
from circuitlab.plugins import Entry, calls

from .broken_plugins import install


def test_the_pytest_plugin_gives_the_tiny_fixtures(tmp_path: Path):
    """A plugin package's test file, run by pytest outside this repository: the fixtures come from circuitlab's
    ``pytest11`` entry point."""
    (tmp_path / "test_outside.py").write_text(textwrap.dedent("""
        import json

        def test_fixtures(tiny_config, tiny_model, tiny_tokenizer, tiny_run):
            assert tiny_config.preset == "tiny" and tiny_config.steps == 12
            assert tiny_model.config.vocab_size == tiny_tokenizer.get_vocab_size()
            assert len(tiny_tokenizer.encode("def f(x):").ids) >= 2
            meta = json.loads((tiny_run / "config.json").read_text())
            assert meta["status"] == "complete" and (tiny_run / "model.safetensors").exists()
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


@pytest.mark.slow
def test_every_builtin_passes_its_contract_checks(capsys, monkeypatch):
    monkeypatch.setenv("CIRCUITLAB_LOAD_PLUGINS", "")
    plugins.reset()
    try:
        main(["plugins", "--check", "all"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        plugins.reset()
    out, err = capsys.readouterr()
    assert code == 0 and "FAIL" not in out, out + err
    assert "11 of 11 plugin entries passed every check" in err


def test_model_cache_key_carries_plugin_versions_but_not_builtins(tmp_path: Path, monkeypatch):
    from circuitlab.train.runs import cached_run_dir

    monkeypatch.delenv("CIRCUITLAB_LOAD_PLUGINS", raising=False)
    source = """
        from circuitlab import hookimpl

        class Keep:
            '''Keeps everything.'''

        @hookimpl
        def register_sparsity_schedules(register):
            register("keep_all", Keep)
    """
    keys = []
    for version in ("0.3", "0.4"):
        root = tmp_path / version
        install(root, "circuitlab-keep", f"circuitlab_keep_{version.replace('.', '_')}", source, version=version)
        monkeypatch.syspath_prepend(str(root))
        plugins.reset()
        config = TrainConfig.for_preset("small", sparsity="keep_all")
        keys.append(cached_run_dir(config, config.model_config()).name)
        builtin = TrainConfig.for_preset("small", sparsity="topk")
        # A run that uses only built-ins keeps the key it had before plugin versions joined the key.
        assert cached_run_dir(builtin, builtin.model_config()).name.endswith(
            config_hash(builtin, builtin.model_config()))
        sys.path.remove(str(root))  # uninstall it before installing the next version
    plugins.reset()
    assert keys[0] != keys[1]


def _entry(factory) -> Entry:
    return Entry(kind="pruner", name="m", factory=factory, summary="", plugin="p", dist="d", version="1")


def test_mask_factories_get_the_device_only_when_they_accept_it():
    import torch

    seen = {}

    class Mask:
        def parameters(self):
            return []

        gate = penalty = scores = after_step = parameters

    class WithDevice(Mask):
        def __init__(self, num_nodes, generator=None, device="cpu"):
            seen["with"] = device

    class Legacy(Mask):  # plugin API 1: no device argument
        def __init__(self, num_nodes, generator=None):
            seen["legacy"] = True

    calls.build_mask(_entry(WithDevice), num_nodes=3, generator=None, device=torch.device("cpu"))
    calls.build_mask(_entry(Legacy), num_nodes=3, generator=None, device=torch.device("cpu"))
    assert seen == {"with": torch.device("cpu"), "legacy": True}


def test_a_score_only_mask_prunes_and_the_circuit_names_every_plugin(tiny):
    """A NodeScorer through search_circuit: one fit, no optimisation, no retries; the provenance names the
    mask, the objective and the task suite plugins."""
    import torch

    from circuitlab.prune.search import TaskData, search_circuit
    from circuitlab.testing import MaskBench

    fits = []

    class Magnitude:
        """Scores nodes by |gradient| at the unpruned model."""

        score_only = True

        def __init__(self, num_nodes, generator=None, device="cpu"):
            self.s = None

        def fit(self, gradients):
            fits.append(gradients.steps)
            self.s = gradients.value_and_grad(torch.ones(gradients.num_nodes))[1].abs()

        def scores(self):
            return self.s

    bench = MaskBench(tiny)
    bench.setup()
    config = PruneConfig(target_loss=10.0, steps=3, retries=2, random_draws=1)
    data = TaskData(train=bench.train, test=bench.test, values=bench.values, task="if_equals", suite="python")
    circuit = search_circuit(bench.model, data, config, mask_entry=_entry(Magnitude))
    assert fits == [3]  # --steps reaches fit; a single attempt
    kinds = {p["kind"]: p for p in circuit.provenance["plugins"]}
    assert set(kinds) == {"pruner", "objective", "suite"}
    assert kinds["suite"]["plugin"] == "circuitlab.builtins.tasks" and kinds["suite"]["dist"] == "circuitlab"
    assert circuit.provenance["effective"] == {"steps": 3, "lr": None, "penalty_coef": None}
    assert 0 <= circuit.node_count <= circuit.total_nodes
