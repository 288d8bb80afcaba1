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
from gradserve_client.opset.core import broadcast_shapes, normalize_axes

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, broadcast_to, lift, op, reshape, sum_to

# ---- softmax and log_softmax -------------------------------------------------------------------


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


implement(
    "softmax",
    _softmax,
    jvp=lambda ts, ans, x, axis=-1: _softmax_rule(ts[0], ans, x, axis),
    vjp=lambda g, ans, x, axis=-1: (_softmax_rule(g, ans, x, axis),),
)
implement(
    "log_softmax",
    _log_softmax,
    jvp=lambda ts, ans, x, axis=-1: (
        ts[0] - op.sum(ts[0] * op.exp(ans), axis=_axis(x, axis), keepdims=1)
    ),
    vjp=lambda g, ans, x, axis=-1: (g - op.exp(ans) * op.sum(g, axis=_axis(x, axis), keepdims=1),),
)


# ---- losses ------------------------------------------------------------------------------------


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


def _one_hot(labels: np.ndarray, *, depth: int, dtype: str = "float64") -> np.ndarray:
    out = (labels[..., None] == np.arange(depth)).astype(dtype)
    out[(labels < 0) | (labels >= depth)] = np.nan
    return out


implement("cross_entropy", _cross_entropy, jvp=_cross_entropy_jvp, vjp=_cross_entropy_vjp)
implement(
    "cross_entropy_grad",
    _cross_entropy_grad,
    jvp=lambda ts, ans, logits, labels: (
        None if ts[0] is None else _cross_entropy_grad_rule(ts[0], logits)
    ),
    vjp=lambda g, ans, logits, labels: (_cross_entropy_grad_rule(g, logits), None),
)
implement("one_hot", _one_hot)


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


implement("mse", _mse, jvp=_mse_jvp, vjp=_mse_vjp)
