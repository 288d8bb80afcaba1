"""Reductions over `axis` (ints; absent = all axes) with `keepdims` (0/1).

Rules see the user's axes and normalize them against the primal rank to negative numbers, so
the same rule serves a (co)tangent with a leading batch axis. A cotangent comes back to the
operand's shape by `_expand`: reshape to the kept-dims shape, then broadcast. sum and mean are
linear: their JVP is the op itself.

Conventions: max/min split the gradient evenly among tied elements; prod's gradient is the
product of the other elements (exact with zeros, via exclusive cumulative products; its second
derivative is not supported); std's gradient is 0 where std is 0; logsumexp shifts by the max
(by 0 for a slice with no finite max), so an all -inf slice gives -inf and a zero gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from gradserve_client.opset.reductions import Axis, axes_of, dropped_shape, kept_shape

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, broadcast_to, op, reshape


def reduced_size(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    return math.prod(shape[a] for a in axes)


def _expand(g: Sym, x: Sym, axes: tuple[int, ...]) -> Sym:
    """A (co)tangent of the reduced shape, broadcast back over the reduced axes of `x`."""
    return broadcast_to(reshape(g, kept_shape(x.shape, axes)), x.shape)


def _kept(ans: Sym, x: Sym, axes: tuple[int, ...]) -> Sym:
    """A primal result with the reduced axes kept as size 1."""
    shape = kept_shape(x.shape, axes)
    return ans if ans.shape == shape else op.reshape(ans, shape=shape)


def _normalized(batch, x, axis=None, keepdims=0):
    """The attributes of a reduction, with axes that also count right on a batched value."""
    return {"axis": axes_of(axis, x.ndim), "keepdims": keepdims}


def _rule(vjp: Callable[..., Sym]) -> Callable[..., tuple[Sym]]:
    """A VJP written against normalized axes: `vjp(g, ans, x, axes, keepdims, **extra)`."""

    def rule(g, ans, x, axis=None, keepdims=0, **kw):
        return (vjp(g, ans, x, axes_of(axis, x.ndim), keepdims, **kw),)

    return rule


def _weighted(name: str, forward: Callable[..., np.ndarray], weights: Callable[..., Sym]) -> None:
    """A reduction whose Jacobian row is `weights(ans, x, axes, **extra)`."""

    def jvp(ts, ans, x, axis=None, keepdims=0, **kw):
        axes = axes_of(axis, x.ndim)
        return op.sum(ts[0] * weights(ans, x, axes, **kw), axis=axes, keepdims=keepdims)

    def vjp(g, ans, x, axes, keepdims, **kw):
        return _expand(g, x, axes) * weights(ans, x, axes, **kw)

    implement(name, forward, jvp=jvp, vjp=_rule(vjp))


# ---- forwards ----------------------------------------------------------------------------------


def _integral(dtype: np.dtype) -> np.dtype:
    return np.dtype("int64") if dtype == np.bool_ else dtype


def _sum(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0) -> np.ndarray:
    # dtype= keeps int32 as int32 (numpy would widen it to int64); bool counts as int64.
    return np.sum(x, axis=axis, dtype=_integral(x.dtype), keepdims=bool(keepdims))


def _prod(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0) -> np.ndarray:
    return np.prod(x, axis=axis, dtype=_integral(x.dtype), keepdims=bool(keepdims))


def _mean(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0) -> np.ndarray:
    if x.size == 0:  # numpy warns on the mean of no elements; it is NaN, quietly
        return np.sum(x, axis=axis, keepdims=bool(keepdims)) * np.asarray(np.nan, x.dtype)
    return np.mean(x, axis=axis, keepdims=bool(keepdims))


def _max(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0) -> np.ndarray:
    return np.max(x, axis=axis, keepdims=bool(keepdims))


def _min(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0) -> np.ndarray:
    return np.min(x, axis=axis, keepdims=bool(keepdims))


def _var(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0, ddof: int = 0) -> np.ndarray:
    return np.var(x, axis=axis, ddof=ddof, keepdims=bool(keepdims))


def _std(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0, ddof: int = 0) -> np.ndarray:
    return np.std(x, axis=axis, ddof=ddof, keepdims=bool(keepdims))


def logsumexp_kept(x: np.ndarray, axis: Axis) -> np.ndarray:
    """log(sum(exp(x))) over `axis` with the axes kept, shifted by the max (0 if not finite)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
        return np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m


def _logsumexp(x: np.ndarray, *, axis: Axis = None, keepdims: int = 0) -> np.ndarray:
    out = logsumexp_kept(x, axis)
    return out if keepdims else out.reshape(dropped_shape(x.shape, axes_of(axis, x.ndim)))


