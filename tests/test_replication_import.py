"""``circuitlab import-replication``: the open replication's checkpoints become faithful run folders.

The fixtures in ``tests/fixtures/replication/`` were made by running that repository's own model class
(``jacobcd52/sparse_pretrain_public``, ``src/model.py``, ``SparseGPT``) on random weights: each holds
the checkpoint as that code saves it (``config.json`` and ``pytorch_model.bin``, or ``sparse_model.bin``
and ``bridges.bin``) and ``expected.safetensors``: the inputs, the logits and the activation at every
point of its forward pass (after AbsTopK where it applies). ``fixture.json`` says how.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from circuitlab.train.runs import load_model

from .conftest import assert_one_line_error, run_main

FIXTURES = Path(__file__).parent / "fixtures" / "replication"

# The replication's activation names -> circuitlab's hook points (L: layer).
_SITE = {"attn_in": "attn.in", "attn_q": "attn.q", "attn_k": "attn.k", "attn_v": "attn.v", "attn_y": "attn.y",
         "attn_out": "attn.out", "mlp_in": "mlp.in", "mlp_neuron": "mlp.neuron", "mlp_out": "mlp.out",
         "resid_pre": "resid_in", "resid_mid": "resid_mid"}


def circuitlab_point(name: str, n_layer: int) -> str:
    if name == "final":
        return "final"
    layer, _, site = name.partition(".")
    if site == "resid_post":  # a block's output is the next block's input, or the residual before ln_f
        return "final.resid" if int(layer) == n_layer - 1 else f"{int(layer) + 1}.resid_in"
    return f"{layer}.{_SITE[site]}"


@pytest.mark.parametrize("name", ["bridges_sparse", "dense"])
def test_forward_equals_the_replication_model(tmp_path, name, capsys):
    code, out, err = run_main(["import-replication", FIXTURES / name, "--out", tmp_path / "run", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    model, tok, info = load_model(tmp_path / "run", need_tokenizer=False)
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    seen = {}

    def hook(point, x):
        seen[point] = x.detach().clone()
        return x

    with torch.no_grad():
        logits, _ = model(expected["input_ids"], hook=hook)
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=1e-5)
    names = [k for k in expected if k not in ("input_ids", "logits")]
    assert len(names) >= 20
    for k in names:
        torch.testing.assert_close(seen[circuitlab_point(k, info.model.n_layer)], expected[k], atol=1e-5, rtol=1e-5,
                                   msg=lambda m, k=k: f"{k}: {m}")
    prov = info.provenance["imported_from"]
    assert prov["format"] == "jacobcd52/sparse_pretrain_public" and "training_config" in prov["ignored_keys"]
    if name == "bridges_sparse":
        assert summary["weights_file"] == "sparse_model.bin" and summary["ignored_files"] == ["bridges.bin"]
        assert "bridges_config" in summary["ignored_keys"] and "bridges.bin" in err
        assert info.model.attn_sink and info.model.bigram_table and info.model.afrac == 0.25
    else:
        assert info.model.tied_unembed and info.model.pos_emb and info.model.norm == "layer"
        assert info.model.afrac is None and not info.model.attn_sink


def _copy(tmp_path: Path, name: str = "dense") -> Path:
    dst = tmp_path / f"src-{name}"
    shutil.copytree(FIXTURES / name, dst)
    (dst / "expected.safetensors").unlink()
    return dst


def test_tokenizer_in_the_folder_and_safetensors(tmp_path, capsys):
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    src = _copy(tmp_path)
    vocab = {w: i for i, w in enumerate(["[UNK]", "once", "upon", "a", "time", "the", "cat", "sat"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(src / "tokenizer.json"))
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["lm_head.weight"] = state["lm_head.weight"].clone()  # safetensors stores no shared tensors
    save_file(state, str(src / "model.safetensors"))
    (src / "pytorch_model.bin").unlink()
    code, out, err = run_main(["import-replication", src, "--out", tmp_path / "run", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["weights_file"] == "model.safetensors"
    model, tok2, _ = load_model(tmp_path / "run")
    assert tok2.encode("once upon a time").ids == [1, 2, 3, 4]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad(tmp_path, capsys, src, *needles):
    code, _, err = run_main(["import-replication", src, "--out", tmp_path / "bad"], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "bad").exists()


def test_bad_checkpoints_are_one_line(tmp_path, capsys):
    src = _copy(tmp_path)
    weights = src / "pytorch_model.bin"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    _bad(tmp_path, capsys, src, "pytorch_model.bin", "not a readable torch checkpoint")
    weights.write_text("a text file, not a checkpoint")
    _bad(tmp_path, capsys, src, "pytorch_model.bin")
    marker = tmp_path / "pwned"
    torch.save({"wte.weight": _Payload(marker)}, weights)
    _bad(tmp_path, capsys, src, "weights-only loading refused")
    assert not marker.exists()
    weights.write_bytes(good)
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    _bad(tmp_path, capsys, src, "model.safetensors", "not a readable safetensors file")
    (src / "model.safetensors").unlink()
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg)[:40])
    _bad(tmp_path, capsys, src, "config.json", "not valid JSON")
    (src / "config.json").write_text(json.dumps({**cfg, "model_config": {**cfg["model_config"], "d_mlp": 40}}))
    _bad(tmp_path, capsys, src, "mlp.c_fc.weight", "(48, 32)", "(40, 32)")
    (src / "config.json").write_text(json.dumps({**cfg, "model_config": {**cfg["model_config"], "d_head": 7}}))
    _bad(tmp_path, capsys, src, "d_head=7")
    sparse = {**cfg["sparsity_config"], "enable_activation_sparsity": True,
              "activation_sparsity_locations": "resid_pre,mlp_neuron"}
    (src / "config.json").write_text(json.dumps({**cfg, "sparsity_config": sparse}))
    _bad(tmp_path, capsys, src, "resid_pre", "embedding")
    (src / "config.json").write_text(json.dumps({"model": {}}))
    _bad(tmp_path, capsys, src, "no model_config")
    (src / "config.json").write_text(json.dumps(cfg))
    weights.unlink()
    _bad(tmp_path, capsys, src, "pytorch_model.bin", "sparse_model.bin")
