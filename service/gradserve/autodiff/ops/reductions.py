"""Reductions over `axis` (ints; absent = all axes) with `keepdims` (0/1).

Rules see the user's axes and normalize them against the primal rank to negative numbers, so
the same rule serves a (co)tangent with a leading batch axis. A cotangent comes back to the
operand's shape by `_expand`: reshape to the kept-dims shape, then broadcast.

Conventions: max/min split the gradient evenly among tied elements; prod's gradient is the
product of the other elements (exact with zeros, via exclusive cumulative products; its second
derivative is not supported); std's gradient is 0 where std is 0; logsumexp shifts by the max
(by 0 for a slice with no finite max), so an all -inf slice gives -inf and a zero gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gradserve.autodiff.ir import FLOAT_DTYPES, TensorType
from gradserve.autodiff.registry import (
    NUMERIC,
    AttrSpec,
    OpDef,
    RuleError,
    normalize_axes,
    register,
)
from gradserve.autodiff.symbolic import Sym, broadcast_to, op, reshape

Axis = tuple[int, ...] | None


# ---- shared pieces -----------------------------------------------------------------------------


def axes_of(axis: Axis, ndim: int) -> tuple[int, ...]:
    """The reduced axes as sorted negative numbers (absent: all of them)."""
    return tuple(range(-ndim, 0)) if axis is None else normalize_axes(axis, ndim)


def kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the reduced axes as size 1 (the keepdims shape)."""
    ndim = len(shape)
    return tuple(1 if i - ndim in axes else d for i, d in enumerate(shape))


