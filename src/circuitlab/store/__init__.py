"""Activation stores: what a model computed on task prompts and corpus windows, and what each
circuit-finding method chose, in one labelled, chunked zarr v3 store (schema: docs/store.md).

Layout of a store folder (a zarr v3 hierarchy; ``xarray.open_zarr(STORE)`` opens the root)::

    STORE/                      root group: the activation dataset, schema and lookup tables in attrs
      activation                (example, token, node) float32 (maybe rounded: attrs["storage"]), >= 1 MB chunks
      token_ids                 (example, token) int32, -1 after each example's last token
      length                    (example,) int32: valid tokens of each example
      target, contrast          (example,) int32: a task prompt's right and wrong next token (-1: corpus)
      offset                    (example,) int64: a corpus window's first token in the val split (-1: task)
      node_mean                 (node,) float32: the mean activation per node used for mean ablation
      coordinates               example, task, side, split, pair (on example); node, layer, site, index (on node)
      methods/<method>/<suite:task>/  one group per method and task (written by ``add_circuit``/``add_method_result``)
        score, kept             (node,) float32 and bool
        edge_src, edge_dst      (edge,) int32: the circuit's edges as flat node indices
        attrs                   loss, edges, nodes, provenance

Strings never go into arrays (zarr v3 has no stable string dtype): ``site``, ``task``, ``side`` and
``split`` are integer codes, and ``attrs["codes"][NAME][code]`` is the label. ``task == -1`` marks a
corpus window.

Writes are atomic: ``record`` builds the whole store in a sibling temporary folder and renames it into
place; each method result is written as its own group in a temporary folder and renamed into
``methods/<method>/<suite:task>``. So a reader never sees half a store or half a method, a method never
rewrites another's data, and concurrent writers of different methods never touch the same file.
"""

from .io import install_store, open_store, read_values, to_torch, write_dataset
from .methods import MethodResult, add_circuit, add_method_result, list_methods, method_group, open_method
from .query import stored_task_losses, top_examples, top_examples_many
from .record import RecordInputs, ensure_store, record_run, record_store
from .schema import (
    SCHEMA,
    SCHEMA_VERSION,
    SIDES,
    SUPPORTED_SCHEMA_VERSIONS,
    ExampleBatch,
    base_attributes,
    check_model,
    chunk_examples,
    model_identity,
    node_coords,
    node_space,
)

__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "SIDES", "SUPPORTED_SCHEMA_VERSIONS", "ExampleBatch", "MethodResult", "RecordInputs", "add_circuit",
    "add_method_result",
    "base_attributes", "check_model", "chunk_examples", "ensure_store", "install_store", "list_methods",
    "method_group", "model_identity", "node_coords", "node_space", "open_method", "open_store", "read_values",
    "record_run", "record_store", "stored_task_losses", "to_torch", "top_examples", "top_examples_many",
    "write_dataset",
]
