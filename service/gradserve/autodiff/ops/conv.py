"""Convolution (ONNX Conv: NCHW / OIHW, N-D) and the window ops that pooling shares.

A window op sees `x` (N, C, *S) through `patches`: the windows of the (padded) input as a strided
view (N, C, *S', *K) made by sliding_window_view, no copy. Pooling reduces over them; conv
copies them once into GEMM layout (`columns`, im2col) and multiplies by the kernel: one GEMM per
group, no loop over pixels.

conv's derivatives are two internal ops, each one GEMM too:
- `conv_input_grad` (the VJP w.r.t. x, a transposed convolution): the kernel's transpose times
  the cotangent gives each window's share, which is added back where the window came from
  (col2im, one add per kernel offset over runs of S'_last x N contiguous elements, the batch
  axis innermost). Measured against the other lowering, a convolution of the dilated, padded
  cotangent with the flipped kernel: that copies O/C x S/S' times more (its im2col reads the
  cotangent, O x K values per input pixel), which made it 1.2-10x slower for LeNet's layers and
  about as fast for a 3x3 layer with C = O;
- `conv_kernel_grad` (the VJP w.r.t. the kernel): the cotangent times the columns of x.
conv, conv_input_grad and conv_kernel_grad are bilinear and their VJPs are each other, so the
three are closed under differentiation (second derivatives by composition). A (co)tangent's
batch axes are folded into N where the op treats samples independently, and otherwise into a
channel axis, inside each group (`through_channels`), so every rule emits one op of the three.

`conv_patches` and its transpose `conv_patches_grad` (col2im over (..., *S', *K) windows) are
the window ops of avg_pool's VJP; each is the other's VJP.

The operands, attributes, type rules and the window geometry (`window`) are the opset's
(`gradserve_client.opset.conv`, `.internal`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from gradserve_client.opset.conv import Window, window
from numpy.lib.stride_tricks import sliding_window_view

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, broadcast_to, op, reshape

# ---- conv_patches and its transpose ------------------------------------------------------------


def patches(
    x: np.ndarray,
    *,
    kernel_shape: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    pad_value: float = 0.0,
) -> np.ndarray:
    """The windows of x (..., *S) as a strided view (..., *S', *K): any leading axes (N, C, a
    batch axis) pass through."""
    n = len(kernel_shape)
    lead = x.ndim - n
    if any(pads):
        widths = [(0, 0)] * lead + list(zip(pads[:n], pads[n:], strict=True))
        x = np.pad(x, widths, constant_values=pad_value)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel_shape, dilations, strict=True)]
    view = sliding_window_view(x, extent, axis=tuple(range(lead, x.ndim)))
    steps = (slice(None),) * lead + tuple(slice(None, None, s) for s in strides)
    return view[steps + tuple(slice(None, None, d) for d in dilations)]


def window_slices(
    offset: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...], out: tuple
) -> tuple[slice, ...]:
    """Where the elements at `offset` of every window lie in the padded input."""
    return tuple(
        slice(o * d, o * d + s * (m - 1) + 1, s)
        for o, d, s, m in zip(offset, dilations, strides, out, strict=True)
    )


def add_windows(
    out: np.ndarray,
    lead: int,
    window_at: Callable[[tuple[int, ...]], np.ndarray],
    kernel_shape: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    windows: tuple[int, ...],
) -> None:
    """col2im: add `window_at(offset)`, the elements at `offset` of every window (spatial shape
    `windows`), back where they were taken from in `out`, whose spatial axes follow its first
    `lead` axes. One strided add per kernel offset."""
    for offset in np.ndindex(*kernel_shape):
        where = window_slices(offset, strides, dilations, windows)
        out[(slice(None),) * lead + where] += window_at(offset)


def patches_grad(
    g: np.ndarray,
    *,
    kernel_shape: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    shape: tuple[int, ...],
) -> np.ndarray:
    """The transpose of `patches` (col2im): each window of g (..., *S', *K) added back into
    zeros of (..., *shape) where it was taken from. One strided add per kernel offset."""
    n = len(kernel_shape)
    lead = g.shape[: g.ndim - 2 * n]
    out_sp = g.shape[len(lead) : len(lead) + n]
    out = np.zeros(lead + padded_shape(shape, pads), g.dtype)
    add_windows(
        out, len(lead), lambda o: g[(Ellipsis, *o)], kernel_shape, strides, dilations, out_sp
    )
    return crop(out, shape, pads)


def padded_shape(shape: tuple[int, ...], pads: tuple[int, ...]) -> tuple[int, ...]:
    n = len(shape)
    return tuple(s + pads[i] + pads[n + i] for i, s in enumerate(shape))


def crop(padded: np.ndarray, shape: tuple[int, ...], pads: tuple[int, ...]) -> np.ndarray:
    """The trailing axes of `padded` without their pads."""
    return padded[(Ellipsis, *(slice(pads[i], pads[i] + s) for i, s in enumerate(shape)))]


def per_sample(t: Sym, fn: Callable[[Sym], Sym]) -> Sym:
    """fn (an op over (N, C, ...) that treats samples independently) applied to a (co)tangent,
    its batch axis folded into N."""
    nb = len(t.em.batch)
    if not nb:
        return fn(t)
    merged = op.reshape(t, shape=(math.prod(t.shape[: nb + 1]), *t.shape[nb + 1 :]))
    out = fn(merged)
    return op.reshape(out, shape=t.shape[: nb + 1] + out.shape[1:])


def _patch_attrs(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k not in ("pad_value", "shape")}


implement(
    "conv_patches",
    patches,
    jvp=lambda ts, ans, x, **a: per_sample(ts[0], lambda t: op.conv_patches(t, **_patch_attrs(a))),
    vjp=lambda g, ans, x, **a: (
        per_sample(g, lambda c: op.conv_patches_grad(c, shape=x.shape[2:], **_patch_attrs(a))),
    ),
)
implement(
    "conv_patches_grad",
    patches_grad,
    jvp=lambda ts, ans, g, **a: per_sample(ts[0], lambda t: op.conv_patches_grad(t, **a)),
    vjp=lambda ct, ans, g, **a: (per_sample(ct, lambda c: op.conv_patches(c, **_patch_attrs(a))),),
)


# ---- conv and its two derivative ops: the kernels ----------------------------------------------

# OpenBLAS's sgemm is 2-4x slower on a product with one dimension in the tens of thousands and
# the others tiny (N * S' = 50176 columns for LeNet's first layer, against 6 channels and 25
# kernel offsets) than on the same product in slices of about 4096 of that dimension: conv's
# and conv_kernel_grad's GEMMs go slice by slice. (conv_input_grad's, whose long dimension is
# its result's columns, was not faster so for LeNet's second layer, and only 5-15 % for the
# first, whose col2im adds dominate.)
SLICE = 4096


def _geometry(x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict) -> Window:
    return window(
        x_shape[2:],
        w_shape[2:],
        attrs.get("strides"),
        attrs.get("pads"),
        attrs.get("dilations"),
        attrs.get("auto_pad", "NOTSET"),
    )


def columns(x: np.ndarray, geom: Window, groups: int) -> np.ndarray:
    """im2col: the windows of x (N, C, *S) copied once into GEMM layout (G, C/G * K, N * S'),
    K and S' the sizes of the kernel and the output. The copy reads along x's last axis; with
    the kernel offsets innermost instead it is several times slower."""
    n = len(geom.kernel)
    view = patches(x, **geom.attrs)  # (N, C, *S', *K)
    order = (1, *range(2 + n, 2 + 2 * n), 0, *range(2, 2 + n))  # (C, *K, N, *S')
    rows = x.shape[1] // groups * math.prod(geom.kernel)
    return view.transpose(order).reshape(groups, rows, x.shape[0] * math.prod(geom.out))


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, groups=1, **attrs):
    geom = _geometry(x.shape, w.shape, attrs)
    (n, n_out), spatial = (x.shape[0], w.shape[0]), math.prod(geom.out)
    kernel = w.reshape(groups, n_out // groups, math.prod(w.shape[1:]))
    cols = columns(x, geom, groups)  # (G, C/G * K, N * S')
    out = np.empty((n, n_out, spatial), np.result_type(kernel, cols))
    # Whole samples per slice: each slice of the result (O, n * S') goes to the (N, O, S')
    # layout, with the bias, while it is still in the cache.
    step = max(1, SLICE // spatial)
    for start in range(0, n, step):
        part = np.matmul(kernel, cols[..., start * spatial : (start + step) * spatial])
        part = part.reshape(n_out, -1, spatial).swapaxes(0, 1)
        if b is None:
            out[start : start + step] = part
        else:
            np.add(part, b[:, None], out=out[start : start + step])
    return out.reshape(n, n_out, *geom.out)


def _input_grad(
    g: np.ndarray,
    w: np.ndarray,
    *,
    kernel_shape: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    shape: tuple[int, ...],
    groups: int = 1,
) -> np.ndarray:
    """conv_input_grad: (N, C, *shape) from the cotangent g (N, O, *S') and the kernel w."""
    geom = window(shape, kernel_shape, strides, pads, dilations)
    (n, n_out), per_group = g.shape[:2], w.shape[1]
    og, k = n_out // groups, math.prod(kernel_shape)
    # The batch axis goes innermost, so that each window's add below runs over S'_last * N
    # contiguous elements (S'_last alone is a few elements: 2-3x slower).
    gm = np.moveaxis(g, 0, -1).reshape(groups, og, math.prod(geom.out) * n)
    kernel = w.reshape(groups, og, per_group, k).transpose(0, 3, 2, 1)
    kernel = kernel.reshape(groups, k * per_group, og)
    cols = np.matmul(kernel, gm).reshape(groups, *kernel_shape, per_group, *geom.out, n)
    padded = np.zeros((groups, per_group, *padded_shape(shape, pads), n), g.dtype)
    add_windows(
        padded, 2, lambda o: cols[(slice(None), *o)], kernel_shape, strides, dilations, geom.out
    )
    padded = np.moveaxis(padded.reshape(groups * per_group, *padded.shape[2:]), -1, 0)
    return np.ascontiguousarray(crop(padded, shape, pads))


def _kernel_grad(
    x: np.ndarray,
    g: np.ndarray,
    *,
    kernel_shape: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    groups: int = 1,
) -> np.ndarray:
    """conv_kernel_grad: (O, C/G, *K) from x (N, C, *S) and the cotangent g (N, O, *S')."""
    geom = window(x.shape[2:], kernel_shape, strides, pads, dilations)
    n, n_out = g.shape[:2]
    og = n_out // groups
    spatial = math.prod(geom.out)
    gm = g.reshape(n, groups, og, spatial).transpose(1, 2, 0, 3).reshape(groups, og, n * spatial)
    cols = columns(x, geom, groups)  # (G, C/G * K, N * S')
    # The long dimension is the inner one here: the slices' products are summed. (The columns
    # as the left operand are faster than as the right one.)
    out = np.zeros((groups, cols.shape[1], og), np.result_type(cols, gm))
    for start in range(0, cols.shape[2], SLICE):
        part = slice(start, start + SLICE)
        out += np.matmul(cols[..., part], gm[..., part].swapaxes(1, 2))
    return out.swapaxes(1, 2).reshape(n_out, x.shape[1] // groups, *kernel_shape)


# ---- their rules --------------------------------------------------------------------------------
# All three are bilinear: a JVP applies the op with one operand replaced by its tangent, and
# each VJP is another of the three with the cotangent in one operand. `_emit` applies an op to
# operands one of which (`batched`) may carry the pass's batch axes.

_ATTRS = {  # what each op takes of the resolved geometry
    "conv": ("strides", "pads", "dilations", "groups"),
    "conv_input_grad": ("kernel_shape", "strides", "pads", "dilations", "shape", "groups"),
    "conv_kernel_grad": ("kernel_shape", "strides", "pads", "dilations", "groups"),
}
# Where a batched operand's batch axes go, per op and operand: None, into N (the op treats
# samples independently); or (axis, grouped) of the operand and of the result: into that
# channel axis, inside each group when `grouped` (conv's output channels for a batched kernel).
_FOLDS = {
    "conv": (None, ((0, True), (1, True))),
    "conv_input_grad": (None, ((1, False), (1, True))),
    "conv_kernel_grad": (((1, True), (1, False)), ((1, True), (0, True))),
}


def _emit(name: str, a: Sym, b: Sym, geo: dict, batched: int) -> Sym:
    attrs = {k: geo[k] for k in _ATTRS[name]}

    def apply(t: Sym) -> Sym:
        return getattr(op, name)(*((t, b) if batched == 0 else (a, t)), **attrs)

    t = (a, b)[batched]
    fold = _FOLDS[name][batched]
    if fold is None:
        return per_sample(t, apply)
    (into, grouped_in), (out, grouped_out) = fold
    groups = geo["groups"]
    return through_channels(
        t, apply, (into, groups if grouped_in else 1), (out, groups if grouped_out else 1)
    )


def through_channels(
    t: Sym, fn: Callable[[Sym], Sym], into: tuple[int, int], out: tuple[int, int]
) -> Sym:
    """fn (linear in its argument) applied to a (co)tangent whose batch axes B go into a channel
    axis: `into` = (axis, groups) of t, whose channels (G * c) become G * B * c, and `out` =
    (axis, groups) of fn's result, whose G * B * c channels are taken apart again."""
    batch = t.em.batch
    if not batch:
        return fn(t)
    nb, size = len(batch), math.prod(batch)
    (a, g), primal = into, t.shape[nb:]
    split = op.reshape(t, shape=(size, *primal[:a], g, primal[a] // g, *primal[a + 1 :]))
    axes = (*range(1, a + 2), 0, *range(a + 2, split.ndim))  # B after the group axis
    folded = op.reshape(
        op.transpose(split, axes=axes), shape=(*primal[:a], primal[a] * size, *primal[a + 1 :])
    )
    res = fn(folded)
    (a, g), shape = out, res.shape
    c = shape[a] // (g * size)
    split = op.reshape(res, shape=(*shape[:a], g, size, c, *shape[a + 1 :]))
    axes = (a + 1, *range(a + 1), *range(a + 2, split.ndim))  # B first
    return op.reshape(
        op.transpose(split, axes=axes), shape=(*batch, *shape[:a], g * c, *shape[a + 1 :])
    )


def _jvp(name: str, ts: list[Sym | None], xs: tuple[Sym, Sym], geo: dict) -> list[Sym]:
    """The terms of a bilinear op's JVP: the op with each tangent in its operand's place."""
    return [
        _emit(name, *(t if j == i else x for j, x in enumerate(xs)), geo, i)
        for i, t in enumerate(ts)
        if t is not None
    ]


def _conv_geo(x: Sym, w: Sym, attrs: dict) -> dict:
    geom = _geometry(x.shape, w.shape, attrs)
    return {**geom.attrs, "shape": x.shape[2:], "groups": attrs.get("groups", 1)}


def _conv_jvp(ts: list[Sym | None], ans: Sym, x: Sym, w: Sym, *b: Sym, **attrs) -> Sym:
    terms = _jvp("conv", ts[:2], (x, w), _conv_geo(x, w, attrs))
    if b and ts[2] is not None:
        bias = reshape(ts[2], (1, w.shape[0]) + (1,) * (ans.ndim - 2))
        terms.append(broadcast_to(bias, ans.shape))
    return sum(terms[1:], terms[0])


def _conv_vjp(g: Sym, ans: Sym, x: Sym, w: Sym, *b: Sym, **attrs) -> tuple[Sym, ...]:
    geo = _conv_geo(x, w, attrs)
    grads = [_emit("conv_input_grad", g, w, geo, 0), _emit("conv_kernel_grad", x, g, geo, 1)]
    if b:
        grads.append(op.sum(g, axis=(-ans.ndim, *range(2 - ans.ndim, 0))))
    return tuple(grads)


def _input_grad_jvp(ts: list[Sym | None], ans: Sym, g: Sym, w: Sym, **geo) -> Sym:
    terms = _jvp("conv_input_grad", ts, (g, w), geo)
    return sum(terms[1:], terms[0])


def _input_grad_vjp(ct: Sym, ans: Sym, g: Sym, w: Sym, **geo) -> tuple[Sym, Sym]:
    return _emit("conv", ct, w, geo, 0), _emit("conv_kernel_grad", ct, g, geo, 0)


def _kernel_grad_jvp(ts: list[Sym | None], ans: Sym, x: Sym, g: Sym, **geo) -> Sym:
    terms = _jvp("conv_kernel_grad", ts, (x, g), {**geo, "shape": x.shape[2:]})
    return sum(terms[1:], terms[0])


def _kernel_grad_vjp(ct: Sym, ans: Sym, x: Sym, g: Sym, **geo) -> tuple[Sym, Sym]:
    geo = {**geo, "shape": x.shape[2:]}
    return _emit("conv_input_grad", g, ct, geo, 1), _emit("conv", x, ct, geo, 1)


implement("conv", _conv, jvp=_conv_jvp, vjp=_conv_vjp)
implement("conv_input_grad", _input_grad, jvp=_input_grad_jvp, vjp=_input_grad_vjp)
implement("conv_kernel_grad", _kernel_grad, jvp=_kernel_grad_jvp, vjp=_kernel_grad_vjp)
