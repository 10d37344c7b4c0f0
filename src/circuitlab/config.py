"""Configs and presets: attrs frozen classes that round-trip through JSON.

No torch here: the CLI builds and validates configs before anything heavy is imported.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

import attrs

from .errors import CircuitlabError

#: AbsTopK activation-sparsity locations (paper-spec §1.5).
AFRAC_LOCATIONS = ("attn_in", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out")


def _tuple(x: Any) -> tuple:
    return tuple(x)


def _unit_interval(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not (0.0 < value <= 1.0):
        raise CircuitlabError(f"{attribute.name} must be in (0, 1], got {value}; pass a fraction such as 0.25")


def _locations(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    bad = [v for v in value if v not in AFRAC_LOCATIONS]
    if bad:
        raise CircuitlabError(f"unknown activation-sparsity location(s) {bad}; valid: {', '.join(AFRAC_LOCATIONS)}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """Shape of the sparse GPT-2 core (paper-spec §1). Defaults follow the paper where it is affordable."""

    vocab_size: int = 2048  # the paper's tinypython_2k BPE size; set from the trained tokenizer
    n_ctx: int = 256  # training context length, in tokens
    d_model: int = 128  # residual stream width
    n_layer: int = 4
    n_head: int = 8
    d_head: int = 16  # small heads: "anecdotally" more monosemantic (paper A.1)
    d_mlp: int = 512  # 4 * d_model in GPT-2
    bias: bool = True  # linear biases; sparsified like weights by the topk schedule
    attn_sink: bool = False  # per-head learnable attention-denominator logit (paper §1.2)
    bigram_table: bool = True  # dense vocab x vocab logit table so sparse weights need not learn bigrams
    pos_emb: bool = False  # learned absolute position embedding added to the residual; the paper uses none
    afrac: float | None = attrs.field(default=None, validator=_unit_interval)  # AbsTopK kept fraction; None = off
    afrac_locations: tuple[str, ...] = attrs.field(default=AFRAC_LOCATIONS, converter=_tuple, validator=_locations)
    init_std: float = 0.02
    norm_eps: float = 1e-6


@attrs.frozen(kw_only=True)
class TrainConfig:
    """How a model is trained (paper-spec §2)."""

    preset: str = "small"
    sparsity: str = "topk"  # a registered sparsity schedule
    density: float = attrs.field(default=0.0625, validator=_unit_interval)  # target kept fraction per matrix
    steps: int = 1000
    batch_size: int = 32  # sequences per optimizer step (global, across DDP ranks)
    lr: float = 3e-3  # peak learning rate before the sqrt(L0) factor
    warmup_frac: float = 0.01
    anneal_start_frac: float = 0.01  # sparsity anneal runs from dense at this fraction of training...
    anneal_end_frac: float = 0.5  # ...to the target density at this fraction
    min_per_neuron: int = 4  # each neuron keeps at least this many weights (paper A.2)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 0.1  # unusually large Adam epsilon, as in the paper
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = 50
    corpus: str | None = None  # folder of .py files; None = the running interpreter's stdlib


@attrs.frozen(kw_only=True)
class Preset:
    name: str
    summary: str
    model: ModelConfig
    steps: int
    batch_size: int
    lr: float


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", summary="test model: trains in well under a minute",
        model=ModelConfig(n_ctx=64, d_model=32, n_layer=2, n_head=2, d_head=16, d_mlp=128),
        steps=150, batch_size=16, lr=1e-2,
    ),
    "small": Preset(
        name="small", summary="default of the main job: trains in about 5 minutes on 2 cores",
        # Measured (README): d_model 128 beat d_model 64 at about equal wall time (val 3.74 vs 4.22 nats).
        model=ModelConfig(n_ctx=128, d_model=128, n_layer=2, n_head=8, d_head=16, d_mlp=512, pos_emb=True),
        steps=1200, batch_size=32, lr=2e-2,
    ),
    "ref": Preset(
        name="ref", summary="benchmark model: about 30 minutes on 2 CPU cores",
        # Measured (README): d_model 128 took 17 min for 1,100 steps; d_model 256 steps at 1.9 s, so
        # 900 steps fill the 30 minutes (feasibility.md also names (256, 4, ctx 256) the largest worth it).
        model=ModelConfig(n_ctx=256, d_model=256, n_layer=4, n_head=16, d_head=16, d_mlp=1024, pos_emb=True),
        steps=900, batch_size=32, lr=1e-2,
    ),
}


def get_preset(name: str) -> Preset:
    from .errors import UnknownNameError

    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


T = TypeVar("T")


def to_dict(obj: Any) -> dict[str, Any]:
    return attrs.asdict(obj, recurse=True)


def from_dict(cls: type[T], data: dict[str, Any], what: str = "config") -> T:
    """Build an attrs class from a dict, refusing unknown keys so typos do not pass silently."""
    if not isinstance(data, dict):
        raise CircuitlabError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = {a.name for a in attrs.fields(cls)}
    extra = sorted(set(data) - names)
    if extra:
        raise CircuitlabError(f"{what} has unknown key(s) {extra}; valid keys: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise CircuitlabError(f"{what} is invalid: {exc}") from None


def config_hash(*objs: Any) -> str:
    """A short stable hash of configs (used to cache trained models)."""
    payload = json.dumps([to_dict(o) if attrs.has(type(o)) else o for o in objs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
