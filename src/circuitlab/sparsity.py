"""Compatibility path for schedule plugins: the sparsity helpers now live in ``circuitlab.train.sparsity``.

Plugin packages written against ``from circuitlab.sparsity import ...`` keep working.
"""

from .train.sparsity import (  # noqa: F401
    SparseParam,
    is_block_matrix,
    kept_count,
    nonzero_densities,
    overall_density,
    sparse_parameters,
    topk_mask,
    unwrap,
)

__all__ = ["SparseParam", "is_block_matrix", "kept_count", "nonzero_densities", "overall_density",
           "sparse_parameters", "topk_mask", "unwrap"]
