"""``beeg_config.json`` of OpenAI's circuit_sparsity checkpoints -> ``ModelConfig`` (no torch here).

The released config is one flat JSON object: the reference ``GPTConfig`` dataclass
(``circuit_sparsity/inference/gpt.py``) plus internal training fields. Every key falls in one of four
groups, so none passes unseen:

- mapped: changes the forward pass, and becomes a ``ModelConfig`` field (values checked);
- ignored: training, initialisation or runtime switches that leave the eval-mode forward unchanged;
  they are listed in the run's provenance and on stderr;
- must hold a neutral value (``use_tied_aux_matrix: false``, ``bigram_table_rank: null``...): any other
  value is refused, naming the key and value;
- unknown: listed as ignored too (released configs carry many training-only fields).
"""

from __future__ import annotations

from typing import Any

import attrs

from ..config import AFRAC_LOCATIONS, RESIDUAL_AFRAC_LOCATIONS, ModelConfig
from ..errors import CircuitlabError

#: The reference dataclass's defaults: a released config that omits a key gets these.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "block_size": 1024, "vocab_size": 50304, "n_layer": 12, "n_head": 12, "d_head": None, "d_model": 768,
    "dropout": 0.0, "bias": True, "ln_bias": True, "rms_norm": False, "residual_activation_type": "identity",
    "activation_type": "gelu", "afrac": None, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
    "debug_nans": False, "tied_unembed": True, "tokenizer_name": "tinypython_2k", "grad_checkpointing": True,
    "d_mlp": None, "enable_bigram_table": False, "learnable_bigram_table": False, "d_pos_emb": None,
    "dropout_cat_pos_emb": False, "sinusoidal_cat_pos_emb": False, "enable_sparse_kernels": False,
    "flash": True, "sink": False,
}

#: Keys that leave the eval-mode forward unchanged, and why.
IGNORED = {
    "dropout": "dropout is off in eval mode",
    "dropout_cat_pos_emb": "dropout is off in eval mode",
    "debug_nans": "runtime finiteness asserts",
    "grad_checkpointing": "training memory switch",
    "learnable_bigram_table": "parameter or buffer, the table is used the same way",
    "sinusoidal_cat_pos_emb": "initialisation only; the position embedding is in the weights",
    "enable_sparse_kernels": "kernel choice",
    "flash": "attention kernel choice (the sink is applied whenever sink is true)",
    "tokenizer_name": "kept in provenance; pass the tokenizer with --tokenizer",
    # Internal fields of the released configs, outside the published dataclass: training only.
    "afrac_approx": "training only", "ignore_dw_grad": "training only", "pfrac": "weight sparsity target (training)",
    "expansion_factor": "training sweep label", "expansion_factor_mlp": "training sweep label",
    "debug_exact_topk": "training only", "sparse_matmul_impl": "kernel choice", "rtopk": "training only",
    "afrac_ste": "backward pass only", "afrac_ste_only_non_neurons": "backward pass only",
    "mup_width_multiplier": "used only with mup",
}

#: Keys whose only supported value is neutral (null or false): anything else changes the model in a
#: way circuitlab does not implement.
NEUTRAL = ("use_tied_aux_matrix", "bigram_table_rank", "unembed_rank", "n_embd", "mup", "enable_fp8_linear",
           "scale_invariance")

#: Keys that map onto ModelConfig (plus the legacy ``n_mlp``, read as ``d_mlp``).
MAPPED = ("block_size", "vocab_size", "n_layer", "n_head", "d_head", "d_model", "d_mlp", "bias", "ln_bias",
          "rms_norm", "residual_activation_type", "activation_type", "afrac", "afrac_loctypes", "tied_unembed",
          "enable_bigram_table", "d_pos_emb", "sink")

LOCATIONS = AFRAC_LOCATIONS + RESIDUAL_AFRAC_LOCATIONS

#: The largest value of each dimension an import accepts (docs/interop.md). Released models are far below
#: (csp_yolo2: 8 layers, d_model 2048); the bound refuses a damaged or hostile config before anything is
#: built from it, and the weights must then match it tensor by tensor.
MAX_DIMS = {"n_layer": 1024, "n_head": 4096, "d_model": 1 << 16, "d_head": 1 << 16, "d_mlp": 1 << 18,
            "d_pos_emb": 1 << 16, "vocab_size": 1 << 21, "block_size": 1 << 20}


def unsupported(key: str, value: Any, why: str) -> CircuitlabError:
    return CircuitlabError(f"beeg_config.json: unsupported {key}={value!r} ({why}); circuitlab cannot import "
                           "this checkpoint faithfully")


def _int(cfg: dict, key: str, minimum: int = 1) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise unsupported(key, value, f"expected an integer >= {minimum}")
    if key in MAX_DIMS and value > MAX_DIMS[key]:
        raise unsupported(key, value, f"larger than the {MAX_DIMS[key]} circuitlab imports")
    return value


def _bool(cfg: dict, key: str) -> bool:
    value = cfg[key]
    if not isinstance(value, bool):
        raise unsupported(key, value, "expected true or false")
    return value


def _choice(cfg: dict, key: str, choices: tuple[str, ...]) -> str:
    if cfg[key] not in choices:
        raise unsupported(key, cfg[key], f"supported: {', '.join(choices)}")
    return cfg[key]


