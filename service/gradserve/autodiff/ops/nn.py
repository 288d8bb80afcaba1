"""Neural-network ops: softmax, log_softmax, cross_entropy and mse.

Softmaxes are shifted by the max of their slice (by 0 when that max is not finite), so a slice
of all -inf has softmax 0 everywhere, log_softmax -inf everywhere, and finite gradients.
cross_entropy takes integer labels (class axis last on the logits) and treats an out-of-range
label as data it cannot check at build time: that element's loss and gradient are NaN, so a
training loop's non-finite-loss check catches it instead of a silently clipped label.
"""

from __future__ import annotations

import math

import numpy as np

from gradserve.autodiff.ir import FLOAT_DTYPES, TensorType
from gradserve.autodiff.registry import (
    AttrSpec,
    OpDef,
    RuleError,
    broadcast_shapes,
    normalize_axes,
    register,
    same_dtype,
)
from gradserve.autodiff.symbolic import Sym, broadcast_to, lift, op, reshape, sum_to

INT_LABELS = ("int64", "int32")
REDUCTIONS = ("mean", "sum", "none")


# ---- softmax and log_softmax -------------------------------------------------------------------


def _axis_type(types: list[TensorType], axis: int = -1) -> TensorType:
    (x,) = types
    if x.dtype not in FLOAT_DTYPES:
        raise RuleError("inputs[0]", f"needs float32/float64, got {x.dtype}")
    if x.ndim == 0:
        raise RuleError("inputs[0]", "needs at least one axis, got a scalar")
    normalize_axes((axis,), x.ndim)
    return x


# The forwards below run under the executor's np.errstate(all="ignore") and work in place on
# the arrays they allocate. With a finite max, the max element contributes exp(0) = 1 to the
# sum, so the fix-ups for non-finite slices are needed only when some max is not finite.


def _max(x: np.ndarray, axis: int) -> np.ndarray:
    """np.max(x, axis, keepdims=True). Along a short last axis (classes) numpy reduces each row
    on its own; over a transposed copy it reduces across rows, 2-4x faster up to ~32."""
    if axis in (-1, x.ndim - 1) and 0 < x.shape[-1] <= 32:
        cols = np.ascontiguousarray(x.reshape(-1, x.shape[-1]).T)
        return np.maximum.reduce(cols, axis=0, initial=-np.inf).reshape(*x.shape[:-1], 1)
    return np.max(x, axis=axis, keepdims=True, initial=-np.inf)


def _shift(x: np.ndarray, axis: int) -> tuple[np.ndarray, bool]:
    """(x minus the max of its slice, or minus 0 where that max is not finite; all finite?)"""
    m = _max(x, axis)
    finite = np.isfinite(m)
    ok = bool(finite.all())
    if not ok:
        m[~finite] = 0
    return x - m, ok


def _softmax(x: np.ndarray, *, axis: int = -1) -> np.ndarray:
    e, ok = _shift(x, axis)
    np.exp(e, out=e)
    s = np.add.reduce(e, axis=axis, keepdims=True)
    if not ok:
        s[s == 0] = 1  # an all -inf slice: e is all 0, and so is its softmax
    e /= s
    return e


def _log_softmax(x: np.ndarray, *, axis: int = -1) -> np.ndarray:
    # (x - max) - log(sum(exp(x - max))): subtracting the shift first keeps the last ulp that
    # x - logsumexp(x) loses when |x| is large.
    shifted, ok = _shift(x, axis)
    lse = np.log(np.add.reduce(np.exp(shifted), axis=axis, keepdims=True))
    if not ok:
        lse[np.isneginf(lse)] = 0  # an all -inf slice: log_softmax is -inf, not -inf - -inf
    shifted -= lse
    return shifted


def _axis(x: Sym, axis: int) -> tuple[int]:
    return normalize_axes((axis,), x.ndim)


def _softmax_rule(g: Sym, ans: Sym, x: Sym, axis: int = -1) -> Sym:
    # The Jacobian diag(s) - s s^T is symmetric: one line serves JVP and VJP.
    return ans * (g - op.sum(g * ans, axis=_axis(x, axis), keepdims=1))


