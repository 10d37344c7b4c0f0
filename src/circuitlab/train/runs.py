"""Run folders: what ``circuitlab train`` writes and every later stage reads.

A run folder holds
- ``config.json``: ``{"kind": "circuitlab-run", "status", "model", "train", "provenance", ...}``;
- ``model.safetensors``: the final weights (written last, so its presence means "complete");
- ``tokenizer.json``: the HF tokenizer the model was trained with (an imported run may lack it: then
  only commands that work on token ids accept it);
- ``corpus_manifest.json``: relpath and sha256 of every corpus file, and the split;
- ``checkpoint.safetensors``: weights plus optimizer, schedule and RNG state, for ``--resume``.
Everything is readable without circuitlab (JSON, safetensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ..config import ModelConfig, TrainConfig, from_dict
from ..errors import CircuitlabError
from ..files import read_json

RUN_KIND = "circuitlab-run"
TOKENIZER = "tokenizer.json"


@attrs.frozen(kw_only=True)
class RunInfo:
    path: Path
    model: ModelConfig
    train: TrainConfig
    meta: dict = attrs.field(eq=False, repr=False)  # the whole config.json

    @property
    def provenance(self) -> dict:
        return self.meta.get("provenance", {})


def read_run(path: str | Path) -> RunInfo:
    """Read and check a run folder's config, without loading weights (no torch)."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").exists():
        raise CircuitlabError(f"{str(path)!r} is not a circuitlab run (no config.json); "
                              "pass a folder written by 'circuitlab train'")
    meta = read_json(path / "config.json", "run config")
    if not isinstance(meta, dict) or meta.get("kind") != RUN_KIND:
        raise CircuitlabError(f"{str(path)!r} is not a circuitlab run (config.json lacks kind={RUN_KIND!r}); "
                              "pass a folder written by 'circuitlab train'")
    if not (path / "model.safetensors").exists():
        raise CircuitlabError(f"run {str(path)!r} has no model.safetensors (training did not finish); "
                              "finish it with 'circuitlab train ... --resume'")
    model = from_dict(ModelConfig, meta.get("model"), f"model config in {str(path / 'config.json')!r}")
    train = from_dict(TrainConfig, meta.get("train"), f"train config in {str(path / 'config.json')!r}")
    return RunInfo(path=path, model=model, train=train, meta=meta)


def require_tokenizer(info: RunInfo) -> Path:
    """The run's tokenizer file, or a one-line error that says how to supply one."""
    path = info.path / TOKENIZER
    if not path.exists():
        raise CircuitlabError(f"run {str(info.path)!r} has no {TOKENIZER}, and this command needs text; supply the "
                              "model's tokenizer with 'circuitlab import-oai SRC --out RUN --tokenizer FILE' (or "
                              f"copy a tokenizers JSON file to {str(path)!r})")
    return path


def load_model(path: str | Path, device: Any = "cpu", *, need_tokenizer: bool = False):
    """Load a finished run: (GPT in eval mode, tokenizer, RunInfo).

    The tokenizer is ``None`` for a run without a tokenizer file (an imported checkpoint): logits
    from token ids need none. Callers that turn text into ids pass ``need_tokenizer=True``, which
    refuses such a run with one line saying how to supply a tokenizer."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..data.tokenizer import load_tokenizer
    from ..model.gpt import GPT

    info = read_run(path)
    weights = info.path / "model.safetensors"
    tok_path = require_tokenizer(info) if need_tokenizer else info.path / TOKENIZER
    model = GPT(info.model)
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CircuitlabError(f"{str(weights)!r} is corrupt ({exc}); retrain the run") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor whose shape does not fit the config
        first = str(exc).strip().splitlines()[-1].strip()
        raise CircuitlabError(f"weights in {str(info.path)!r} do not match its config.json ({first}); restore the "
                              "config.json written by training, or retrain the run") from None
    if missing or unexpected:
        raise CircuitlabError(f"weights in {str(info.path)!r} do not match its config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); retrain the run")
    model.to(device).eval()
    tok = load_tokenizer(tok_path) if tok_path.exists() else None
    return model, tok, info


def run_summary(out: str | Path) -> dict:
    """The headline figures of a finished run, from its config.json."""
    from .sparsity import is_block_matrix

    meta = read_json(Path(out) / "config.json", "run config")
    final = meta.get("final", {})
    block = {k: v for k, v in final.get("densities", {}).items() if is_block_matrix(k)}
    return {
        "run": str(out),
        "sparsity": meta["train"]["sparsity"],
        "target_density": meta["train"]["density"] if meta["train"]["sparsity"] != "dense" else 1.0,
        "steps": final.get("steps"),
        "initial_val_loss": final.get("initial_val_loss"),
        "val_loss": final.get("val_loss"),
        "tokens_per_second": final.get("tokens_per_second"),
        "max_block_matrix_density": max(block.values()) if block else None,
        "corpus_hash": meta["provenance"]["corpus"]["hash"],
        "corpus_files": meta["provenance"]["corpus"].get("files"),
        "corpus_skipped": meta["provenance"]["corpus"].get("skipped", {}),
    }


def cached_run_dir(config: TrainConfig, model_config: ModelConfig) -> Path:
    """Where ``circuitlab run`` keeps the model of a (train config, model config): the cache, by config hash.

    A schedule from a third-party plugin adds its distribution and version to the hash, so a new release
    of the plugin trains a new model; built-in schedules add nothing (their keys are unchanged)."""
    from .. import plugins
    from ..config import config_hash
    from ..files import cache_dir

    plugin = plugins.cache_identity("sparsity", config.sparsity)
    h = config_hash(config, model_config) if plugin is None else config_hash(config, model_config, plugin)
    return cache_dir() / "runs" / f"{config.preset}-{config.sparsity}-d{config.density:g}-{h}"


def ensure_model(config: TrainConfig, model_config: ModelConfig | None = None, *, path: Path | None = None,
                 init: bool = False, progress: bool = True) -> tuple[Path, bool]:
    """Train the model of ``config``, or reuse the finished one already there: (run folder, reused).

    ``path`` defaults to the cache folder of the config (``cached_run_dir``); an interrupted training
    resumes from its checkpoint. ``init=True`` writes the untrained model of the config instead (the
    random-init control): same shape, tokenizer and seed, no training steps."""
    from ..log import logger
    from .loop import init_run, train_run

    model_config = model_config or config.model_config()
    path = Path(path) if path is not None else cached_run_dir(config, model_config)
    if (path / "model.safetensors").exists() and (path / "config.json").exists():
        logger.info(f"reusing cached model {path}")
        return path, True
    if init:
        if path.exists():  # an interrupted write of the untrained control: start it again
            import shutil

            shutil.rmtree(path)
        logger.info(f"writing the untrained model into {path}")
        init_run(config, path, model_config=model_config)
        return path, False
    resume = (path / "checkpoint.safetensors").exists()
    logger.info(f"{'resuming' if resume else 'training'} model into {path}")
    train_run(config, path, model_config=model_config, resume=resume, progress=progress)
    return path, False
