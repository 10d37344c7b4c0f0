"""``circuitlab import-replication``: a checkpoint of the open replication -> a circuitlab run folder.

The open replication (``jacobcd52/sparse_pretrain_public``; its models ``ss_d128_f1``,
``ss_bridges_d1024_f0.015625`` on SimpleStories) saves a model as a folder with ``config.json``
(``model_config``, ``sparsity_config``, ``training_config``, and ``bridges_config`` for bridges
runs) and the state dict of its model class (``src/model.py``, ``SparseGPT``): ``pytorch_model.bin``
for a standalone model, ``sparse_model.bin`` (plus ``bridges.bin``) for a bridges run. A
``model.safetensors`` with the same names is read too. The weights are read weights-only (never a
full unpickle); safetensors holds nothing else.

The class follows the paper as circuitlab's GPT does, key for key (docs/interop.md lists every key).
What differs, and how the import treats it:
- bridges (the encoders and decoders coupling a dense and a sparse model) are not part of the sparse
  model's forward pass: ``bridges.bin`` is listed as ignored, never loaded;
- ``resid_pre`` AbsTopK also sparsifies the embedding before layer 0, where circuitlab has no site:
  refused; ``resid_mid`` is circuitlab's ``resid_post_attn``;
- the attention sink is applied only on the flash path (``use_flash_attention``, default true);
- norms: ``nn.RMSNorm`` with the dtype's machine epsilon, or ``nn.LayerNorm`` (eps 1e-5, bias).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import AFRAC_LOCATIONS, ImportConfig, ModelConfig, to_dict
from ..errors import CircuitlabError
from ..files import read_json, sha256_file
from .oai import _tokenizer_hash, read_tokenizer, torch_load_weights_only, write_run

SOURCE_FORMAT = "jacobcd52/sparse_pretrain_public"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "sparse_model.bin")  # the first present is read
TOKENIZER_FILE = "tokenizer.json"

#: ``ModelConfig`` defaults of the replication's dataclass (``src/config.py``).
MODEL_DEFAULTS: dict[str, Any] = {
    "n_layer": 8, "d_model": 1024, "n_ctx": 256, "d_head": 16, "d_mlp": None, "vocab_size": None,
    "use_rms_norm": True, "tie_embeddings": False, "use_positional_embeddings": False, "use_bigram_table": True,
    "use_attention_sinks": True, "activation": "gelu", "dropout": 0.0, "use_bias": True,
    "use_flash_attention": True,
}
#: ``SparsityConfig`` defaults: what a saved config that omits a key gets.
SPARSITY_DEFAULTS: dict[str, Any] = {
    "enable_activation_sparsity": True, "activation_topk_fraction": 0.25,
    "activation_sparsity_locations": "attn_in,attn_out,mlp_in,mlp_out,mlp_neuron,attn_v,attn_k,attn_q",
}
#: Keys that leave the eval-mode forward unchanged, and why.
IGNORED = {
    "dropout": "dropout is off in eval mode",
    "use_flash_attention": "kernel choice; it also decides whether the sink is used (see attn_sink)",
    "enable_weight_sparsity": "training: the zeros are in the weights",
    "target_l0_fraction": "training: the zeros are in the weights",
    "min_weights_per_neuron": "training", "sparsity_anneal_start_fraction": "training",
    "sparsity_anneal_end_fraction": "training", "anneal_type": "training",
}
_LOCATION = {n: n for n in AFRAC_LOCATIONS} | {"resid_mid": "resid_post_attn"}

_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)")
_SAME_BLOCK = re.compile(r"(ln_1|ln_2)\.(weight|bias)|(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)")
_TOP = {"wte.weight": "wte.weight", "wpe.weight": "wpe.weight", "ln_f.weight": "ln_f.weight",
        "ln_f.bias": "ln_f.bias", "lm_head.weight": "lm_head.weight", "bigram_table": "bigram"}


def unsupported(key: str, value: Any, why: str) -> CircuitlabError:
    return CircuitlabError(f"{CONFIG_FILE}: unsupported {key}={value!r} ({why}); circuitlab cannot import this "
                           "checkpoint faithfully")


def _get(cfg: dict, key: str, kind: type, minimum: int | None = None) -> Any:
    value = cfg[key]
    if kind is bool and not isinstance(value, bool):
        raise unsupported(key, value, "expected true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < (minimum or 1)):
        raise unsupported(key, value, f"expected an integer >= {minimum or 1}")
    return value


def model_config_from_replication(raw: Any) -> tuple[ModelConfig, dict]:
    """A parsed config.json -> (ModelConfig, notes with ``ignored`` {key: why} and ``tokenizer_name``)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model_config"), dict):
        raise CircuitlabError(f"{CONFIG_FILE} has no model_config object; pass a checkpoint folder of "
                              f"{SOURCE_FORMAT} (config.json with model_config, and pytorch_model.bin)")
    ignored: dict[str, str] = {}
    mc = dict(MODEL_DEFAULTS)
    for key, value in raw["model_config"].items():
        if key not in MODEL_DEFAULTS:
            ignored[f"model_config.{key}"] = "unknown key, assumed training-only"
        mc[key] = value
    sc = dict(SPARSITY_DEFAULTS)
    for key, value in (raw.get("sparsity_config") or {}).items():
        if key not in SPARSITY_DEFAULTS:
            ignored[f"sparsity_config.{key}"] = IGNORED.get(key, "unknown key, assumed training-only")
        sc[key] = value
    for key in ("dropout", "use_flash_attention"):
        if key in raw["model_config"]:
            ignored[f"model_config.{key}"] = IGNORED[key]
    for section in sorted(set(raw) - {"model_config", "sparsity_config"}):
        ignored[section] = ("bridges between a dense and this sparse model: not part of its forward pass"
                            if section == "bridges_config" else "training settings")
    if mc["vocab_size"] is None:
        raise unsupported("vocab_size", None, "the model's vocabulary size is required")
    d_model, d_head = _get(mc, "d_model", int), _get(mc, "d_head", int)
    if d_model % d_head:
        raise unsupported("d_head", d_head, f"the model class requires d_model={d_model} to be a multiple of it")
    d_mlp = 4 * d_model if mc["d_mlp"] is None else _get(mc, "d_mlp", int)
    if mc["activation"] not in ("gelu", "relu"):
        raise unsupported("activation", mc["activation"], "supported: gelu, relu")
    afrac, locations = None, ()
    if _get(sc, "enable_activation_sparsity", bool):
        frac = sc["activation_topk_fraction"]
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            raise unsupported("activation_topk_fraction", frac, "expected a fraction in (0, 1]")
        names = [n for n in str(sc["activation_sparsity_locations"]).split(",") if n]
        if "resid_pre" in names:
            raise unsupported("activation_sparsity_locations", sc["activation_sparsity_locations"],
                              "resid_pre also sparsifies the embedding before layer 0, where circuitlab has no site")
        unknown = [n for n in names if n not in _LOCATION]
        if unknown:
            ignored["sparsity_config.activation_sparsity_locations"] = (
                f"{', '.join(unknown)}: not a location of the model class, no effect")
        afrac, locations = float(frac), tuple(_LOCATION[n] for n in names if n in _LOCATION)
    rms = _get(mc, "use_rms_norm", bool)
    try:
        model = ModelConfig(
            vocab_size=_get(mc, "vocab_size", int), n_ctx=_get(mc, "n_ctx", int), d_model=d_model,
            n_layer=_get(mc, "n_layer", int), n_head=d_model // d_head, d_head=d_head, d_mlp=d_mlp,
            bias=_get(mc, "use_bias", bool),
            # The class builds the sink on every path but applies it only with flash attention.
            attn_sink=_get(mc, "use_attention_sinks", bool) and _get(mc, "use_flash_attention", bool),
            bigram_table=_get(mc, "use_bigram_table", bool), pos_emb=_get(mc, "use_positional_embeddings", bool),
            afrac=afrac, afrac_locations=locations, norm="rms" if rms else "layer", norm_bias=not rms,
            norm_eps=None if rms else 1e-5, activation=mc["activation"], residual_activation="identity",
            tied_unembed=_get(mc, "tie_embeddings", bool),
        )
    except CircuitlabError as exc:
        raise CircuitlabError(f"{CONFIG_FILE}: {exc}") from None
    tokenizer_name = (raw.get("training_config") or {}).get("tokenizer_name")
    return model, {"ignored": dict(sorted(ignored.items())), "tokenizer_name": tokenizer_name}


