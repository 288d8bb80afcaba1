"""Structure ops: they move elements around and are linear, so the JVP is the op itself
applied to the tangent (`linear=`: how its attributes read with a leading batch axis) and only
the VJP, its transpose, is written out."""

from __future__ import annotations

import numpy as np
from gradserve_client.opset.reductions import axes_of
from gradserve_client.opset.structure import parse_index, squeezed_axes

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