register(
    OpDef(
        "softmax",
        1,
        _axis_type,
        _softmax,
        "exp(x) / sum(exp(x)) along axis, shifted by the max; an all -inf slice gives 0",
        attrs={"axis": AttrSpec("int", -1)},
        jvp=lambda ts, ans, x, axis=-1: _softmax_rule(ts[0], ans, x, axis),
        vjp=lambda g, ans, x, axis=-1: (_softmax_rule(g, ans, x, axis),),
    )
)
register(
    OpDef(
        "log_softmax",
        1,
        _axis_type,
        _log_softmax,
        "x - logsumexp(x) along axis, computed stably; an all -inf slice gives -inf",
        attrs={"axis": AttrSpec("int", -1)},
        jvp=lambda ts, ans, x, axis=-1: (
            ts[0] - op.sum(ts[0] * op.exp(ans), axis=_axis(x, axis), keepdims=1)
        ),
        vjp=lambda g, ans, x, axis=-1: (
            g - op.exp(ans) * op.sum(g, axis=_axis(x, axis), keepdims=1),
        ),
    )
)


# ---- losses ------------------------------------------------------------------------------------


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise RuleError(
            "attrs.reduction", f"must be one of {'/'.join(REDUCTIONS)}, got {reduction!r}"
        )


def _reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.sum(loss)
    # The mean of no elements is NaN, as in torch, without numpy's warning.
    return (
        np.add.reduce(loss, axis=None) / loss.size if loss.size else np.asarray(np.nan, loss.dtype)
    )


def _mean_scale(shape: tuple[int, ...]) -> float:
    return 1.0 / max(math.prod(shape), 1)


def _per_element(g: Sym, shape: tuple[int, ...], reduction: str, rank: int) -> Sym:
    """The cotangent of each element of the unreduced loss (of `shape`), as a value of rank
    `rank` that broadcasts against it: the reduced loss's cotangent is not broadcast out."""
    if reduction == "none":
        return reshape(g, (*shape, *(1,) * (rank - len(shape))))
    g = lift(g, rank)
    return g * _mean_scale(shape) if reduction == "mean" and math.prod(shape) != 1 else g


def _reduced(t: Sym, shape: tuple[int, ...], reduction: str) -> Sym:
    """The tangent of the loss from the tangents of its elements (of `shape`)."""
    if reduction == "none" or not shape:
        return t
    t = op.sum(t, axis=tuple(range(-len(shape), 0)))
    return t * _mean_scale(shape) if reduction == "mean" and math.prod(shape) != 1 else t


def _cross_entropy_type(types: list[TensorType], reduction: str = "mean") -> TensorType:
    logits, labels = types
    if logits.dtype not in FLOAT_DTYPES:
        raise RuleError("inputs[0]", f"logits need float32/float64, got {logits.dtype}")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise RuleError(
            "inputs[0]", f"logits {list(logits.shape)} need a non-empty class axis (the last)"
        )
    if labels.dtype not in INT_LABELS:
        raise RuleError("inputs[1]", f"labels need int64/int32, got {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise RuleError(
            "inputs[1]",
            f"labels of shape {list(labels.shape)} must be the logits' shape without the class "
            f"axis, {list(logits.shape[:-1])}",
        )
    _check_reduction(reduction)
    return TensorType(labels.shape if reduction == "none" else (), logits.dtype)


def _labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels flattened, with 0 for an out-of-range label; the mask of those in range, or
    None when all are)."""
    flat = labels.reshape(-1)
    valid = (flat >= 0) & (flat < logits.shape[-1])
    return (flat, None) if valid.all() else (np.where(valid, flat, 0), valid)


def _cross_entropy(
    logits: np.ndarray, labels: np.ndarray, *, reduction: str = "mean"
) -> np.ndarray:
    flat, valid = _labels(logits, labels)
    rows = _log_softmax(logits).reshape(-1, logits.shape[-1])
    loss = rows[np.arange(flat.size), flat]  # a new array: negated in place
    np.negative(loss, out=loss)
    if valid is not None:
        loss[~valid] = np.nan
    return _reduce(loss.reshape(labels.shape), reduction)


def _cross_entropy_grad(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d loss_i / d logits_i = softmax(logits_i) minus 1 at the label; NaN for a label out of
    range. One softmax, then in place: no one-hot."""
    p = _softmax(logits)
    flat, valid = _labels(logits, labels)
    rows = p.reshape(-1, logits.shape[-1])
    rows[np.arange(flat.size), flat] -= 1
    if valid is not None:
        rows[~valid] = np.nan
    return p


def _cross_entropy_grad_type(types: list[TensorType]) -> TensorType:
    _cross_entropy_type(types, "none")  # the same operands as cross_entropy
    return types[0]


