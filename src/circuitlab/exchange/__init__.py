"""Circuits to and from other tools' files (docs/interop.md).

Above the store in the import layers, because both directions need circuits, the run's edges and,
optionally, an activation store:
- ``oai_circuits``: OpenAI's released ``viz_data.pt`` circuits -> circuitlab circuit JSON files
  (``circuitlab import-oai-circuit``);
- ``circuit_tracer``: a circuitlab circuit -> circuit-tracer's attribution-graph JSON
  (``circuitlab export-graph``).
"""

from .circuit_tracer import export_graph
from .oai_circuits import import_oai_circuits

__all__ = ["export_graph", "import_oai_circuits"]