def reduced_size(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    return math.prod(shape[a] for a in axes)


def _check_keepdims(keepdims: int) -> bool:
    if keepdims not in (0, 1):
        raise RuleError("attrs.keepdims", f"must be 0 or 1, got {keepdims}")
    return bool(keepdims)


def reduction_type(
    allowed: tuple[str, ...],
    result: Callable[[str], str] = lambda dtype: dtype,
    nonempty: bool = False,
    moment: bool = False,
) -> Callable[..., TensorType]:
    def infer(
        types: list[TensorType], axis: Axis = None, keepdims: int = 0, ddof: int = 0
    ) -> TensorType:
        (x,) = types
        if x.dtype not in allowed:
            raise RuleError("inputs[0]", f"needs {'/'.join(allowed)}, got {x.dtype}")
        keep = _check_keepdims(keepdims)
        axes = axes_of(axis, x.ndim)
        n = reduced_size(x.shape, axes)
        if nonempty and n == 0:
            raise RuleError("attrs.axis", f"cannot reduce {list(x.shape)} over empty axes")
        if ddof < 0:
            raise RuleError("attrs.ddof", f"must be >= 0, got {ddof}")
        if moment and n <= ddof:  # N - ddof is a divisor
            field = "attrs.ddof" if ddof else "attrs.axis"
            raise RuleError(field, f"{n} elements with ddof {ddof} leave no degrees of freedom")
        shape = kept_shape(x.shape, axes) if keep else _dropped(x.shape, axes)
        return TensorType(shape, result(x.dtype))

    return infer


def _expand(g: Sym, x: Sym, axes: tuple[int, ...]) -> Sym:
    """A (co)tangent of the reduced shape, broadcast back over the reduced axes of `x`."""
    return broadcast_to(reshape(g, kept_shape(x.shape, axes)), x.shape)


def _kept(ans: Sym, x: Sym, axes: tuple[int, ...]) -> Sym:
    """A primal result with the reduced axes kept as size 1."""
    shape = kept_shape(x.shape, axes)
    return ans if ans.shape == shape else op.reshape(ans, shape=shape)


ATTRS = {"axis": AttrSpec("ints"), "keepdims": AttrSpec("int", 0)}


def reduction(
    name: str,
    forward: Callable[..., np.ndarray],
    infer: Callable[..., TensorType],
    doc: str,
    jvp: Callable[..., Sym | None],
    vjp: Callable[..., Sym],
    extra: dict[str, AttrSpec] | None = None,
) -> None:
    """Register a reduction from rules written against normalized axes.

    `jvp(t, ans, x, axes, keepdims, **extra)` and `vjp(g, ans, x, axes, keepdims, **extra)` see
    float operands only (ints never carry derivatives).
    """

    def jvp_rule(ts, ans, x, axis=None, keepdims=0, **kw):
        return jvp(ts[0], ans, x, axes_of(axis, x.ndim), keepdims, **kw)

    def vjp_rule(g, ans, x, axis=None, keepdims=0, **kw):
        return (vjp(g, ans, x, axes_of(axis, x.ndim), keepdims, **kw),)

    register(
        OpDef(
            name,
            1,
            infer,
            forward,
            doc,
            attrs={**ATTRS, **(extra or {})},
            jvp=jvp_rule,
            vjp=vjp_rule,
        )
    )


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
    return out if keepdims else out.reshape(_dropped(x.shape, axes_of(axis, x.ndim)))


def _dropped(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for i, d in enumerate(shape) if i - len(shape) not in axes)


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


register(
    OpDef(
        "prod_others",
        1,
        lambda types, axis: TensorType(types[0].shape, types[0].dtype),
        _prod_others,
        "for each element, the product of the other elements of its slice over `axis` (the "
        "gradient of prod, exact with zeros); it has no derivative rules of its own",
        attrs={"axis": AttrSpec("ints", required=True)},
        internal=True,
    )
)


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


def _weighted_jvp(weights: Callable[..., Sym]) -> Callable[..., Sym]:
    """The JVP of a reduction whose Jacobian row is `weights(ans, x, axes, **kw)`."""

    def jvp(t, ans, x, axes, keepdims, **kw):
        return op.sum(t * weights(ans, x, axes, **kw), axis=axes, keepdims=keepdims)

    return jvp


def _weighted_vjp(weights: Callable[..., Sym]) -> Callable[..., Sym]:
    def vjp(g, ans, x, axes, keepdims, **kw):
        return _expand(g, x, axes) * weights(ans, x, axes, **kw)

    return vjp


def _weighted(name, forward, infer, doc, weights, extra=None) -> None:
    reduction(name, forward, infer, doc, _weighted_jvp(weights), _weighted_vjp(weights), extra)


def _mean_scale(x: Sym, axes: tuple[int, ...]) -> float:
    return 1.0 / max(reduced_size(x.shape, axes), 1)


def _var_weights(ans: Sym, x: Sym, axes: tuple[int, ...], ddof: int = 0) -> Sym:
    return _centered(x, axes) * (2.0 / (reduced_size(x.shape, axes) - ddof))


INTS_TOO = (*NUMERIC, "bool")
DDOF = {"ddof": AttrSpec("int", 0)}


def _counting(dtype: str) -> str:
    return "int64" if dtype == "bool" else dtype


reduction(
    "sum",
    _sum,
    reduction_type(INTS_TOO, _counting),
    "sum over axis; bool counts as int64",
    lambda t, ans, x, axes, keepdims: op.sum(t, axis=axes, keepdims=keepdims),
    lambda g, ans, x, axes, keepdims: _expand(g, x, axes),
)
reduction(
    "mean",
    _mean,
    reduction_type(FLOAT_DTYPES),
    "arithmetic mean over axis",
    lambda t, ans, x, axes, keepdims: op.mean(t, axis=axes, keepdims=keepdims),
    lambda g, ans, x, axes, keepdims: _expand(g, x, axes) * _mean_scale(x, axes),
)
_weighted(
    "max",
    _max,
    reduction_type(INTS_TOO, nonempty=True),
    "maximum over axis; tied elements share the gradient evenly",
    _tie_share,
)
_weighted(
    "min",
    _min,
    reduction_type(INTS_TOO, nonempty=True),
    "minimum over axis; tied elements share the gradient evenly",
    _tie_share,
)
_weighted(
    "prod",
    _prod,
    reduction_type(INTS_TOO, _counting),
    "product over axis; the gradient is the product of the other elements (exact with zeros); "
    "second derivatives are not supported",
    lambda ans, x, axes: op.prod_others(x, axis=axes),
)
_weighted(
    "var",
    _var,
    reduction_type(FLOAT_DTYPES, moment=True),
    "variance over axis, dividing by N - ddof",
    _var_weights,
    DDOF,
)
_weighted(
    "std",
    _std,
    reduction_type(FLOAT_DTYPES, moment=True),
    "standard deviation over axis, dividing by N - ddof; its gradient is 0 where it is 0",
    _dstd,
    DDOF,
)
_weighted(
    "logsumexp",
    _logsumexp,
    reduction_type(FLOAT_DTYPES),
    "log(sum(exp(x))) over axis, shifted by the max; an all -inf slice gives -inf and a zero "
    "gradient",
    _softmax_over,
)