def _prod_others(x: np.ndarray, *, axis: tuple[int, ...]) -> np.ndarray:
    """For each element, the product of the other elements of its slice over `axis`.

    Exclusive cumulative products from both ends, so zeros need no division: exact with zeros.
    """
    axes = [a % x.ndim for a in axis]
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + axes)
    n = math.prod(x.shape[a] for a in axes)
    if n == 0:
        return np.zeros_like(x)
    flat = moved.reshape((*moved.shape[: len(rest)], n))
    ones = np.ones((*flat.shape[:-1], 1), x.dtype)
    left = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    out = (left * right).reshape(moved.shape)
    return np.transpose(out, np.argsort(rest + axes))


implement("prod_others", _prod_others)


# ---- rules -------------------------------------------------------------------------------------


def _tie_share(ans: Sym, x: Sym, axes: tuple[int, ...]) -> Sym:
    """1/count on the elements equal to their slice's max (min), 0 elsewhere: ties split evenly."""
    hit = op.where(op.equal(x, _kept(ans, x, axes)), x.lift(1.0), 0)
    return hit / op.sum(hit, axis=axes, keepdims=1)


def _centered(x: Sym, axes: tuple[int, ...]) -> Sym:
    return x - op.mean(x, axis=axes, keepdims=1)


def _dstd(ans: Sym, x: Sym, axes: tuple[int, ...], ddof: int) -> Sym:
    """d std / dx = (x - mean) / ((N - ddof) std), and 0 where std == 0 (no 0/0)."""
    s = _kept(ans, x, axes)
    zero = op.equal(s, 0)
    n = reduced_size(x.shape, axes) - ddof
    return _centered(x, axes) * op.where(zero, 0, op.reciprocal(op.where(zero, 1, s) * n))


def _softmax_over(ans: Sym, x: Sym, axes: tuple[int, ...]) -> Sym:
    """exp(x - logsumexp(x)), and 0 on a slice whose logsumexp is -inf (all -inf)."""
    lse = _kept(ans, x, axes)
    return op.exp(x - op.where(op.equal(lse, -np.inf), 0, lse))


def _mean_scale(x: Sym, axes: tuple[int, ...]) -> float:
    return 1.0 / max(reduced_size(x.shape, axes), 1)


def _var_weights(ans: Sym, x: Sym, axes: tuple[int, ...], ddof: int = 0) -> Sym:
    return _centered(x, axes) * (2.0 / (reduced_size(x.shape, axes) - ddof))


implement(
    "sum",
    _sum,
    linear=_normalized,
    vjp=_rule(lambda g, ans, x, axes, keepdims: _expand(g, x, axes)),
)
implement(
    "mean",
    _mean,
    linear=_normalized,
    vjp=_rule(lambda g, ans, x, axes, keepdims: _expand(g, x, axes) * _mean_scale(x, axes)),
)
_weighted("max", _max, _tie_share)
_weighted("min", _min, _tie_share)
_weighted("prod", _prod, lambda ans, x, axes: op.prod_others(x, axis=axes))
_weighted("var", _var, _var_weights)
_weighted("std", _std, _dstd)
_weighted("logsumexp", _logsumexp, _softmax_over)


# ---- cumsum (linear: its transpose is the cumsum the other way), argmax, argmin ---------------


def _cumsum(x: np.ndarray, *, axis: int, exclusive: int = 0, reverse: int = 0) -> np.ndarray:
    if reverse:
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:  # shift by one: each element's sum leaves it out
        shifted = np.zeros_like(out)
        index = [slice(None)] * x.ndim
        index[axis] = slice(1, None)
        source = list(index)
        source[axis] = slice(None, -1)
        shifted[tuple(index)] = out[tuple(source)]
        out = shifted
    return np.flip(out, axis) if reverse else out


def _cumsum_attrs(batch, x, axis, exclusive=0, reverse=0):
    return {"axis": axes_of((axis,), x.ndim)[0], "exclusive": exclusive, "reverse": reverse}


implement(
    "cumsum",
    _cumsum,
    linear=_cumsum_attrs,
    vjp=lambda g, ans, x, axis, exclusive=0, reverse=0: (
        op.cumsum(g, **{**_cumsum_attrs(g.em.batch, x, axis, exclusive), "reverse": 1 - reverse}),
    ),
)
implement(
    "argmax",
    lambda x, *, axis, keepdims=0: np.argmax(x, axis, keepdims=bool(keepdims)).astype(np.int64),
)
implement(
    "argmin",
    lambda x, *, axis, keepdims=0: np.argmin(x, axis, keepdims=bool(keepdims)).astype(np.int64),
)
