"""max_pool and avg_pool (ONNX MaxPool / AveragePool, N-D, NCHW): reductions over windows.

Both see the input through the windows of conv.py's `patches` (a view) and reduce over the
kernel axes, so the forward allocates only its result (and the padded input); the operands,
attributes, type rules and geometry are the opset's (`gradserve_client.opset.conv`).
`ceil_mode` rounds the output size up, as torch does: a last window that would start in the end
padding is dropped, and the part of a window beyond the padded input counts as padding that
`count_include_pad` does not count. avg_pool divides by the number of taps of its window (every
`dilations`-th element) inside the input (or, with count_include_pad, inside the padded input).

Rules. avg_pool is linear: its JVP is avg_pool of the tangent and its VJP spreads the cotangent
over each window, divided by the window's count, and adds it back with `conv_patches_grad`.
max_pool's Jacobian weighs each window's elements by `hit / count`, where `hit` marks the
elements equal to the window's max and `count` is how many there are: **tied maxima share the
(co)tangent evenly** (the convention of `max`), padding never wins (it is -inf), and a NaN is a
max of its window. The internal `max_pool_pick` (JVP) and `max_pool_grad` (VJP) apply those
weights; the weights are piecewise constant, so second derivatives come out right (zero
curvature from the selection).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from gradserve_client.opset.conv import Window
from gradserve_client.opset.conv import pool_geometry as _geometry

from gradserve.autodiff.ops.conv import crop, padded_shape, patches, per_sample, window_slices
from gradserve.autodiff.ops.elementwise import keep
from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, broadcast_to, op, reshape

# ---- max_pool ----------------------------------------------------------------------------------
# Reductions over the tiny trailing kernel axes of the windows are slow in numpy (it reduces
# each window on its own: 100 ms for a 2x2 pool of 800k elements); one vectorised step per
# kernel offset, over all windows at once, is 10-50x faster. The derivatives are two internal
# ops, each the other's transpose: `max_pool_pick` (the JVP: each window's tangent at its maxima,
# averaged) and `max_pool_grad` (the VJP: each window's cotangent shared among its maxima).
# Their only float operand that matters is the (co)tangent, which may carry batch axes; the
# selection is piecewise constant in x, so no derivative flows through it.


def _max_pool(x: np.ndarray, **attrs) -> np.ndarray:
    geom = _geometry(x.shape, attrs)
    cols = patches(x, **geom.attrs, pad_value=-np.inf)
    offsets = np.ndindex(*geom.kernel)
    out = cols[(Ellipsis, *next(offsets))].copy()
    for offset in offsets:
        np.maximum(out, cols[(Ellipsis, *offset)], out=out)
    return out


def _hits(x: np.ndarray, ans: np.ndarray, attrs: dict) -> tuple[Window, list, np.ndarray]:
    """(geometry, [(offset, where that element is its window's max)], maxima per window). A
    NaN is a max of its window (so it takes the gradient, as torch's argmax would)."""
    geom = _geometry(x.shape, attrs)
    cols = patches(x, **geom.attrs, pad_value=-np.inf)
    nan = bool(np.isnan(ans).any())
    hits, count = [], np.zeros(ans.shape, x.dtype)
    for offset in np.ndindex(*geom.kernel):
        element = cols[(Ellipsis, *offset)]
        hit = element == ans
        if nan:
            hit |= np.isnan(element)
        count += hit
        hits.append((offset, hit))
    return geom, hits, count


def _max_pool_pick(x: np.ndarray, ans: np.ndarray, t: np.ndarray, **attrs) -> np.ndarray:
    geom, hits, count = _hits(x, ans, attrs)
    cols = patches(t, **geom.attrs)
    out = np.zeros(t.shape[: t.ndim - x.ndim] + ans.shape, t.dtype)
    for offset, hit in hits:
        out += keep(hit, cols[(Ellipsis, *offset)])
    out /= count
    return out


def _max_pool_grad(x: np.ndarray, ans: np.ndarray, g: np.ndarray, **attrs) -> np.ndarray:
    geom, hits, count = _hits(x, ans, attrs)
    share = g / count
    spatial = x.shape[2:]
    padded = padded_shape(spatial, geom.pads)
    # Windows that do not overlap (strides >= their extent, as a 2x2 pool of stride 2) give each
    # element at most one share: it is written, not added; and where they also tile the padded
    # input, nothing is left to be zero.
    extents = [d * (k - 1) + 1 for k, d in zip(geom.kernel, geom.dilations, strict=True)]
    apart = all(s >= e for s, e in zip(geom.strides, extents, strict=True))
    tiled = apart and all(
        s == k and m * s == n
        for s, k, m, n in zip(geom.strides, geom.kernel, geom.out, padded, strict=True)
    )
    out = (np.empty if tiled else np.zeros)(g.shape[: g.ndim - len(spatial)] + padded, g.dtype)
    for offset, hit in hits:
        where = (Ellipsis, *window_slices(offset, geom.strides, geom.dilations, geom.out))
        if apart:
            out[where] = keep(hit, share)
        else:
            out[where] += keep(hit, share)
    return crop(out, spatial, geom.pads)


def _max_pool_indices(x: np.ndarray, *, storage_order: int = 0, **attrs) -> np.ndarray:
    """ONNX MaxPool's Indices: per window, the flat index into x of its first maximum (in the
    window's row-major order), the spatial axes counted column-major with storage_order=1."""
    geom = _geometry(x.shape, attrs)
    cols = patches(x, **geom.attrs, pad_value=-np.inf)
    spatial = x.shape[2:]
    n = len(spatial)
    steps = [math.prod(spatial[:i] if storage_order else spatial[i + 1 :]) for i in range(n)]
    best = np.full(cols.shape[: 2 + n], -np.inf, x.dtype)
    found = np.zeros(best.shape, bool)
    where = np.zeros(best.shape, np.int64)
    for offset in np.ndindex(*geom.kernel):
        inside, flat = np.ones((), bool), np.zeros((), np.int64)
        for i, (o, s, d, m) in enumerate(
            zip(offset, geom.strides, geom.dilations, geom.out, strict=True)
        ):
            at = (np.arange(m) * s - geom.pads[i] + o * d).reshape((m,) + (1,) * (n - 1 - i))
            inside = inside & (at >= 0) & (at < spatial[i])
            flat = flat + at * steps[i]
        element = cols[(Ellipsis, *offset)]
        take = inside & (~found | (element > best) | (np.isnan(element) & ~np.isnan(best)))
        best = np.where(take, element, best)
        where = np.where(take, flat, where)
        found |= inside
    planes = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * n)
    return where + planes * math.prod(spatial)


implement("max_pool_indices", _max_pool_indices)
implement(
    "max_pool",
    _max_pool,
    jvp=lambda ts, ans, x, **attrs: op.max_pool_pick(x, ans, ts[0], **attrs),
    vjp=lambda g, ans, x, **attrs: (op.max_pool_grad(x, ans, g, **attrs),),
)
implement(
    "max_pool_pick",
    _max_pool_pick,
    jvp=lambda ts, ans, x, top, t, **attrs: (
        None if ts[2] is None else op.max_pool_pick(x, top, ts[2], **attrs)
    ),
    vjp=lambda ct, ans, x, top, t, **attrs: (None, None, op.max_pool_grad(x, top, ct, **attrs)),
)
implement(
    "max_pool_grad",
    _max_pool_grad,
    jvp=lambda ts, ans, x, top, g, **attrs: (
        None if ts[2] is None else op.max_pool_grad(x, top, ts[2], **attrs)
    ),
    vjp=lambda ct, ans, x, top, g, **attrs: (None, None, op.max_pool_pick(x, top, ct, **attrs)),
)


# ---- avg_pool ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _counts(shape: tuple[int, ...], geom: Window, base: Window, include_pad: int) -> np.ndarray:
    """How many elements of each window (*S') are counted: inside the input, or with
    include_pad inside the explicitly padded input (never ceil_mode's extra end padding)."""
    n = len(geom.kernel)
    total = np.ones((), np.int64)
    for i, (size, k, s, d, m) in enumerate(
        zip(shape, geom.kernel, geom.strides, geom.dilations, geom.out, strict=True)
    ):
        lo, hi = (-base.pads[i], size + base.pads[n + i]) if include_pad else (0, size)
        taps = (np.arange(m) * s - geom.pads[i])[:, None] + np.arange(k) * d
        count = ((taps >= lo) & (taps < hi)).sum(axis=1)
        total = np.multiply.outer(total, count)
    return total


def _divisor(shape: tuple[int, ...], attrs: dict) -> tuple[Window, np.ndarray]:
    geom = _geometry(shape, attrs)
    base = _geometry(shape, attrs, ceil=False)
    return geom, _counts(shape[2:], geom, base, attrs.get("count_include_pad", 0))


def _avg_pool(x: np.ndarray, **attrs) -> np.ndarray:
    geom, counts = _divisor(x.shape, attrs)
    cols = patches(x, **geom.attrs)
    offsets = np.ndindex(*geom.kernel)
    total = cols[(Ellipsis, *next(offsets))].copy()
    for offset in offsets:  # one step per kernel offset, as max_pool
        total += cols[(Ellipsis, *offset)]
    total /= counts.astype(x.dtype)
    return total


def _avg_pool_vjp(g: Sym, ans: Sym, x: Sym, **attrs) -> tuple[Sym]:
    geom, counts = _divisor(x.shape, attrs)
    n = len(geom.kernel)
    scale = g.lift((1.0 / counts).reshape(counts.shape + (1,) * n))
    spread = reshape(g, ans.shape + (1,) * n) * scale
    spread = broadcast_to(spread, ans.shape + geom.kernel)
    return (per_sample(spread, lambda c: op.conv_patches_grad(c, shape=x.shape[2:], **geom.attrs)),)


implement(
    "avg_pool",
    _avg_pool,
    jvp=lambda ts, ans, x, **attrs: per_sample(ts[0], lambda t: op.avg_pool(t, **attrs)),
    vjp=_avg_pool_vjp,
)