def circuitlab_name(name: str, model: ModelConfig) -> str | None:
    """circuitlab's parameter name of a replication state-dict key; None: not a parameter circuitlab uses."""
    if name in _TOP:
        return _TOP[name]
    m = _BLOCK_RE.fullmatch(name)
    if m is None:
        return None
    layer, rest = m.groups()
    if _SAME_BLOCK.fullmatch(rest):
        return f"blocks.{layer}.{rest}"
    if rest == "attn.attn_fn.sink_logit" and model.attn_sink:
        return f"blocks.{layer}.attn.sink_logit"
    return None


def read_state(path: Path) -> dict[str, Any]:
    """A state dict from safetensors or a weights-only torch file; one-line errors."""

    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CircuitlabError(f"{str(path)!r} is not a readable safetensors file "
                                  f"({str(exc).splitlines()[0][:120]}); download it again") from None
    state = torch_load_weights_only(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CircuitlabError(f"{str(path)!r} is not a state dict of named tensors (got {type(state).__name__}); "
                              f"pass a checkpoint folder of {SOURCE_FORMAT}")
    return state


def convert_state(state: dict[str, Any], model: ModelConfig, file: str) -> tuple[dict[str, Any], list[str]]:
    """Replication tensors -> circuitlab float32 tensors, name by name and shape by shape; also the skipped keys."""
    import torch

    from ..model.gpt import GPT

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(model).state_dict().items()}
    out, skipped, unexpected = {}, [], []
    for name, tensor in state.items():
        target = circuitlab_name(name, model)
        if target is None or target not in expected:
            if name.endswith(".attn.causal_mask") or name.endswith(".attn.attn_fn.sink_logit"):
                skipped.append(name)  # the slow path's mask buffer; a sink the class does not apply
            else:
                unexpected.append(name)
            continue
        if tuple(tensor.shape) != expected[target]:
            raise CircuitlabError(f"{file}: {name} has shape {tuple(tensor.shape)}, but {CONFIG_FILE} implies "
                                  f"{expected[target]}; the two files do not belong together")
        out[target] = tensor.to(torch.float32).contiguous()
    if unexpected:
        raise CircuitlabError(f"{file} has tensors circuitlab cannot map: {unexpected[:4]}"
                              f"{' ...' if len(unexpected) > 4 else ''}; check that {CONFIG_FILE} belongs to it")
    missing = sorted(set(expected) - set(out))
    if missing:
        raise CircuitlabError(f"{file} lacks {missing[:4]}{' ...' if len(missing) > 4 else ''} that {CONFIG_FILE} "
                              "calls for")
    if model.tied_unembed:
        if not torch.equal(out["wte.weight"], out["lm_head.weight"]):
            raise CircuitlabError(f"{CONFIG_FILE} says tie_embeddings: true, but wte and lm_head differ in {file}")
        out["lm_head.weight"] = out["lm_head.weight"].clone()
    return out, sorted(skipped)


