"""Convolution (ONNX Conv: NCHW / OIHW, N-D) and the window ops that pooling shares.

A window op sees `x` (N, C, *S) through the internal `conv_patches` op: the windows of the
(padded) input as a strided view (N, C, *S', *K) made by sliding_window_view, no copy. conv is
then one `contract` of the patches with the kernel: a batched GEMM over the groups (one GEMM for
groups=1), the patches copied once into GEMM layout as im2col would; no loop over pixels.

Derivatives are programs of four ops, each with its own rules:
- `conv` itself, linear in x: the JVP w.r.t. x is conv of the tangent;
- `conv_patches` (linear, or affine with a pad value) and its transpose `conv_patches_grad`,
  which adds each window back where it came from (col2im: a loop over the kernel offsets, not
  the pixels); each is the other's VJP;
- `einsum`: the JVP w.r.t. the kernel, and both VJPs, are einsums of the patches, the kernel and
  the cotangent. The VJP w.r.t. x is a transposed convolution (einsum, then col2im) and the one
  w.r.t. the kernel a correlation of input and cotangent.
So second derivatives work by composition. A (co)tangent's batch axis is folded into N for the
per-sample ops and is one more einsum letter for the others.

The operands, attributes, type rules and the window geometry (`window`) are the opset's
(`gradserve_client.opset.conv`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from gradserve_client.opset.conv import Window, window
from numpy.lib.stride_tricks import sliding_window_view

from gradserve.autodiff.ops.einsum import contract
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
    for offset in np.ndindex(*kernel_shape):
        where = window_slices(offset, strides, dilations, out_sp)
        out[(Ellipsis, *where)] += g[(Ellipsis, *offset)]
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


# ---- conv --------------------------------------------------------------------------------------

_SPATIAL = "pqrstuvw"  # einsum letters of the output's spatial axes
_KERNEL = "ijklmxyz"  # and of the kernel's


def _geometry(x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict) -> Window:
    return window(
        x_shape[2:],
        w_shape[2:],
        attrs.get("strides"),
        attrs.get("pads"),
        attrs.get("dilations"),
        attrs.get("auto_pad", "NOTSET"),
    )


def _letters(n: int) -> tuple[str, str]:
    return _SPATIAL[:n], _KERNEL[:n]


def _grouped(shape: tuple[int, ...], groups: int) -> tuple[int, ...]:
    """(N, C, ...) as (N, G, C / G, ...); also (O, Cg, ...) as (G, O / G, Cg, ...)."""
    return (shape[0], groups, shape[1] // groups, *shape[2:])


def _conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    groups: int = 1,
    **attrs,
) -> np.ndarray:
    geom = _geometry(x.shape, w.shape, attrs)
    s, k = _letters(len(geom.kernel))
    cols = patches(x, **geom.attrs).reshape(_grouped(x.shape[:2], groups) + geom.out + geom.kernel)
    kernel = w.reshape((groups, w.shape[0] // groups, *w.shape[1:]))
    out = contract((f"ngc{s}{k}", f"goc{k}"), f"ngo{s}", cols, kernel)
    out = out.reshape((x.shape[0], w.shape[0], *geom.out))
    if b is not None:
        out = out + b.reshape((-1,) + (1,) * len(geom.out))
    return out


def _conv_parts(x: Sym, w: Sym, groups: int, attrs: dict) -> tuple[Window, str, str, Sym, Sym]:
    """The geometry, the letters, the grouped patches of x and the grouped kernel."""
    geom = _geometry(x.shape, w.shape, attrs)
    s, k = _letters(len(geom.kernel))
    cols = op.reshape(
        op.conv_patches(x, **geom.attrs),
        shape=_grouped(x.shape[:2], groups) + geom.out + geom.kernel,
    )
    kernel = op.reshape(w, shape=(groups, w.shape[0] // groups, *w.shape[1:]))
    return geom, s, k, cols, kernel


def _conv_jvp(ts: list[Sym | None], ans: Sym, x: Sym, w: Sym, *b: Sym, groups=1, **attrs) -> Sym:
    tx, tw, *tb = ts
    out = None
    if tx is not None:
        out = per_sample(tx, lambda t: op.conv(t, w, groups=groups, **attrs))
    if tw is not None:
        _, s, k, cols, _ = _conv_parts(x, w, groups, attrs)
        bl = "b" if tw.em.batch else ""
        tk = reshape(tw, (groups, w.shape[0] // groups, *w.shape[1:]))
        term = op.einsum([cols, tk], subscripts=f"ngc{s}{k},{bl}goc{k}->{bl}ngo{s}")
        term = reshape(term, ans.shape)
        out = term if out is None else out + term
    if tb and tb[0] is not None:
        term = broadcast_to(reshape(tb[0], (1, w.shape[0]) + (1,) * (ans.ndim - 2)), ans.shape)
        out = term if out is None else out + term
    assert out is not None
    return out


def _conv_vjp(g: Sym, ans: Sym, x: Sym, w: Sym, *b: Sym, groups=1, **attrs) -> tuple:
    geom, s, k, cols, kernel = _conv_parts(x, w, groups, attrs)
    bl = "b" if g.em.batch else ""
    gg = reshape(g, _grouped(ans.shape, groups))
    gw = op.einsum([gg, cols], subscripts=f"{bl}ngo{s},ngc{s}{k}->{bl}goc{k}")
    gcols = op.einsum([gg, kernel], subscripts=f"{bl}ngo{s},goc{k}->{bl}ngc{s}{k}")
    gcols = op.reshape(gcols, shape=(-1, *x.shape[1:2], *geom.out, *geom.kernel))
    gx = op.reshape(
        op.conv_patches_grad(gcols, shape=x.shape[2:], **geom.attrs), shape=g.em.batch + x.shape
    )
    grads = [gx, reshape(gw, w.shape)]
    if b:
        grads.append(op.sum(g, axis=(-ans.ndim, *range(2 - ans.ndim, 0))))
    return tuple(grads)


implement("conv", _conv, jvp=_conv_jvp, vjp=_conv_vjp)
