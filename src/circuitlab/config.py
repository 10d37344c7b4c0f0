"""Job records and presets: one frozen attrs class per job, carrying every setting from the CLI to the library.

Defaults and value checks live here, once, on the records; the click options in ``circuitlab.cli``
take their defaults and checks from these fields. Every record round-trips through JSON
(``to_dict`` / ``from_dict``). No torch here: the CLI builds and validates configs before anything
heavy is imported.

The node sites of a block are defined here too (``BLOCK_SITES``, ``ModelConfig.site_widths``), since
they are a property of the model's shape; ``circuitlab.model`` builds the node space from them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

import attrs

from .checks import (  # validators: defined in checks.py, imported from here by the rest of the package
    _key,
    at_least,
    at_most_parallel,
    closed_unit_interval,
    flag,
    is_bool,
    non_negative,
    one_of,
    positive,
    unit_interval,
    valid_seed,
)
from .errors import CircuitlabError, UnknownNameError

#: Node sites inside each block, in forward order (node names are ``LAYER.SITE.INDEX``).
BLOCK_SITES = ("attn.in", "attn.q", "attn.k", "attn.v", "attn.out", "mlp.in", "mlp.neuron", "mlp.out")
#: AbsTopK activation-sparsity locations (Gao et al. 2025, §2.1, A.1): the block sites with ``_`` for ``.``.
AFRAC_LOCATIONS = tuple(site.replace(".", "_") for site in BLOCK_SITES)
#: Further AbsTopK locations on the residual stream itself, after each add (used by imported models).
RESIDUAL_AFRAC_LOCATIONS = ("resid_post_attn", "resid_post_mlp")
#: Normalisations, MLP activations and residual activations a model can use.
NORMS = ("rms", "layer")
ACTIVATIONS = ("gelu", "relu")
RESIDUAL_ACTIVATIONS = ("identity", "relu")
#: What a pruned node is replaced by: its mean over corpus tokens, zero, or its mean over the task's own
#: train prompts (the three ablations of the open replication, jacobcd52/sparse_pretrain_public).
ABLATIONS = ("mean", "zero", "task_mean")
#: Number formats of the mask training's matrix products (PruneConfig.mask_dtype).
MASK_DTYPES = ("bfloat16", "float32")
#: Task-pair splits: train pairs drive pruning, test pairs are reported.
SPLITS = ("train", "test")


#: ``record --precision`` (float32 exact; bitround-N keeps N mantissa bits) and ``--codec`` (docs/store.md).
PRECISIONS = ("float32", "float16", "bfloat16", *(f"bitround-{n}" for n in range(1, 23)))
CODECS = ("auto", "zstd-1", "zstd-3", "blosc-lz4-shuffle", "blosc-lz4-bitshuffle", "blosc-zstd-shuffle", "blosc-zstd-bitshuffle")


def _locations(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    valid = AFRAC_LOCATIONS + RESIDUAL_AFRAC_LOCATIONS
    bad = [v for v in value if v not in valid]
    if bad:
        raise CircuitlabError(f"unknown activation-sparsity location(s) {bad}; valid: {', '.join(valid)}")


def _pos_emb_width(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    at_least(1)(instance, attribute, value)
    if value is not None and instance.pos_emb:
        raise CircuitlabError("pos_emb (added position embedding) and d_pos_emb (concatenated position "
                              "embedding) exclude each other; set one of them")


#: Marks a field added after the first release: ``to_dict`` (and so ``config_hash`` and every
#: config.json) leaves it out while it holds its default, so older runs keep their hashes.
_OMIT_AT_DEFAULT = {"omit_at_default": True}


def _extension(default: Any, validator: Any = None) -> Any:
    return attrs.field(default=default, validator=validator, metadata=_OMIT_AT_DEFAULT)


def _splits(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    bad = [s for s in value if s not in SPLITS]
    if bad or not value:
        raise CircuitlabError(f"{flag(attribute)}: unknown or no split(s) {bad}; valid: {', '.join(SPLITS)}")


def _tuple(x: Any) -> tuple:
    return tuple(x)


# ----------------------------------------------------------------------------------------------------
# The model


@attrs.frozen(kw_only=True)
class ModelConfig:
    """Shape of the sparse GPT-2 core (Gao et al. 2025, §2.1, A.1). Defaults follow the paper where it is affordable."""

    vocab_size: int = _key(2048, at_least(1))  # the paper's tinypython_2k BPE size; set from the trained tokenizer
    n_ctx: int = _key(256, at_least(1))  # training context length, in tokens
    d_model: int = _key(128, at_least(1))  # residual stream width
    n_layer: int = _key(4, at_least(1))
    n_head: int = _key(8, at_least(1))
    d_head: int = _key(16, at_least(1))  # small heads: "anecdotally" more monosemantic (paper A.1)
    d_mlp: int = _key(512, at_least(1))  # 4 * d_model in GPT-2
    bias: bool = _key(True, is_bool)  # linear biases; sparsified like weights by the topk schedule
    attn_sink: bool = _key(False, is_bool)  # per-head learnable attention-denominator logit (paper §1.2)
    bigram_table: bool = _key(True, is_bool)  # dense vocab x vocab logit table so sparse weights need not learn bigrams
    pos_emb: bool = _key(False, is_bool)  # learned absolute position embedding added to the residual; the paper uses none
    afrac: float | None = _key(None, unit_interval)  # AbsTopK kept fraction; None = off
    afrac_locations: tuple[str, ...] = attrs.field(default=AFRAC_LOCATIONS, converter=_tuple, validator=_locations,
                                                   metadata={"json_key": True})
    init_std: float = _key(0.02, positive)
    norm_eps: float | None = _key(1e-6, positive)  # None: the dtype's machine epsilon
    # Shapes other codebases use (``circuitlab import-oai``); the defaults are circuitlab's own model.
    norm: str = _extension("rms", one_of(NORMS))  # rms: RMSNorm (weight only); layer: LayerNorm
    norm_bias: bool = _extension(False)  # LayerNorm only: a learned shift after the scale
    d_pos_emb: int | None = _extension(None, _pos_emb_width)  # concatenate a position embedding this
    # wide to every block's normed input (attn.in and mlp.in are then d_model + d_pos_emb wide)
    activation: str = _extension("gelu", one_of(ACTIVATIONS))  # MLP activation (gelu: the exact erf form)
    residual_activation: str = _extension("identity", one_of(RESIDUAL_ACTIVATIONS))  # after each residual add
    tied_unembed: bool = _extension(False)  # lm_head shares the token embedding matrix
    final_logits_bias: bool = _extension(False)  # a fixed (vocab,) logit bias, a buffer

    @property
    def d_in(self) -> int:
        """Width of each block's input read (``attn.in``, ``mlp.in``): the residual plus any concatenated position."""
        return self.d_model + (self.d_pos_emb or 0)

    def site_widths(self) -> dict[str, int]:
        """Channels at each block site: the one definition of the node space's widths."""
        inner = self.n_head * self.d_head
        return {"attn.in": self.d_in, "attn.q": inner, "attn.k": inner, "attn.v": inner,
                "attn.out": self.d_model, "mlp.in": self.d_in, "mlp.neuron": self.d_mlp,
                "mlp.out": self.d_model}


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
        # Measured (docs/pruning.md, "Tuning"): d_model 128 beat d_model 64 at about equal wall time (val 3.74 vs 4.22 nats).
        model=ModelConfig(n_ctx=128, d_model=128, n_layer=2, n_head=8, d_head=16, d_mlp=512, pos_emb=True),
        steps=1200, batch_size=32, lr=2e-2,
    ),
    "ref": Preset(
        name="ref", summary="benchmark model: about 30 minutes on 2 CPU cores",
        # Measured (benchmarks/results/speed-2-core-cpu): d_model 128 took 17 min for 1,100 steps; d_model 256 steps at 1.9 s, so
        # 900 steps fill the 30 minutes (by those step times d_model 512 would take hours).
        model=ModelConfig(n_ctx=256, d_model=256, n_layer=4, n_head=16, d_head=16, d_mlp=1024, pos_emb=True),
        steps=900, batch_size=32, lr=1e-2,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------------
# Jobs


@attrs.frozen(kw_only=True)
class TrainConfig:
    """How a model is trained (Gao et al. 2025, §2.2, A.2). ``for_preset`` fills steps, batch and lr from a preset."""

    preset: str = attrs.field(default="small", validator=one_of(tuple(PRESETS)))
    sparsity: str = "topk"  # a registered sparsity schedule
    density: float = attrs.field(default=0.0625, validator=unit_interval)  # target kept fraction per matrix
    steps: int = attrs.field(default=1000, validator=at_least(1))
    batch_size: int = attrs.field(default=32, validator=at_least(1))  # sequences per step (global, across ranks)
    lr: float = attrs.field(default=3e-3, validator=positive)  # peak learning rate before the sqrt(L0) factor
    warmup_frac: float = 0.01
    anneal_start_frac: float = 0.01  # sparsity anneal runs from dense at this fraction of training...
    anneal_end_frac: float = 0.5  # ...to the target density at this fraction
    min_per_neuron: int = 4  # each neuron keeps at least this many weights (paper A.2)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 0.1  # unusually large Adam epsilon, as in the paper
    seed: int = attrs.field(default=0, validator=valid_seed)
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = attrs.field(default=50, validator=at_least(1))
    # Keep the weights every this many steps as a run folder of their own (checkpoints/step-NNNNNN);
    # None keeps only the resumable checkpoint, as before. Left out of config.json and the hash at None.
    keep_every: int | None = _extension(None, at_least(1))
    corpus: str | None = None  # folder of .py files; None = the running interpreter's stdlib
    # Corpus files larger than this are skipped. Added after models were cached: hashed only when changed.
    max_file_bytes: int = attrs.field(default=1 << 20, validator=at_least(1), metadata={"hash_if_changed": True})

    @classmethod
    def for_preset(cls, preset: str = "small", **settings: Any) -> TrainConfig:
        """A config with the preset's steps, batch size and lr unless given (``None`` = not given).

        A dense schedule always trains at density 1."""
        p = get_preset(preset)
        given = {k: v for k, v in settings.items() if v is not None}
        given.setdefault("steps", p.steps)
        given.setdefault("batch_size", p.batch_size)
        given.setdefault("lr", p.lr)
        if given.get("sparsity") == "dense":
            given["density"] = 1.0
        return cls(preset=preset, **given)

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The preset's model shape (with the tokenizer's vocabulary size, when known)."""
        base = get_preset(self.preset).model
        return base if vocab_size is None else attrs.evolve(base, vocab_size=vocab_size)


@attrs.frozen(kw_only=True)
class PruneConfig:
    """How a run's tasks are pruned (Gao et al. 2025, §2.2, A.5). ``None`` means the pruner's default."""

    pruner: str = "heaviside"  # a registered pruner (NAME or DIST:NAME)
    objective: str = "binary_ce"  # a registered pruning objective (NAME or DIST:NAME)
    tasks: str | None = None  # "SUITE", "SUITE:task,task", a list across suites; None = every task
    target_loss: float = attrs.field(default=0.15, validator=positive)  # task loss on train pairs
    ablation: str = attrs.field(default="mean", validator=one_of(ABLATIONS))
    freeze_norm: bool = False  # fix the final RMSNorm scale to the unpruned model's (the LayerNorm-cheat control of Drori 2026)
    nonsense: bool = False  # control: answers relabelled by a rule unrelated to the task (circuitlab.tasks.nonsense_pairs)
    calibrate: bool = False  # fit a scale and shift of the logit difference per candidate (paper A.5)
    min_accuracy: float = attrs.field(default=0.9, validator=closed_unit_interval)  # prune only solved tasks
    seed: int = attrs.field(default=0, validator=valid_seed)
    steps: int | None = attrs.field(default=None, validator=at_least(1))
    lr: float | None = attrs.field(default=None, validator=positive)
    penalty_coef: float | None = attrs.field(default=None, validator=non_negative)
    n_train: int = attrs.field(default=256, validator=at_least(1))  # the standard train set's size
    n_test: int = attrs.field(default=128, validator=at_least(1))  # the standard test set's size
    device: str = "cpu"
    threads: int | None = attrs.field(default=1, validator=at_most_parallel)  # small passes: one thread is fastest
    # Worker processes pruning tasks side by side (prune.parallel); None = one per core. Circuits are
    # the same for any value; left out of stored configs at its default.
    jobs: int | None = attrs.field(default=None, validator=at_most_parallel, metadata=_OMIT_AT_DEFAULT)
    batch_pairs: int = attrs.field(default=32, validator=at_least(1))
    # The mask training's matrix products run in this format (autocast; the mixing of ablated nodes,
    # the unembedding, the loss and the optimiser stay float32, and so does attention on CPU unless
    # the model has attention sinks; on CUDA attention runs in it too). bfloat16 products are about 4x
    # faster on a CPU with native bf16 (AVX512-BF16, AMX) and on CUDA; a CPU without it may be slower
    # than with float32. The ranking's bisection, the reported losses and every validation run in
    # float32 whatever this says.
    mask_dtype: str = attrs.field(default="bfloat16", validator=one_of(MASK_DTYPES))
    grid: float = 1.3  # the bisection's upward walk multiplies k by this
    random_draws: int = 3  # random circuits of the same size, for the validation
    retries: int = 2  # when the mask collapsed (see prune.search), retrain it up to this many times ...
    retry_factor: float = 0.25  # ... with the penalty coefficient multiplied by this each time
    retry_above: float = 2.0  # collapsed: the target needed more than this many times the mask's own nodes
    # Mask training stops once the kept set (score > 0) has been the same for this many consecutive
    # steps (prune.search.train_mask); 0 trains every step. Left out of stored configs at its default.
    patience: int = _extension(0, at_least(0))
    # Folders of .py files for tasks mined from code (omitted from config.json and cell keys while None):
    mine_from: str | None = _extension(None)  # cut them from this folder instead of the held-out corpus files
    eval_on: str | None = _extension(None)  # also score each circuit on its task cut from this folder
    # Pruning seeds per task (prune.seeds): seed, seed + 1, ..., seed + seeds - 1. The circuit document
    # is seed's circuit, with the distribution over all of them under "seeds". 1 keeps run fast.
    seeds: int = _extension(1, at_least(1))
    core_share: float = _extension(0.5, unit_interval)  # the core: nodes kept by at least this share of seeds
    # Nodes ablated whatever the mask says (LAYER.SITE.INDEX names): what backup rounds exclude.
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_tuple, metadata=_OMIT_AT_DEFAULT)

    @property
    def method(self) -> str:
        """The label of this pruner and objective in stores, circuits and comparisons."""
        return self.pruner if self.objective == "binary_ce" else f"{self.pruner}+{self.objective}"


@attrs.frozen(kw_only=True)
class RecordConfig:
    """What ``circuitlab record`` puts into an activation store."""

    tasks: str | None = "all"  # all, SUITE, SUITE:task,task, or "none" for corpus windows only
    pairs: int = attrs.field(default=16, validator=at_least(0))  # per task and split; both prompts recorded
    splits: tuple[str, ...] = attrs.field(default=("test",), converter=_tuple, validator=_splits)
    corpus_windows: int = attrs.field(default=256, validator=at_least(0))  # validation-split windows, for top
    window: int = attrs.field(default=64, validator=at_least(2))  # tokens per window (capped at n_ctx)
    seed: int = attrs.field(default=0, validator=valid_seed)
    precision: str = _extension("float32", one_of(PRECISIONS))  # values rounded before compression; read as float32
    codec: str = _extension("auto", one_of(CODECS))  # the activation array's compression; auto: by its zeros
    batch_size: int = _extension(32, at_least(1))  # examples per forward pass (memory only: the values are the same)


@attrs.frozen(kw_only=True)
class ImportConfig:
    """How ``circuitlab import-oai`` turns a released checkpoint folder into a run folder."""

    tokenizer: str | None = None  # a tokenizers JSON file, or an encoder.json with vocab.bpe beside it
    corpus: str | None = None  # .py folder for ablation means and mined tasks; None = the stdlib
    overwrite: bool = False  # replace an existing run folder at --out


@attrs.frozen(kw_only=True)
class CircuitImportConfig:
    """How ``circuitlab import-oai-circuit`` turns released ``viz_data.pt`` circuits into circuit files."""

    task: str | None = None  # None: from the path .../<task>/<sweep>/<k>/viz_data.pt
    suite: str = "python"  # the suite the task belongs to
    store: str | None = None  # also add each circuit to this activation store (method openai-<sweep>)
    skip_unmapped: bool = False  # import the nodes that map and list the rest, instead of refusing the file
    overwrite: bool = False  # replace existing circuit files and store results


@attrs.frozen(kw_only=True)
class GraphExportConfig:
    """What ``circuitlab export-graph`` puts into a circuit-tracer graph."""

    pair: int = attrs.field(default=0, validator=at_least(0))  # which task pair of the split
    prompt: str = attrs.field(default="a", validator=one_of(("a", "b")))  # which prompt of the pair
    split: str = "test"  # task split the pair comes from
    top: int = attrs.field(default=3, validator=at_least(0))  # top-activating corpus tokens per node (with a store)


@attrs.frozen(kw_only=True)
class ViewConfig:
    """What ``circuitlab view`` computes into a circuit page."""

    examples: int = attrs.field(default=5, validator=at_least(0))  # top corpus examples per node (needs a store)
    context: int = attrs.field(default=24, validator=at_least(0))  # tokens shown before the highlighted one
    ablation_pairs: int = attrs.field(default=32, validator=at_least(0))  # test pairs for per-node ablation; 0: skip
    device: str = "cpu"  # where the model runs for the ablations


T = TypeVar("T")


def _keep(attribute: attrs.Attribute, value: Any) -> bool:
    return not (attribute.metadata.get("omit_at_default") and value == attribute.default)


def to_dict(obj: Any) -> dict[str, Any]:
    """A record as JSON-ready data; fields added after the first release are left out at their defaults."""
    return attrs.asdict(obj, recurse=True, filter=_keep)


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
    except CircuitlabError as exc:
        raise CircuitlabError(f"{what} is invalid: {exc}") from None


def _hashed_fields(obj: Any) -> dict[str, Any]:
    """The fields of a record that identify it: fields added later count only when changed from their
    default, so models cached before they existed keep their hash."""
    data = to_dict(obj)
    for a in attrs.fields(type(obj)):
        if a.metadata.get("hash_if_changed") and data.get(a.name) == a.default:
            del data[a.name]
    return data


def config_hash(*objs: Any) -> str:
    """A short stable hash of configs (used to cache trained models)."""
    payload = json.dumps([_hashed_fields(o) if attrs.has(type(o)) else o for o in objs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
