"""Ops with no operands (constants) and the plumbing ops that derivative rules emit."""

from __future__ import annotations

import numpy as np

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import op


def _constant(*, value: np.ndarray) -> np.ndarray:
    return value


def _zeros(*, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.zeros(shape, dtype)


def _sum_to(x: np.ndarray, *, shape: tuple[int, ...], batch_ndim: int) -> np.ndarray:
    lead = x.ndim - batch_ndim - len(shape)
    start = batch_ndim + lead
    axes = tuple(range(batch_ndim, start)) + tuple(
        start + i for i, d in enumerate(shape) if d == 1 and x.shape[start + i] != 1
    )
    return np.add.reduce(x, axis=axes).reshape(x.shape[:batch_ndim] + shape)  # np.sum, less Python


def _sum_to_vjp(g, ans, x, *, shape, batch_ndim):
    # g: outer batch + x's own batch axes + shape; put back the summed axes, then broadcast.
    outer = g.shape[: g.ndim - len(ans.shape)]
    keep = x.shape[:batch_ndim]
    lead = x.ndim - batch_ndim - len(shape)
    expanded = op.reshape(g, shape=outer + keep + (1,) * lead + shape)
    return (op.broadcast_to(expanded, shape=outer + x.shape),)


implement("constant", _constant)
implement("zeros", _zeros)
implement(
    "sum_to",
    _sum_to,
    linear=lambda batch, x, shape, batch_ndim: {
        "shape": shape,
        "batch_ndim": batch_ndim + len(batch),
    },
    vjp=_sum_to_vjp,
)
