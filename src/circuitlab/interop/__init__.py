"""Models from other codebases, turned into ordinary circuitlab run folders.

``oai``: OpenAI's released circuit_sparsity checkpoints (``circuitlab import-oai``; docs/interop.md);
``oai_circuit``: their released circuits (``viz_data.pt``), read into records (``circuitlab.exchange`` writes them);
``replication``: checkpoints of the open replication (``circuitlab import-replication``).
"""

from .oai import import_oai
from .replication import import_replication

__all__ = ["import_oai", "import_replication"]
