"""Integer indexing (numpy's): take (ONNX Gather), take_along_axis (ONNX GatherElements), and
their internal transposes (scatter-adds), which derivative rules emit.

Indices are int64 or int32 of any shape; a negative index counts from the end; one out of range
gives NaN in a float result and is an error for an integer or bool table.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    INT_DTYPES,
    AttrSpec,
    DTypeError,
    RuleError,
    Shape,
    TensorType,
    define,
    normalize_axes,
    same_size,
    size,
)


def _check_indices(t: TensorType, field: str = "inputs[1]") -> None:
    if t.dtype not in INT_DTYPES:
        raise DTypeError(field, f"indices need int64/int32, got {t.dtype}")


def _axis(axis: int, ndim: int) -> int:
    """The axis as a non-negative number."""
    (axis,) = normalize_axes((axis,), ndim)
    return axis + ndim


def _gather_operands(
    types: Sequence[TensorType], axis: int, what: str
) -> tuple[Shape, Shape, int] | None:
    """(a's shape, the indices' shape, axis as a non-negative number), or None if a rank is
    unknown."""
    a, indices = types
    _check_indices(indices)
    if a.shape is None:
        return None
    if not a.shape:
        raise RuleError("inputs[0]", f"{what} needs an operand with at least one axis")
    axis = _axis(axis, len(a.shape))
    return None if indices.shape is None else (a.shape, indices.shape, axis)


def _take_type(types: Sequence[TensorType], axis: int = 0) -> TensorType:
    dtype = types[0].dtype
    known = _gather_operands(types, axis, "take")
    if known is None:
        return TensorType(None, dtype)
    a, indices, axis = known
    if a[axis] == 0 and size(indices) > 0:
        raise RuleError("inputs[1]", f"cannot take from the empty axis {axis}")
    return TensorType(a[:axis] + indices + a[axis + 1 :], dtype)


def _take_grad_type(types: Sequence[TensorType], axis: int, size: int) -> TensorType:
    g, indices = types
    _check_indices(indices)
    if size < 0:
        raise RuleError("attrs.size", f"must be >= 0, got {size}")
    if axis >= 0:
        raise RuleError("attrs.axis", f"must be negative (from the end), got {axis}")
    if g.shape is None or indices.shape is None:
        return TensorType(None, g.dtype)
    trail = -axis - 1
    pos = len(g.shape) - trail - len(indices.shape)
    held = g.shape[pos : len(g.shape) - trail]
    if pos < 0 or not all(same_size(a, b) for a, b in zip(held, indices.shape, strict=True)):
        raise RuleError("inputs[0]", f"shape {list(g.shape)} does not hold the indices at {axis}")
    return TensorType((*g.shape[:pos], size, *g.shape[len(g.shape) - trail :]), g.dtype)


define(
    "take",
    "a indices:int",
    _take_type,
    "numpy take(a, indices, axis): integer indices of any shape, negative from the end; out "
    "of range gives NaN (float) or an error; indices get no gradient",
    attrs={"axis": AttrSpec("int", 0, doc="the axis to take along")},
)
define(
    "take_grad",
    "g indices:int",
    _take_grad_type,
    "the transpose of take: g scattered (added) into zeros of `size` along the negative "
    "`axis` at the indices",
    attrs={"axis": AttrSpec("int", required=True), "size": AttrSpec("int", required=True)},
    internal=True,
)


def along_shape(a: Shape, indices: Shape, axis: int) -> Shape:
    """take_along_axis's result: the indices' size at axis, the broadcast of both elsewhere."""
    out = []
    for i, (n, m) in enumerate(zip(a, indices, strict=True)):
        if i == axis:
            out.append(m)
        elif n == 1 or m == 1:
            out.append(m if n == 1 else n)
        elif same_size(n, m):
            out.append(max(n, m))
        else:
            raise RuleError("inputs[1]", f"indices {list(indices)} do not broadcast with {list(a)}")
    return tuple(out)


def _take_along_axis_type(types: Sequence[TensorType], axis: int) -> TensorType:
    dtype = types[0].dtype
    known = _gather_operands(types, axis, "take_along_axis")
    if known is None:
        return TensorType(None, dtype)
    a, indices, axis = known
    if len(indices) != len(a):
        raise RuleError(
            "inputs[1]", f"indices need the operand's rank {len(a)}, got {list(indices)}"
        )
    return TensorType(along_shape(a, indices, axis), dtype)


def _take_along_axis_grad_type(types: Sequence[TensorType], axis: int, shape: Shape) -> TensorType:
    g, indices = types
    _check_indices(indices)
    ndim = len(shape)
    if not -ndim <= axis < 0:
        raise RuleError("attrs.axis", f"must be negative and within rank {ndim}, got {axis}")
    if g.shape is None or indices.shape is None:
        return TensorType(tuple(shape), g.dtype)
    if len(g.shape) != ndim or len(indices.shape) > ndim:
        raise RuleError("inputs[0]", f"shape {list(g.shape)} does not fit {list(shape)}")
    lifted = (1,) * (ndim - len(indices.shape)) + indices.shape
    expected = along_shape(tuple(shape), lifted, ndim + axis)
    if not all(same_size(a, b) for a, b in zip(g.shape, expected, strict=True)):
        raise RuleError("inputs[0]", f"shape {list(g.shape)} does not fit {list(shape)}")
    return TensorType(tuple(shape), g.dtype)


define(
    "take_along_axis",
    "a indices:int",
    _take_along_axis_type,
    "numpy take_along_axis(a, indices, axis): indices of a's rank, broadcast on the other "
    "axes; negative from the end; out of range gives NaN (float) or an error",
    attrs={"axis": AttrSpec("int", required=True, doc="the axis to take along")},
)
define(
    "take_along_axis_grad",
    "g indices:int",
    _take_along_axis_grad_type,
    "the transpose of take_along_axis: g added into zeros of `shape` at the indices along "
    "the negative `axis`",
    attrs={"axis": AttrSpec("int", required=True), "shape": AttrSpec("ints", required=True)},
    internal=True,
)
