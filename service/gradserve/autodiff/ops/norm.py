"""Normalisation: layer_norm (ONNX LayerNormalization) and batch_norm in inference form (ONNX
BatchNormalization with training_mode=0).

Each forward is one fused numpy kernel. The rules are short closed forms, with
xhat = (x - mean) * r and r = 1 / sqrt(var + epsilon) over the normalised axes:
- layer_norm's normalisation has the symmetric Jacobian r (I - 1 1^T / n - xhat xhat^T / n),
  so one expression, r * (t - mean(t) - xhat * mean(xhat * t)), is both its JVP (of a tangent)
  and its VJP (of the cotangent times scale); scale and bias get xhat * g and g, summed back;
- batch_norm is affine in x per channel (k = scale * r), and its rules are the derivatives of
  (x - mean) * k + bias in each of the five operands.
The rules emit ops that have rules (layer_norm itself gives xhat), so second derivatives work.
"""

from __future__ import annotations

import math

import numpy as np
from gradserve_client.opset.core import normalize_axes
from gradserve_client.opset.norm import EPSILON

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, broadcast_to, lift, op, reshape, sum_to


def _normalised_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes axis..-1, as negative axes."""
    (first,) = normalize_axes((axis,), ndim)
    return tuple(range(first, 0))


# ---- layer_norm --------------------------------------------------------------------------------


def _layer_norm(
    x: np.ndarray, *params: np.ndarray, axis: int = -1, epsilon: float = EPSILON
) -> np.ndarray:
    # The normalised axes are the trailing ones: as rows of a matrix, the variance is one
    # row-wise dot product (no squared temporary) and the scaling is in place.
    n = math.prod(x.shape[x.ndim + _normalised_axes(x.ndim, axis)[0] :])
    rows = x.reshape(-1, n)
    centred = rows - np.add.reduce(rows, axis=1, keepdims=True) / n
    var = np.einsum("ij,ij->i", centred, centred)[:, None] / n
    centred *= 1 / np.sqrt(var + epsilon)
    out = centred.reshape(x.shape)
    if params:
        out *= params[0]
    if len(params) > 1:
        out += params[1]
    return out


def _normalised(x: Sym, axis: int, epsilon: float) -> tuple[tuple[int, ...], Sym, Sym]:
    """(axes, xhat, r) of x."""
    axes = _normalised_axes(x.ndim, axis)
    xhat = op.layer_norm(x, axis=axis, epsilon=epsilon)
    r = op.reciprocal(op.sqrt(op.var(x, axis=axes, keepdims=1) + epsilon))
    return axes, xhat, r


def _normalisation_rule(t: Sym, xhat: Sym, r: Sym, axes: tuple[int, ...]) -> Sym:
    """The (symmetric) Jacobian of xhat applied to a (co)tangent."""
    mean = op.mean(t, axis=axes, keepdims=1)
    return r * (t - mean - xhat * op.mean(xhat * t, axis=axes, keepdims=1))


def _layer_norm_jvp(ts, ans, x, *params, axis=-1, epsilon=EPSILON):
    axes, xhat, r = _normalised(x, axis, epsilon)
    terms = []
    if ts[0] is not None:
        dx = _normalisation_rule(ts[0], xhat, r, axes)
        terms.append(dx * params[0] if params else dx)
    if len(ts) > 1 and ts[1] is not None:
        terms.append(xhat * lift(ts[1], x.ndim))
    if len(ts) > 2 and ts[2] is not None:
        terms.append(lift(ts[2], x.ndim))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return broadcast_to(total, x.shape)


def _layer_norm_vjp(g, ans, x, *params, axis=-1, epsilon=EPSILON):
    axes, xhat, r = _normalised(x, axis, epsilon)
    gx = _normalisation_rule(g * params[0] if params else g, xhat, r, axes)
    grads = [gx]
    if params:
        grads.append(sum_to(g * xhat, params[0].shape))
    if len(params) > 1:
        grads.append(sum_to(g, params[1].shape))
    return tuple(grads)


implement("layer_norm", _layer_norm, jvp=_layer_norm_jvp, vjp=_layer_norm_vjp)


# ---- batch_norm (inference) --------------------------------------------------------------------


def _batch_norm(x, scale, bias, mean, var, *, epsilon=EPSILON):
    shape = (-1,) + (1,) * (x.ndim - 2)
    k = scale / np.sqrt(var + epsilon)
    out = x - mean.reshape(shape)
    out *= k.reshape(shape)
    out += bias.reshape(shape)
    return out


def _channels(x: Sym) -> tuple[int, ...]:
    """A per-channel (C,) value's shape as it broadcasts against x, with a leading unit axis so
    that a (co)tangent's batch axis does not meet N."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _bn_parts(x, scale, mean, var, epsilon):
    """(shape, r, k, x - mean, d k / d var) with the per-channel values shaped to broadcast."""
    shape = _channels(x)
    r = op.reciprocal(op.sqrt(var + epsilon))
    k = scale * r
    centred = x - op.reshape(mean, shape=shape)
    dk_dvar = k * r * r * -0.5
    return shape, r, k, centred, dk_dvar


def _batch_norm_jvp(ts, ans, x, scale, bias, mean, var, epsilon=EPSILON):
    shape, r, k, centred, dk_dvar = _bn_parts(x, scale, mean, var, epsilon)
    tx, ts_, tb, tm, tv = ts
    per_channel = lambda v: op.reshape(v, shape=shape)  # noqa: E731
    terms = []
    if tx is not None:
        terms.append(tx * per_channel(k))
    if tm is not None:
        terms.append(-reshape(tm, shape) * per_channel(k))
    if ts_ is not None:
        terms.append(reshape(ts_, shape) * (centred * per_channel(r)))
    if tv is not None:
        terms.append(reshape(tv, shape) * (centred * per_channel(dk_dvar)))
    if tb is not None:
        terms.append(reshape(tb, shape))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return broadcast_to(total, x.shape)


def _batch_norm_vjp(g, ans, x, scale, bias, mean, var, epsilon=EPSILON):
    shape, r, k, centred, dk_dvar = _bn_parts(x, scale, mean, var, epsilon)
    channels = (x.shape[1],)

    def per_channel_sum(v: Sym) -> Sym:
        return reshape(sum_to(v, shape), channels)

    g_sum = per_channel_sum(g)
    g_centred = per_channel_sum(g * centred)
    return (
        g * op.reshape(k, shape=shape),
        g_centred * r,
        g_sum,
        -g_sum * k,
        g_centred * dk_dvar,
    )


implement("batch_norm", _batch_norm, jvp=_batch_norm_jvp, vjp=_batch_norm_vjp)
