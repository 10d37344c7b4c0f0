"""Models from other codebases, turned into ordinary circuitlab run folders.

``oai``: OpenAI's released circuit_sparsity checkpoints (``circuitlab import-oai``; docs/interop.md).
"""

from .oai import import_oai

__all__ = ["import_oai"]
