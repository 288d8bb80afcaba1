"""Ops with no operands (constants) and the plumbing ops that derivative rules emit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .core import DTYPES, AttrSpec, RuleError, Shape, TensorType, define


def _constant_type(types: Sequence[TensorType], value: np.ndarray) -> TensorType:
    return TensorType(value.shape, value.dtype.name)


def _zeros_type(types: Sequence[TensorType], shape: Shape, dtype: str) -> TensorType:
    if any(d < 0 for d in shape):
        raise RuleError("attrs.shape", f"negative dimension in {list(shape)}")
    return TensorType(shape, dtype)


def _sum_to_type(types: Sequence[TensorType], shape: Shape, batch_ndim: int) -> TensorType:
    (x,) = types
    if x.shape is None:
        return TensorType(None, x.dtype)
    batch = x.shape[:batch_ndim]
    rest = x.shape[batch_ndim:]
    if len(shape) > len(rest) or any(
        d != 1 and d != r and r >= 0
        for d, r in zip(shape, rest[len(rest) - len(shape) :], strict=True)
    ):
        raise RuleError("attrs.shape", f"cannot sum {list(rest)} down to {list(shape)}")
    return TensorType(batch + shape, x.dtype)


define(
    "constant",
    "",
    _constant_type,
    "a tensor given as the attribute `value`",
    attrs={"value": AttrSpec("tensor", required=True)},
    differentiable=False,
    sdk=False,  # gs.constant(value, dtype, graph=g) and Graph.constant
)
define(
    "zeros",
    "",
    _zeros_type,
    "a tensor of zeros of the given shape and dtype",
    attrs={
        "shape": AttrSpec("ints", required=True),
        "dtype": AttrSpec("string", "float64", choices=DTYPES),
    },
    differentiable=False,
    internal=True,
)
define(
    "sum_to",
    "x",
    _sum_to_type,
    "sum the trailing axes down to `shape` (numpy broadcasting reversed), keeping the first "
    "`batch_ndim` axes",
    attrs={"shape": AttrSpec("ints", required=True), "batch_ndim": AttrSpec("int", 0)},
    internal=True,
)
