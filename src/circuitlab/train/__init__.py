"""The train layer: the training loop, checkpoints, DDP, sparsity helpers for schedules, and run folders.

Modules: ``loop`` (``train_run``, ``train_step``), ``checkpoint``, ``distributed``, ``sparsity``
(helpers for schedule plugins, also importable as ``circuitlab.sparsity``) and ``runs`` (reading a
run folder, loading its model; ``ensure_model``: train a config's model or reuse the finished one).
torch is imported inside functions only.
"""

from .loop import evaluate_loss, init_run, lr_at, make_optimizer, train_run, train_step
from .runs import RunInfo, cached_run_dir, ensure_model, load_model, read_run, run_summary

__all__ = ["RunInfo", "cached_run_dir", "ensure_model", "evaluate_loss", "init_run", "load_model", "lr_at", "make_optimizer", "read_run",
           "run_summary", "train_run", "train_step"]
