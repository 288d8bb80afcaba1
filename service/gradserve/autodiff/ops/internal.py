"""Ops with no operands (constants) and the plumbing ops that derivative rules emit."""

from __future__ import annotations

import numpy as np

from gradserve.autodiff.ir import DTYPES, TensorType
from gradserve.autodiff.registry import AttrSpec, OpDef, RuleError, register
from gradserve.autodiff.symbolic import op


def _constant_type(types: list[TensorType], value: np.ndarray) -> TensorType:
    return TensorType(value.shape, value.dtype.name)


def _constant(*, value: np.ndarray) -> np.ndarray:
    return value


def _zeros_type(types: list[TensorType], shape: tuple[int, ...], dtype: str) -> TensorType:
    if dtype not in DTYPES:
        raise RuleError("attrs.dtype", f"unknown dtype {dtype!r}")
    if any(d < 0 for d in shape):
        raise RuleError("attrs.shape", f"negative dimension in {list(shape)}")
    return TensorType(shape, dtype)


def _zeros(*, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.zeros(shape, dtype)


def _sum_to_type(types: list[TensorType], shape: tuple[int, ...], batch_ndim: int) -> TensorType:
    (x,) = types
    batch = x.shape[:batch_ndim]
    rest = x.shape[batch_ndim:]
    if len(shape) > len(rest) or any(
        d != 1 and d != r for d, r in zip(shape, rest[len(rest) - len(shape) :], strict=True)
    ):
        raise RuleError("attrs.shape", f"cannot sum {list(rest)} down to {list(shape)}")
    return TensorType(batch + shape, x.dtype)


def _sum_to(x: np.ndarray, *, shape: tuple[int, ...], batch_ndim: int) -> np.ndarray:
    lead = x.ndim - batch_ndim - len(shape)
    start = batch_ndim + lead
    axes = tuple(range(batch_ndim, start)) + tuple(
        start + i for i, d in enumerate(shape) if d == 1 and x.shape[start + i] != 1
    )
    return np.add.reduce(x, axis=axes).reshape(x.shape[:batch_ndim] + shape)  # np.sum, less Python


def _sum_to_jvp(tangents, ans, x, *, shape, batch_ndim):
    (t,) = tangents
    return op.sum_to(t, shape=shape, batch_ndim=batch_ndim + len(t.em.batch))


def _sum_to_vjp(g, ans, x, *, shape, batch_ndim):
    # g: outer batch + x's own batch axes + shape; put back the summed axes, then broadcast.
    outer = g.shape[: g.ndim - len(ans.shape)]
    keep = x.shape[:batch_ndim]
    lead = x.ndim - batch_ndim - len(shape)
    expanded = op.reshape(g, shape=outer + keep + (1,) * lead + shape)
    return (op.broadcast_to(expanded, shape=outer + x.shape),)


register(
    OpDef(
        "constant",
        0,
        _constant_type,
        _constant,
        "a tensor given as the attribute `value`",
        attrs={"value": AttrSpec("tensor", required=True)},
        differentiable=False,
    )
)
register(
    OpDef(
        "zeros",
        0,
        _zeros_type,
        _zeros,
        "a tensor of zeros of the given shape and dtype",
        attrs={"shape": AttrSpec("ints", required=True), "dtype": AttrSpec("string", "float64")},
        differentiable=False,
        internal=True,
    )
)
register(
    OpDef(
        "sum_to",
        1,
        _sum_to_type,
        _sum_to,
        "sum the trailing axes down to `shape` (numpy broadcasting reversed), keeping the first "
        "`batch_ndim` axes",
        attrs={"shape": AttrSpec("ints", required=True), "batch_ndim": AttrSpec("int", 0)},
        jvp=_sum_to_jvp,
        vjp=_sum_to_vjp,
        internal=True,
    )
)