def _cross_entropy_jvp(ts, ans, logits, labels, reduction="mean"):
    if ts[0] is None:
        return None
    per = op.sum(ts[0] * op.cross_entropy_grad(logits, labels), axis=(-1,))
    return _reduced(per, labels.shape, reduction)


def _cross_entropy_vjp(g, ans, logits, labels, reduction="mean"):
    per = _per_element(g, labels.shape, reduction, logits.ndim)
    return per * op.cross_entropy_grad(logits, labels), None


def _cross_entropy_grad_rule(t: Sym, logits: Sym) -> Sym:
    # The one-hot part is constant: what is left is softmax's (symmetric) Jacobian.
    return _softmax_rule(t, op.softmax(logits, axis=-1), logits)


def _one_hot_type(types: list[TensorType], depth: int, dtype: str = "float64") -> TensorType:
    (labels,) = types
    if labels.dtype not in INT_LABELS:
        raise RuleError("inputs[0]", f"needs int64/int32, got {labels.dtype}")
    if depth < 0:
        raise RuleError("attrs.depth", f"must be >= 0, got {depth}")
    if dtype not in FLOAT_DTYPES:
        raise RuleError("attrs.dtype", f"must be float32/float64, got {dtype!r}")
    return TensorType((*labels.shape, depth), dtype)


def _one_hot(labels: np.ndarray, *, depth: int, dtype: str = "float64") -> np.ndarray:
    out = (labels[..., None] == np.arange(depth)).astype(dtype)
    out[(labels < 0) | (labels >= depth)] = np.nan
    return out


register(
    OpDef(
        "cross_entropy",
        2,
        _cross_entropy_type,
        _cross_entropy,
        "-log_softmax(logits)[label] (class axis last), reduced by mean/sum/none like torch; an "
        "out-of-range label gives NaN; labels get no gradient",
        attrs={"reduction": AttrSpec("string", "mean")},
        jvp=_cross_entropy_jvp,
        vjp=_cross_entropy_vjp,
    )
)
register(
    OpDef(
        "cross_entropy_grad",
        2,
        _cross_entropy_grad_type,
        _cross_entropy_grad,
        "softmax(logits) minus 1 at the label (class axis last): the gradient of cross_entropy "
        "per example; a row of NaN for a label out of range; labels get no gradient",
        jvp=lambda ts, ans, logits, labels: (
            None if ts[0] is None else _cross_entropy_grad_rule(ts[0], logits)
        ),
        vjp=lambda g, ans, logits, labels: (_cross_entropy_grad_rule(g, logits), None),
        internal=True,
    )
)
register(
    OpDef(
        "one_hot",
        1,
        _one_hot_type,
        _one_hot,
        "labels (...) as one-hot rows (..., depth); a row of NaN for a label out of range",
        attrs={"depth": AttrSpec("int", required=True), "dtype": AttrSpec("string", "float64")},
        differentiable=False,
        internal=True,
    )
)


def _mse_type(types: list[TensorType], reduction: str = "mean") -> TensorType:
    dtype = same_dtype(types, FLOAT_DTYPES, "mse")
    shape = broadcast_shapes(*(t.shape for t in types))
    _check_reduction(reduction)
    return TensorType(shape if reduction == "none" else (), dtype)


def _mse(pred: np.ndarray, target: np.ndarray, *, reduction: str = "mean") -> np.ndarray:
    return _reduce(np.square(pred - target), reduction)


def _mse_jvp(ts, ans, pred, target, reduction="mean"):
    shape = broadcast_shapes(pred.shape, target.shape)
    tp, tt = (None if t is None else broadcast_to(t, shape) for t in ts)
    dt = tt if tp is None else tp if tt is None else tp - tt
    if tp is None:
        dt = -dt
    return _reduced(dt * ((pred - target) * 2), shape, reduction)


def _mse_vjp(g, ans, pred, target, reduction="mean"):
    shape = broadcast_shapes(pred.shape, target.shape)
    ct = _per_element(g, shape, reduction, len(shape)) * ((pred - target) * 2)
    return sum_to(ct, pred.shape), sum_to(-ct, target.shape)


register(
    OpDef(
        "mse",
        2,
        _mse_type,
        _mse,
        "mean (sum, none) of (pred - target)**2 with numpy broadcasting",
        attrs={"reduction": AttrSpec("string", "mean")},
        jvp=_mse_jvp,
        vjp=_mse_vjp,
    )
)