def _afrac(cfg: dict) -> tuple[float | None, tuple[str, ...]]:
    afrac, loctypes = cfg["afrac"], cfg["afrac_loctypes"]
    if not isinstance(loctypes, str):
        raise unsupported("afrac_loctypes", loctypes, "expected a comma-separated string")
    # The reference matches split(",") entries exactly and ignores unknown ones; we refuse them instead.
    names = tuple(n for n in loctypes.split(",") if n != "")
    bad = [n for n in names if n not in LOCATIONS]
    if bad:
        raise unsupported("afrac_loctypes", loctypes, f"unknown location(s) {bad}; known: {', '.join(LOCATIONS)}")
    if afrac is None:
        return None, names
    if isinstance(afrac, bool) or not isinstance(afrac, (int, float)) or not 0 < afrac <= 1:
        raise unsupported("afrac", afrac, "expected null or a fraction in (0, 1]")
    return float(afrac), names


def _check_topk_widths(model: ModelConfig) -> None:
    """The reference keeps int(afrac * width) entries; zero would silence a location, which we refuse."""
    if model.afrac is None:
        return
    widths = dict(model.site_widths(), resid_post_attn=model.d_model, resid_post_mlp=model.d_model)
    for site, width in widths.items():
        loc = site.replace(".", "_")
        if loc in model.afrac_locations and int(model.afrac * width) < 1:
            raise unsupported("afrac", model.afrac, f"keeps no entry of the {width} at {loc}")


def _split_keys(raw: dict) -> tuple[dict, list[str]]:
    """The reference config (defaults filled in) and the keys to list as ignored; refuses non-neutral keys."""
    cfg = dict(REFERENCE_DEFAULTS)
    ignored = []
    for key, value in raw.items():
        if key in NEUTRAL:
            if value not in (None, False, 0):
                raise unsupported(key, value, "only null or false is supported")
        elif key == "n_mlp":  # legacy name of d_mlp
            if raw.get("d_mlp") is None:
                cfg["d_mlp"] = value
        elif key in MAPPED:
            cfg[key] = value
        else:
            cfg[key] = value
            if key not in REFERENCE_DEFAULTS or value != REFERENCE_DEFAULTS[key]:
                ignored.append(key)
    return cfg, sorted(ignored)


def model_config_from_oai(raw: Any) -> tuple[ModelConfig, dict]:
    """Map a parsed beeg_config.json to (ModelConfig, notes). Refuses what it cannot honour.

    ``notes`` has ``ignored`` ({key: reason}) and ``tokenizer_name``. ``final_logits_bias`` is decided
    by the weights (``circuitlab.interop.oai``), not the config.
    """
    if not isinstance(raw, dict):
        raise CircuitlabError(f"beeg_config.json must be a JSON object, got {type(raw).__name__}")
    cfg, ignored = _split_keys(raw)
    d_model, n_head = _int(cfg, "d_model"), _int(cfg, "n_head")
    if d_model % n_head:  # the reference asserts this even when d_head is given
        raise unsupported("n_head", n_head, f"the reference requires d_model={d_model} to be a multiple of it")
    d_head = d_model // n_head if cfg["d_head"] is None else _int(cfg, "d_head")
    d_mlp = 4 * d_model if cfg["d_mlp"] is None else _int(cfg, "d_mlp")
    d_pos_emb = None if cfg["d_pos_emb"] is None else _int(cfg, "d_pos_emb")
    rms = _bool(cfg, "rms_norm")
    afrac, locations = _afrac(cfg)
    try:
        model = ModelConfig(
            vocab_size=_int(cfg, "vocab_size"), n_ctx=_int(cfg, "block_size"), d_model=d_model,
            n_layer=_int(cfg, "n_layer"), n_head=n_head, d_head=d_head, d_mlp=d_mlp, bias=_bool(cfg, "bias"),
            attn_sink=_bool(cfg, "sink"), bigram_table=_bool(cfg, "enable_bigram_table"),
            # Without d_pos_emb the reference always adds a learned position embedding to the residual.
            pos_emb=d_pos_emb is None, d_pos_emb=d_pos_emb, afrac=afrac, afrac_locations=locations,
            norm="rms" if rms else "layer", norm_bias=(not rms) and _bool(cfg, "ln_bias"),
            # torch.nn.RMSNorm(eps=None) uses the dtype's machine epsilon; the reference LayerNorm uses 1e-5.
            norm_eps=None if rms else 1e-5,
            activation=_choice(cfg, "activation_type", ("gelu", "relu")),
            residual_activation=_choice(cfg, "residual_activation_type", ("identity", "relu")),
            tied_unembed=_bool(cfg, "tied_unembed"),
        )
    except CircuitlabError as exc:
        if str(exc).startswith("beeg_config.json"):
            raise
        raise CircuitlabError(f"beeg_config.json: {exc}") from None
    _check_topk_widths(model)
    notes = {"ignored": {k: IGNORED.get(k, "unknown key, assumed training-only") for k in ignored},
             "tokenizer_name": cfg.get("tokenizer_name")}
    return model, notes


def with_final_logits_bias(model: ModelConfig, present: bool) -> ModelConfig:
    return attrs.evolve(model, final_logits_bias=present)
