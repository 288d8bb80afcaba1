"""Structure ops: they move elements around and are linear, so the JVP is the op itself
applied to the tangent (`linear=`: how its attributes read with a leading batch axis) and only
the VJP, its transpose, is written out."""

from __future__ import annotations

import numpy as np
from gradserve_client.opset import FLOAT_DTYPES
from gradserve_client.opset.reductions import axes_of
from gradserve_client.opset.structure import parse_index, squeezed_axes, tiled_shape

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, broadcast_to, op, reshape, sum_to, transpose


def _perm(x_ndim: int, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    return tuple(range(x_ndim))[::-1] if axes is None else tuple(a % x_ndim for a in axes)


def _batched_perm(batch: tuple[int, ...], perm: tuple[int, ...]) -> tuple[int, ...]:
    nb = len(batch)
    return tuple(range(nb)) + tuple(a + nb for a in perm)


implement(
    "reshape",
    lambda x, *, shape: np.reshape(x, shape),
    linear=lambda batch, x, shape: {"shape": batch + shape},
    vjp=lambda g, ans, x, shape: (reshape(g, x.shape),),
)
implement(
    "broadcast_to",
    lambda x, *, shape: np.broadcast_to(x, shape),
    jvp=lambda ts, ans, x, shape: broadcast_to(ts[0], ans.shape),  # needs unit axes: not linear=
    vjp=lambda g, ans, x, shape: (sum_to(g, x.shape),),
)
implement(
    "transpose",
    lambda x, *, axes=None: np.transpose(x, axes),
    linear=lambda batch, x, axes=None: {"axes": _batched_perm(batch, _perm(x.ndim, axes))},
    vjp=lambda g, ans, x, axes=None: (
        transpose(g, tuple(np.argsort(_perm(x.ndim, axes)).tolist())),
    ),
)
implement(
    "expand_dims",
    lambda x, *, axis: np.expand_dims(x, axis),
    linear=lambda batch, x, axis: {"axis": axes_of(axis, x.ndim + len(axis))},
    vjp=lambda g, ans, x, axis: (reshape(g, x.shape),),
)
implement(
    "squeeze",
    lambda x, *, axis=None: np.squeeze(x, axis),
    linear=lambda batch, x, axis=None: {"axis": squeezed_axes(x.shape, axis)},
    vjp=lambda g, ans, x, axis=None: (reshape(g, x.shape),),
)


# ---- concatenate, stack ------------------------------------------------------------------------
# Axes are kept negative in the rules, so they still point at the right axis of a (co)tangent
# with a leading batch axis; cotangents are cut apart with `slice` ("...,a:b,:").


def along(axis: int, item: str) -> str:
    """A `slice` index selecting `item` on the (negative) `axis`, whatever the leading axes."""
    return ",".join(["...", item] + [":"] * (-axis - 1))


def _concatenate_vjp(g: Sym, ans: Sym, *xs: Sym, axis: int = 0) -> tuple[Sym, ...]:
    (ax,) = axes_of((axis,), ans.ndim)
    if len(xs) == 1:
        return (g,)
    out, start = [], 0
    for x in xs:
        stop = start + x.shape[ax]
        out.append(op.slice(g, index=along(ax, f"{start}:{stop}")))
        start = stop
    return tuple(out)


def _stack_vjp(g: Sym, ans: Sym, *xs: Sym, axis: int = 0) -> tuple[Sym, ...]:
    (ax,) = axes_of((axis,), ans.ndim)
    return tuple(op.slice(g, index=along(ax, str(i))) for i in range(len(xs)))


implement(
    "concatenate",
    lambda *xs, axis=0: np.concatenate(xs, axis=axis),
    linear=lambda batch, x, *xs, axis=0: {"axis": axes_of((axis,), x.ndim)[0]},
    vjp=_concatenate_vjp,
)
implement(
    "stack",
    lambda *xs, axis=0: np.stack(xs, axis=axis),
    linear=lambda batch, x, *xs, axis=0: {"axis": axes_of((axis,), x.ndim + 1)[0]},
    vjp=_stack_vjp,
)


# ---- slice (numpy basic indexing) --------------------------------------------------------------
# The cotangent goes back through the internal `slice_grad`, which writes g into zeros; both
# take one ":" per batch axis in front of the index.


def batched_index(batch: tuple[int, ...], index: str) -> str:
    return ",".join([":"] * len(batch) + ([index] if index.strip() else []))


def _slice_grad(g: np.ndarray, *, index: str, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, g.dtype)
    out[parse_index(index)] = g
    return out


implement(
    "slice",
    lambda x, *, index: x[parse_index(index)],
    linear=lambda batch, x, index: {"index": batched_index(batch, index)},
    vjp=lambda g, ans, x, index: (
        op.slice_grad(g, index=batched_index(g.em.batch, index), shape=g.em.batch + x.shape),
    ),
)
implement(
    "slice_grad",
    _slice_grad,
    linear=lambda batch, g, index, shape: {
        "index": batched_index(batch, index),
        "shape": batch + shape,
    },
    vjp=lambda ct, ans, g, index, shape: (op.slice(ct, index=batched_index(ct.em.batch, index)),),
)


# ---- pad, flip, tile, repeat ---------------------------------------------------------------
# pad is affine: its JVP is pad of the tangent with a zero fill. Its transpose, the internal
# pad_grad, cuts the pads off and (reflect, edge, wrap) adds them onto the elements they copy.


def _batched_pads(batch: tuple[int, ...], pads: tuple[int, ...]) -> tuple[int, ...]:
    n, zeros = len(pads) // 2, (0,) * len(batch)
    return zeros + pads[:n] + zeros + pads[n:]


def _pad(
    x: np.ndarray, *, pads: tuple[int, ...], mode: str = "constant", constant_value: float = 0.0
) -> np.ndarray:
    widths = list(zip(pads[: x.ndim], pads[x.ndim :], strict=True))
    if mode == "constant":
        return np.pad(x, widths, constant_values=np.asarray(constant_value).astype(x.dtype))
    return np.pad(x, widths, mode=mode)


def _pad_grad(g: np.ndarray, *, pads: tuple[int, ...], mode: str = "constant") -> np.ndarray:
    n = g.ndim
    for axis in range(n):
        begin, end = pads[axis], pads[n + axis]
        if begin or end:
            g = np.moveaxis(_unpad(np.moveaxis(g, axis, 0), begin, end, mode), 0, axis)
    return g


def _unpad(g: np.ndarray, begin: int, end: int, mode: str) -> np.ndarray:
    """The transpose of padding axis 0 by (begin, end)."""
    size = g.shape[0] - begin - end
    out = g[begin : begin + size].copy()
    if mode != "constant":
        source = np.pad(np.arange(size), (begin, end), mode=mode)  # what each position copies
        pads = np.r_[0:begin, begin + size : len(source)]
        np.add.at(out, source[pads], g[pads])
    return out


implement(
    "pad",
    _pad,
    linear=lambda batch, x, pads, mode="constant", constant_value=0.0: {
        "pads": _batched_pads(batch, pads),
        "mode": mode,
    },
    vjp=lambda g, ans, x, pads, mode="constant", constant_value=0.0: (
        op.pad_grad(g, pads=_batched_pads(g.em.batch, pads), mode=mode),
    ),
)
implement(
    "pad_grad",
    _pad_grad,
    linear=lambda batch, g, pads, mode="constant": {
        "pads": _batched_pads(batch, pads),
        "mode": mode,
    },
    vjp=lambda ct, ans, g, pads, mode="constant": (
        op.pad(ct, pads=_batched_pads(ct.em.batch, pads), mode=mode),
    ),
)


implement(
    "flip",
    lambda x, *, axis=None: np.flip(x, axis),
    linear=lambda batch, x, axis=None: {"axis": axes_of(axis, x.ndim)},
    vjp=lambda g, ans, x, axis=None: (op.flip(g, axis=axes_of(axis, x.ndim)),),
)


def _tile_jvp(ts: list[Sym | None], ans: Sym, x: Sym, reps: tuple[int, ...]) -> Sym:
    shape, full = tiled_shape(x.shape, reps)
    return op.tile(reshape(ts[0], shape), reps=(1,) * len(ans.em.batch) + full)


def _tile_vjp(g: Sym, ans: Sym, x: Sym, reps: tuple[int, ...]) -> tuple[Sym]:
    # Each axis of the result is (reps, size) in C order: sum over the reps axes.
    shape, full = tiled_shape(x.shape, reps)
    split = reshape(g, [n for pair in zip(full, shape, strict=True) for n in pair])
    summed = op.sum(split, axis=tuple(range(-2 * len(shape), 0, 2)))
    return (reshape(summed, x.shape),)


def _repeat_vjp(g: Sym, ans: Sym, x: Sym, repeats: int, axis: int) -> tuple[Sym]:
    # The repeated axis is (size, repeats) in C order: sum over the repeats.
    (ax,) = axes_of((axis,), x.ndim)
    at = x.ndim + ax
    split = reshape(g, (*x.shape[:at], x.shape[at], repeats, *x.shape[at + 1 :]))
    return (op.sum(split, axis=(ax,)),)


implement("tile", lambda x, *, reps: np.tile(x, reps), jvp=_tile_jvp, vjp=_tile_vjp)
implement(
    "repeat",
    lambda x, *, repeats, axis: np.repeat(x, repeats, axis),
    linear=lambda batch, x, repeats, axis: {
        "repeats": repeats,
        "axis": axes_of((axis,), x.ndim)[0],
    },
    vjp=_repeat_vjp,
)


# ---- astype: derivatives flow through float-to-float casts only --------------------------------


def _float_cast(x: Sym, dtype: str) -> bool:
    return x.type.is_float and dtype in FLOAT_DTYPES


implement(
    "astype",
    lambda x, *, dtype: x.astype(dtype),
    jvp=lambda ts, ans, x, dtype: op.astype(ts[0], dtype=dtype) if _float_cast(x, dtype) else None,
    vjp=lambda g, ans, x, dtype: (op.astype(g, dtype=x.dtype) if _float_cast(x, dtype) else None,),
)
