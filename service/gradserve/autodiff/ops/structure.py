"""Structure ops: they move elements around and are linear, so their rules are short."""

from __future__ import annotations

import math

import numpy as np

from gradserve.autodiff.ir import TensorType
from gradserve.autodiff.registry import AttrSpec, OpDef, RuleError, register
from gradserve.autodiff.symbolic import broadcast_to, reshape, sum_to, transpose


def _reshape_type(types: list[TensorType], shape: tuple[int, ...]) -> TensorType:
    (x,) = types
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in shape):
        raise RuleError("attrs.shape", f"invalid shape {list(shape)}")
    known = math.prod(d for d in shape if d != -1)
    if unknown:
        if known == 0 or x.size % known:
            raise RuleError("attrs.shape", f"cannot reshape {list(x.shape)} to {list(shape)}")
        shape = tuple(x.size // known if d == -1 else d for d in shape)
    if math.prod(shape) != x.size:
        raise RuleError("attrs.shape", f"cannot reshape {list(x.shape)} to {list(shape)}")
    return TensorType(shape, x.dtype)


def _reshape(x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
    return np.reshape(x, shape)


def _broadcast_type(types: list[TensorType], shape: tuple[int, ...]) -> TensorType:
    (x,) = types
    try:
        if np.broadcast_shapes(x.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise RuleError(
            "attrs.shape", f"cannot broadcast {list(x.shape)} to {list(shape)}"
        ) from None
    return TensorType(tuple(shape), x.dtype)


def _broadcast_to(x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(x, shape)


def _transpose_type(types: list[TensorType], axes: tuple[int, ...] | None = None) -> TensorType:
    (x,) = types
    if axes is None:
        return TensorType(x.shape[::-1], x.dtype)
    if sorted(a % x.ndim if x.ndim else a for a in axes) != list(range(x.ndim)):
        raise RuleError("attrs.axes", f"{list(axes)} is not a permutation of {x.ndim} axes")
    return TensorType(tuple(x.shape[a] for a in axes), x.dtype)


def _transpose(x: np.ndarray, *, axes: tuple[int, ...] | None = None) -> np.ndarray:
    return np.transpose(x, axes)


def _perm(x_ndim: int, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    return tuple(range(x_ndim))[::-1] if axes is None else tuple(a % x_ndim for a in axes)


register(
    OpDef(
        "reshape",
        1,
        _reshape_type,
        _reshape,
        "numpy reshape; one dimension may be -1",
        attrs={"shape": AttrSpec("ints", required=True)},
        jvp=lambda ts, ans, x, shape: reshape(ts[0], ans.shape),
        vjp=lambda g, ans, x, shape: (reshape(g, x.shape),),
    )
)
register(
    OpDef(
        "broadcast_to",
        1,
        _broadcast_type,
        _broadcast_to,
        "numpy broadcast_to",
        attrs={"shape": AttrSpec("ints", required=True)},
        jvp=lambda ts, ans, x, shape: broadcast_to(ts[0], ans.shape),
        vjp=lambda g, ans, x, shape: (sum_to(g, x.shape),),
    )
)
register(
    OpDef(
        "transpose",
        1,
        _transpose_type,
        _transpose,
        "numpy transpose; no axes reverses them",
        attrs={"axes": AttrSpec("ints")},
        jvp=lambda ts, ans, x, axes=None: transpose(ts[0], _perm(x.ndim, axes)),
        vjp=lambda g, ans, x, axes=None: (
            transpose(g, tuple(np.argsort(_perm(x.ndim, axes)).tolist())),
        ),
    )
)
