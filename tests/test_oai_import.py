"""``circuitlab import-oai``: OpenAI circuit_sparsity checkpoints become ordinary, faithful run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitlab import plugins
from circuitlab.config import (
    AFRAC_LOCATIONS,
    RESIDUAL_AFRAC_LOCATIONS,
    ModelConfig,
    TrainConfig,
    config_hash,
    from_dict,
    get_preset,
    to_dict,
)
from circuitlab.errors import CircuitlabError
from circuitlab.interop.oai_config import model_config_from_oai
from circuitlab.model.nodes import NodeSpace
from circuitlab.train.runs import load_model, read_run

from .oai_reference import circuitlab_hook, make_state, reference_forward, write_checkpoint
from .test_prune_cli import ToyPlugin, assert_one_line_error, run_main

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINING_KEYS = {"pfrac": 0.125, "expansion_factor": 2, "afrac_approx": True, "ignore_dw_grad": False,
                 "bigram_table_rank": None, "use_tied_aux_matrix": False, "n_embd": None, "sparse_matmul_impl": "x",
                 "grad_checkpointing": False, "dropout": 0.1, "some_future_training_key": [1, 2]}

# Sink, concatenated position embedding, a learnable bigram table, RMSNorm, AbsTopK on every node site
# and on the residual after attention, training keys the published dataclass does not know.
WITH_SINK_AND_POS = {
    "block_size": 24, "vocab_size": 96, "n_layer": 2, "n_head": 3, "d_head": 8, "d_model": 30, "d_mlp": 40,
    "bias": True, "ln_bias": True, "rms_norm": True, "residual_activation_type": "identity",
    "activation_type": "gelu", "afrac": 0.5,
    "afrac_loctypes": "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out,resid_post_attn",
    "tied_unembed": False, "enable_bigram_table": True, "learnable_bigram_table": True, "d_pos_emb": 6,
    "sinusoidal_cat_pos_emb": False, "flash": True, "sink": True, "tokenizer_name": "tinypython_2k",
    **TRAINING_KEYS,
}
# No sink, added position embedding, LayerNorm with bias, ReLU MLP and residual, tied unembedding,
# a bigram buffer, the legacy n_mlp key, d_head from d_model, the slow path's mask buffers.
WITHOUT_SINK_OR_POS = {
    "block_size": 20, "vocab_size": 80, "n_layer": 2, "n_head": 4, "d_head": None, "d_model": 32, "n_mlp": 48,
    "bias": True, "ln_bias": True, "rms_norm": False, "residual_activation_type": "relu", "activation_type": "relu",
    "afrac": 0.25, "afrac_loctypes": "attn_k,attn_v,mlp_neuron,resid_post_mlp", "tied_unembed": True,
    "enable_bigram_table": True, "learnable_bigram_table": False, "flash": False, "pfrac": 0.5, "rtopk": 3,
}


def _import(tmp_path: Path, config: dict, flash: bool = True, bf16: bool = False, **save) -> tuple[Path, dict]:
    state = make_state(config, seed=3, flash=flash)
    on_disk = {k: v.to(torch.bfloat16) for k, v in state.items()} if bf16 else state
    src = write_checkpoint(tmp_path / "oai", config, on_disk, **save)
    from circuitlab.interop import import_oai

    import_oai(src, tmp_path / "run")
    return tmp_path / "run", on_disk


@pytest.mark.parametrize("config, flash, bf16, save", [
    (WITH_SINK_AND_POS, True, False, {}),
    (WITHOUT_SINK_OR_POS, False, True, {"_use_new_zipfile_serialization": False}),  # old format: no mmap
], ids=["sink+d_pos_emb", "no-sink-no-pos"])
def test_imported_forward_equals_the_reference_forward(tmp_path, config, flash, bf16, save):
    run, state = _import(tmp_path, config, flash, bf16, **save)
    model, tok, info = load_model(run, need_tokenizer=False)
    assert tok is None and info.model.attn_sink == config.get("sink", False)
    idx = torch.randint(0, config["vocab_size"], (3, config["block_size"]), generator=torch.Generator().manual_seed(5))
    seen = {}

    def hook(name, x):
        seen[name] = x.detach().clone()
        return x

    with torch.no_grad():
        logits, _ = model(idx, hook=hook)
        ref_logits, ref_acts = reference_forward(config, state, idx)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert len(ref_acts) == 11 * config["n_layer"] + 1
    for ref_name, act in ref_acts.items():
        torch.testing.assert_close(seen[circuitlab_hook(ref_name)], act, atol=1e-5, rtol=0, msg=ref_name)
    # AbsTopK really ran where configured: exactly int(afrac * width) entries survive.
    k = int(config["afrac"] * ref_acts["0.attn.v"].shape[-1])
    assert bool(((seen["0.attn.v"] != 0).sum(-1) == k).all())


def test_run_folder_records_provenance_and_ignored_keys(tmp_path, capsys):
    src = write_checkpoint(tmp_path / "oai", WITH_SINK_AND_POS, make_state(WITH_SINK_AND_POS))
    code, out, err = run_main(["import-oai", str(src), "--out", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["ignored_keys"]) >= {"pfrac", "expansion_factor", "afrac_approx", "some_future_training_key",
                                            "dropout", "grad_checkpointing"}
    assert "use_tied_aux_matrix" not in summary["ignored_keys"]  # neutral value: accepted, not ignored
    assert "ignored config keys" in err and "pfrac" in err
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["kind"] == "circuitlab-run"
    source = meta["provenance"]["imported_from"]
    assert source["format"] == "openai/circuit_sparsity" and len(source["weights_sha256"]) == 64
    assert source["config"]["afrac_loctypes"] == WITH_SINK_AND_POS["afrac_loctypes"]
    info = read_run(tmp_path / "run")
    assert info.model.d_pos_emb == 6 and info.model.site_widths()["attn.in"] == 36
    # A second import onto the same folder needs --overwrite.
    code, _, err = run_main(["import-oai", str(src), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "already exists", "--overwrite")


class _Payload:
    """Unpickling this would create the marker file: weights-only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    src = tmp_path / "oai"
    src.mkdir()
    (src / "beeg_config.json").write_text(json.dumps(WITHOUT_SINK_OR_POS))
    state = make_state(WITHOUT_SINK_OR_POS)
    state["transformer.wte.weight"] = _Payload(marker)  # a tensor swapped for the payload
    torch.save(state, src / "final_model.pt")
    assert not marker.exists()
    code, out, err = run_main(["import-oai", str(src), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "final_model.pt", "weights-only", "never unpickles")
    assert not marker.exists() and not (tmp_path / "run").exists() and out == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no half-written folder


@pytest.mark.parametrize("key, value, needle", [
    ("use_tied_aux_matrix", True, "use_tied_aux_matrix=True"),
    ("bigram_table_rank", 64, "bigram_table_rank=64"),
    ("activation_type", "swiglu", "activation_type='swiglu'"),
    ("residual_activation_type", "tanh", "residual_activation_type='tanh'"),
    ("afrac_loctypes", "attn_in,attn_bogus", "attn_bogus"),
    ("afrac", 1.5, "afrac=1.5"),
    ("n_head", 5, "n_head=5"),
])
def test_unsupported_values_are_refused_by_name(key, value, needle):
    with pytest.raises(CircuitlabError, match="unsupported") as err:
        model_config_from_oai({**WITHOUT_SINK_OR_POS, key: value})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unsupported_key_on_the_command_line(tmp_path, capsys):
    src = write_checkpoint(tmp_path / "oai", {**WITH_SINK_AND_POS, "use_tied_aux_matrix": True},
                           make_state(WITH_SINK_AND_POS))
    code, _, err = run_main(["import-oai", str(src), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "unsupported use_tied_aux_matrix=True")
    assert not (tmp_path / "run").exists()


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, capsys):
    state = make_state(WITH_SINK_AND_POS)
    del state["transformer.h.1.attn.attn_imp.sink_logit"]  # sink: true, but trained without one
    src = write_checkpoint(tmp_path / "oai", WITH_SINK_AND_POS, state)
    code, _, err = run_main(["import-oai", str(src), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "blocks.1.attn.sink_logit")


def test_text_commands_refuse_a_run_without_tokenizer(tmp_path, capsys):
    run, _ = _import(tmp_path, WITHOUT_SINK_OR_POS)
    for args in (["tasks", "--model", str(run)], ["prune", "--model", str(run), "--pruner", "heaviside"],
                 ["record", "--model", str(run), "--out", str(tmp_path / "store")]):
        code, _, err = run_main(args, capsys)
        assert_one_line_error(code, err, "no tokenizer.json", "--tokenizer")


def test_new_model_fields_keep_old_config_hashes():
    """Runs and stores written before the import fields existed keep their config hashes."""
    assert config_hash(TrainConfig(), get_preset("small").model) == "cb039ed3a344ea11"
    assert config_hash(get_preset("tiny").model) == "d7e0de215bd806cf"


def export_to_reference(run: Path, dest: Path) -> dict:
    """Write a circuitlab run in the reference's format (the inverse of the importer), for a prune test."""
    from safetensors.torch import load_file

    info = read_run(run)
    m = info.model
    w = load_file(str(run / "model.safetensors"))
    sd = {"transformer.wte.weight": w["wte.weight"], "lm_head.weight": w["lm_head.weight"],
          "transformer.wpe.weight": w.get("wpe.weight", torch.zeros(m.n_ctx, m.d_model)),
          "transformer.ln_f.weight": w["ln_f.weight"], "bigram_table": w["bigram"]}
    for k, v in w.items():
        if k.startswith("blocks."):
            _, layer, rest = k.split(".", 2)
            sd[f"transformer.h.{layer}.{rest}"] = v
    config = {"block_size": m.n_ctx, "vocab_size": m.vocab_size, "n_layer": m.n_layer, "n_head": m.n_head,
              "d_head": m.d_head, "d_model": m.d_model, "d_mlp": m.d_mlp, "bias": m.bias, "rms_norm": True,
              "tied_unembed": False, "enable_bigram_table": True, "learnable_bigram_table": True,
              "afrac": None, "pfrac": 0.0625}
    write_checkpoint(dest, config, sd)
    return config


def test_prune_record_and_top_accept_an_imported_run(tiny_run, small_corpus, tmp_path, capsys, toy_registry):
    src = tmp_path / "oai"
    export_to_reference(tiny_run, src)
    run = tmp_path / "imported"
    code, _, err = run_main(["import-oai", str(src), "--out", str(run), "--tokenizer",
                             str(tiny_run / "tokenizer.json"), "--corpus", str(small_corpus)], capsys)
    assert code == 0, err
    assert (run / "tokenizer.json").read_bytes() == (tiny_run / "tokenizer.json").read_bytes()
    out = tmp_path / "pruned"
    code, stdout, err = run_main(["prune", "--model", str(run), "--pruner", "heaviside", "--tasks", "toy",
                                  "--target-loss", "0.6", "--steps", "15", "--n-train", "24", "--n-test", "12",
                                  "--out", str(out), "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(stdout)["tasks"]
    circuit = json.loads((out / "circuits" / "toy.copy_digit.json").read_text())
    assert circuit["node_count"] == row["nodes"] == len(circuit["nodes"]) > 0
    assert circuit["provenance"]["run_provenance"]["imported_from"]["format"] == "openai/circuit_sparsity"
    # record and top accept the imported run too.
    store = tmp_path / "store.zarr"
    code, _, err = run_main(["record", "--model", str(run), "--tasks", "none", "--corpus-windows", "4",
                             "--window", "16", "--out", str(store), "--quiet"], capsys)
    assert code == 0, err
    code, stdout, err = run_main(["top", "--store", str(store), "--node", "0.mlp.neuron.3", "--k", "2", "--json"],
                                 capsys)
    assert code == 0, err
    assert len(json.loads(stdout)["top"]) == 2
    # The imported model computes what the original computed (only the RMSNorm epsilon differs).
    original, tok, _ = load_model(tiny_run)
    imported, _, _ = load_model(run)
    ids = torch.tensor([tok.encode("def f(x):\n    return x + 1\n").ids])
    with torch.no_grad():
        torch.testing.assert_close(imported(ids)[0], original(ids)[0], atol=2e-3, rtol=0)


@pytest.fixture
def toy_registry(monkeypatch):
    reg = plugins.make_registry(extra_plugins=(ToyPlugin,), entrypoints=False)
    monkeypatch.setattr(plugins.registry, "_registry", reg)
    yield reg



def test_gpt2_style_tokenizer_files_are_converted(tiny_run, tmp_path):
    """encoder.json + vocab.bpe (the released tinypython files' format) encode as the tokenizer they came from."""
    from tokenizers import Tokenizer

    from circuitlab.interop.oai import read_tokenizer

    original = Tokenizer.from_file(str(tiny_run / "tokenizer.json"))
    model = json.loads(original.to_str())["model"]
    (tmp_path / "encoder.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    converted = read_tokenizer(tmp_path / "encoder.json", vocab_size=2048)
    text = "def f(x):\n    return {'a': [x, \"b\"]}  # ü\n<|endoftext|>class A:\n\tpass\n"
    assert converted.encode(text).ids == original.encode(text).ids
    assert converted.decode(original.encode(text).ids, skip_special_tokens=False) == text
    with pytest.raises(CircuitlabError, match="has 2048 tokens but the model only 100"):
        read_tokenizer(tmp_path / "encoder.json", vocab_size=100)


@given(norm=st.sampled_from(["rms", "layer"]), norm_bias=st.booleans(), d_pos_emb=st.none() | st.integers(1, 8),
       activation=st.sampled_from(["gelu", "relu"]), residual=st.sampled_from(["identity", "relu"]),
       tied=st.booleans(), bias=st.booleans(), eps=st.none() | st.floats(1e-8, 1e-3),
       locations=st.lists(st.sampled_from(AFRAC_LOCATIONS + RESIDUAL_AFRAC_LOCATIONS), unique=True))
def test_import_fields_round_trip_and_vanish_at_defaults(norm, norm_bias, d_pos_emb, activation, residual, tied,
                                                        bias, eps, locations):
    cfg = ModelConfig(norm=norm, norm_bias=norm_bias, d_pos_emb=d_pos_emb, activation=activation,
                      residual_activation=residual, tied_unembed=tied, final_logits_bias=bias, norm_eps=eps,
                      afrac=0.5, afrac_locations=tuple(locations))
    data = to_dict(cfg)
    assert from_dict(ModelConfig, json.loads(json.dumps(data))) == cfg
    defaults = to_dict(ModelConfig())
    assert not {"norm", "norm_bias", "d_pos_emb", "activation", "residual_activation", "tied_unembed",
                "final_logits_bias"} & set(defaults)
    # The node space follows the input width.
    assert NodeSpace.from_config(cfg).by_hook()["0.mlp.in"].size == cfg.d_model + (d_pos_emb or 0)