def import_replication(src: str | Path, out: str | Path, config: ImportConfig | None = None, note=None) -> dict:
    """Convert the replication's checkpoint folder ``src`` into the run folder ``out``; returns a summary."""
    config = config or ImportConfig()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CircuitlabError(f"{str(src)!r} is not a folder; pass the checkpoint folder holding {CONFIG_FILE} "
                              "and pytorch_model.bin (or sparse_model.bin)")
    raw = read_json(src / CONFIG_FILE, CONFIG_FILE)
    model, notes = model_config_from_replication(raw)
    if out.exists() and not config.overwrite:
        raise CircuitlabError(f"{str(out)!r} already exists; pass --overwrite to replace it, or another --out")
    weights = next((src / f for f in WEIGHT_FILES if (src / f).exists()), None)
    if weights is None:
        raise CircuitlabError(f"{str(src)!r} has none of {', '.join(WEIGHT_FILES)}; pass a checkpoint folder of "
                              f"{SOURCE_FORMAT}")
    tok_path = config.tokenizer or (str(src / TOKENIZER_FILE) if (src / TOKENIZER_FILE).exists() else None)
    tok = read_tokenizer(tok_path, model.vocab_size) if tok_path else None
    tensors, skipped = convert_state(read_state(weights), model, weights.name)
    ignored_files = [f for f in ("bridges.bin",) if (src / f).exists()]
    if note:
        if notes["ignored"]:
            note(f"ignored config keys (no effect on the sparse model's eval forward): {', '.join(notes['ignored'])}")
        if ignored_files:
            note(f"ignored {', '.join(ignored_files)}: the bridges are not part of the sparse model's forward pass")
    provenance = {
        "circuitlab_version": __version__, "imported_from": {
            "format": SOURCE_FORMAT, "path": str(src.resolve()), "weights_file": weights.name,
            "config_sha256": sha256_file(src / CONFIG_FILE), "weights_sha256": sha256_file(weights),
            "config": raw, "ignored_keys": notes["ignored"], "ignored_files": ignored_files,
            "skipped_tensors": skipped, "tokenizer_name": notes["tokenizer_name"]},
        "tokenizer": None if tok is None else str(Path(tok_path).resolve()),
        "tokenizer_hash": None if tok is None else _tokenizer_hash(tok),
        "corpus": {"hash": None, "note": "trained on the replication's corpus; ablation means and mined tasks use "
                                         "train.corpus (default: this interpreter's stdlib)"},
    }
    write_run(out, tensors, model, provenance, tok, config.corpus, SOURCE_FORMAT)
    return {"run": str(out), "source": str(src), "weights_file": weights.name, "model": to_dict(model),
            "ignored_keys": notes["ignored"], "ignored_files": ignored_files, "skipped_tensors": skipped,
            "tokenizer": provenance["tokenizer"],
            "stored_values": int(sum(t.numel() for t in tensors.values()))}
