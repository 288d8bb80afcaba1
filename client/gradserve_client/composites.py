"""SDK functions that are compositions of opset ops rather than ops of their own."""

from __future__ import annotations

from .graph import Var
from .ops import mean

__all__ = ["global_avg_pool"]


def global_avg_pool(x: Var) -> Var:
    """The mean over the spatial axes of x (N, C, *S), kept as size 1 (ONNX GlobalAveragePool):
    `mean` over axes 2.. with keepdims."""
    if x.ndim is None or x.ndim < 3:
        shape = "[?]" if x.shape is None else list(x.shape)
        raise ValueError(f"global_avg_pool: x needs shape (N, C, *spatial), got {shape}")
    return mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)
