"""Linear algebra: matmul, dot, outer (numpy's)."""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    NUMERIC,
    RuleError,
    TensorType,
    broadcast_shapes,
    define,
    same_dtype,
    same_size,
    size,
)


def _operand_ranks(types: Sequence[TensorType], what: str) -> None:
    for i, t in enumerate(types):
        if t.ndim == 0:
            raise RuleError(f"inputs[{i}]", f"{what} needs at least one dimension (use multiply)")


def _contracted(a: TensorType, b: TensorType, what: str) -> None:
    assert a.shape is not None and b.shape is not None
    k = b.shape[-2] if len(b.shape) >= 2 else b.shape[0]
    if not same_size(a.shape[-1], k):
        raise RuleError(
            "inputs[1]",
            f"{what}: shapes {list(a.shape)} and {list(b.shape)} are not aligned "
            f"({a.shape[-1]} != {k})",
        )


def _matmul_type(types: Sequence[TensorType]) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "matmul")
    _operand_ranks(types, "matmul")
    a, b = types
    if a.shape is None or b.shape is None:
        return TensorType(None, dtype)
    _contracted(a, b, "matmul")
    stack = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    assert stack is not None
    rows = a.shape[-2:-1] if len(a.shape) >= 2 else ()
    cols = b.shape[-1:] if len(b.shape) >= 2 else ()
    return TensorType(stack + rows + cols, dtype)


def _dot_type(types: Sequence[TensorType]) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "dot")
    a, b = types
    if a.ndim == 0 or b.ndim == 0:
        return TensorType(broadcast_shapes(a.shape, b.shape), dtype)
    if a.shape is None or b.shape is None:
        return TensorType(None, dtype)
    _contracted(a, b, "dot")
    cols = b.shape[:-2] + b.shape[-1:] if len(b.shape) >= 2 else ()
    return TensorType(a.shape[:-1] + cols, dtype)


def _outer_type(types: Sequence[TensorType]) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "outer")
    a, b = types
    return TensorType((size(a.shape), size(b.shape)), dtype)


define(
    "matmul",
    "x1 x2",
    _matmul_type,
    "numpy matmul (x1 @ x2): 1-D operands are promoted, stack dimensions broadcast",
)
define(
    "dot",
    "x1 x2",
    _dot_type,
    "numpy dot: sum over x1's last and x2's second-to-last axis; a 0-d operand multiplies",
)
define(
    "outer",
    "x1 x2",
    _outer_type,
    "numpy outer: the product of every element of x1 (flattened) with every element of x2",
)
