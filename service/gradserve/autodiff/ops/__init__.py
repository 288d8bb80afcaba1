"""The op table. Importing this package registers every op in `registry.OPS`."""

from gradserve.autodiff.ops import (
    conv,
    einsum,
    elementwise,
    indexing,
    internal,
    linalg,
    nn,
    norm,
    pooling,
    reductions,
    structure,
)

__all__ = [
    "conv",
    "einsum",
    "elementwise",
    "indexing",
    "internal",
    "linalg",
    "nn",
    "norm",
    "pooling",
    "reductions",
    "structure",
]
