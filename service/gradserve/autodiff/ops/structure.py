"""Structure ops: they move elements around and are linear, so their rules are short."""

from __future__ import annotations

import functools
import math
import re

import numpy as np

from gradserve.autodiff.ir import DTYPES, TensorType
from gradserve.autodiff.registry import (
    AttrSpec,
    OpDef,
    RuleError,
    normalize_axes,
    register,
    same_dtype,
)
from gradserve.autodiff.symbolic import Sym, broadcast_to, op, reshape, sum_to, transpose, zeros


def _reshape_type(types: list[TensorType], shape: tuple[int, ...]) -> TensorType:
    (x,) = types
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in shape):
        raise RuleError("attrs.shape", f"invalid shape {list(shape)}")
    known = math.prod(d for d in shape if d != -1)
    if unknown:
        if known == 0 or x.size % known:
            raise RuleError("attrs.shape", f"cannot reshape {list(x.shape)} to {list(shape)}")
        shape = tuple(x.size // known if d == -1 else d for d in shape)
    if math.prod(shape) != x.size:
        raise RuleError("attrs.shape", f"cannot reshape {list(x.shape)} to {list(shape)}")
    return TensorType(shape, x.dtype)


def _reshape(x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
    return np.reshape(x, shape)


def _broadcast_type(types: list[TensorType], shape: tuple[int, ...]) -> TensorType:
    (x,) = types
    try:
        if np.broadcast_shapes(x.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise RuleError(
            "attrs.shape", f"cannot broadcast {list(x.shape)} to {list(shape)}"
        ) from None
    return TensorType(tuple(shape), x.dtype)


def _broadcast_to(x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(x, shape)


def _transpose_type(types: list[TensorType], axes: tuple[int, ...] | None = None) -> TensorType:
    (x,) = types
    if axes is None:
        return TensorType(x.shape[::-1], x.dtype)
    if any(not -x.ndim <= a < x.ndim for a in axes) or sorted(a % x.ndim for a in axes) != list(
        range(x.ndim)
    ):
        raise RuleError("attrs.axes", f"{list(axes)} is not a permutation of {x.ndim} axes")
    return TensorType(tuple(x.shape[a] for a in axes), x.dtype)


def _transpose(x: np.ndarray, *, axes: tuple[int, ...] | None = None) -> np.ndarray:
    return np.transpose(x, axes)


def _perm(x_ndim: int, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    return tuple(range(x_ndim))[::-1] if axes is None else tuple(a % x_ndim for a in axes)


register(
    OpDef(
        "reshape",
        1,
        _reshape_type,
        _reshape,
        "numpy reshape; one dimension may be -1",
        attrs={"shape": AttrSpec("ints", required=True)},
        jvp=lambda ts, ans, x, shape: reshape(ts[0], ans.shape),
        vjp=lambda g, ans, x, shape: (reshape(g, x.shape),),
    )
)
register(
    OpDef(
        "broadcast_to",
        1,
        _broadcast_type,
        _broadcast_to,
        "numpy broadcast_to",
        attrs={"shape": AttrSpec("ints", required=True)},
        jvp=lambda ts, ans, x, shape: broadcast_to(ts[0], ans.shape),
        vjp=lambda g, ans, x, shape: (sum_to(g, x.shape),),
    )
)
register(
    OpDef(
        "transpose",
        1,
        _transpose_type,
        _transpose,
        "numpy transpose; no axes reverses them",
        attrs={"axes": AttrSpec("ints")},
        jvp=lambda ts, ans, x, axes=None: transpose(ts[0], _perm(x.ndim, axes)),
        vjp=lambda g, ans, x, axes=None: (
            transpose(g, tuple(np.argsort(_perm(x.ndim, axes)).tolist())),
        ),
    )
)


# ---- expand_dims, squeeze ----------------------------------------------------------------------


def _expand_dims_type(types: list[TensorType], axis: tuple[int, ...]) -> TensorType:
    (x,) = types
    ndim = x.ndim + len(axis)
    new = {a + ndim for a in normalize_axes(axis, ndim)}
    rest = iter(x.shape)
    return TensorType(tuple(1 if i in new else next(rest) for i in range(ndim)), x.dtype)


def _squeeze_axes(x: TensorType, axis: tuple[int, ...] | None) -> tuple[int, ...]:
    if axis is None:
        return tuple(i - x.ndim for i, d in enumerate(x.shape) if d == 1)
    axes = normalize_axes(axis, x.ndim)
    for a in axes:
        if x.shape[a] != 1:
            raise RuleError("attrs.axis", f"cannot squeeze axis {a} of size {x.shape[a]}")
    return axes


def _squeeze_type(types: list[TensorType], axis: tuple[int, ...] | None = None) -> TensorType:
    (x,) = types
    drop = {a + x.ndim for a in _squeeze_axes(x, axis)}
    return TensorType(tuple(d for i, d in enumerate(x.shape) if i not in drop), x.dtype)


def _squeeze(x: np.ndarray, *, axis: tuple[int, ...] | None = None) -> np.ndarray:
    return np.squeeze(x, axis)


register(
    OpDef(
        "expand_dims",
        1,
        _expand_dims_type,
        lambda x, *, axis: np.expand_dims(x, axis),
        "numpy expand_dims: new unit axes at `axis` (positions in the result)",
        attrs={"axis": AttrSpec("ints", required=True)},
        jvp=lambda ts, ans, x, axis: reshape(ts[0], ans.shape),
        vjp=lambda g, ans, x, axis: (reshape(g, x.shape),),
    )
)
register(
    OpDef(
        "squeeze",
        1,
        _squeeze_type,
        _squeeze,
        "numpy squeeze: drop the unit axes `axis` (all of them when absent)",
        attrs={"axis": AttrSpec("ints")},
        jvp=lambda ts, ans, x, axis=None: reshape(ts[0], ans.shape),
        vjp=lambda g, ans, x, axis=None: (reshape(g, x.shape),),
    )
)


# ---- concatenate, stack ------------------------------------------------------------------------
# Axes are kept negative in the rules, so they still point at the right axis of a (co)tangent
# with a leading batch axis; cotangents are cut apart with `slice` ("...,a:b,:").


def _along(axis: int, item: str) -> str:
    """A `slice` index selecting `item` on the (negative) `axis`, whatever the leading axes."""
    return ",".join(["...", item] + [":"] * (-axis - 1))


def _concatenate_type(types: list[TensorType], axis: int = 0) -> TensorType:
    dtype = same_dtype(types, DTYPES, "concatenate")
    first = types[0]
    if first.ndim == 0:
        raise RuleError("inputs[0]", "cannot concatenate 0-d values (use stack)")
    (ax,) = normalize_axes((axis,), first.ndim)
    for i, t in enumerate(types[1:], 1):
        if t.ndim != first.ndim or any(
            d != e
            for j, (d, e) in enumerate(zip(t.shape, first.shape, strict=True))
            if j != first.ndim + ax
        ):
            raise RuleError(
                f"inputs[{i}]",
                f"shape {list(t.shape)} does not match {list(first.shape)} except on axis {axis}",
            )
    total = sum(t.shape[ax] for t in types)
    shape = list(first.shape)
    shape[ax] = total
    return TensorType(tuple(shape), dtype)


def _concatenate_jvp(ts: list[Sym | None], ans: Sym, *xs: Sym, axis: int = 0) -> Sym:
    (ax,) = normalize_axes((axis,), ans.ndim)
    parts = [t if t is not None else zeros(x, x.shape) for t, x in zip(ts, xs, strict=True)]
    return parts[0] if len(parts) == 1 else op.concatenate(parts, axis=ax)


def _concatenate_vjp(g: Sym, ans: Sym, *xs: Sym, axis: int = 0) -> tuple[Sym, ...]:
    (ax,) = normalize_axes((axis,), ans.ndim)
    if len(xs) == 1:
        return (g,)
    out, start = [], 0
    for x in xs:
        stop = start + x.shape[ax]
        out.append(op.slice(g, index=_along(ax, f"{start}:{stop}")))
        start = stop
    return tuple(out)


def _stack_type(types: list[TensorType], axis: int = 0) -> TensorType:
    dtype = same_dtype(types, DTYPES, "stack")
    first = types[0]
    for i, t in enumerate(types[1:], 1):
        if t.shape != first.shape:
            raise RuleError(
                f"inputs[{i}]", f"shape {list(t.shape)} differs from {list(first.shape)}"
            )
    (ax,) = normalize_axes((axis,), first.ndim + 1)
    at = first.ndim + 1 + ax
    return TensorType((*first.shape[:at], len(types), *first.shape[at:]), dtype)


def _stack_jvp(ts: list[Sym | None], ans: Sym, *xs: Sym, axis: int = 0) -> Sym:
    (ax,) = normalize_axes((axis,), ans.ndim)
    parts = [t if t is not None else zeros(x, x.shape) for t, x in zip(ts, xs, strict=True)]
    return op.stack(parts, axis=ax)


def _stack_vjp(g: Sym, ans: Sym, *xs: Sym, axis: int = 0) -> tuple[Sym, ...]:
    (ax,) = normalize_axes((axis,), ans.ndim)
    return tuple(op.slice(g, index=_along(ax, str(i))) for i in range(len(xs)))


register(
    OpDef(
        "concatenate",
        None,
        _concatenate_type,
        lambda *xs, axis=0: np.concatenate(xs, axis=axis),
        "numpy concatenate: join one or more operands along an existing axis",
        attrs={"axis": AttrSpec("int", 0)},
        jvp=_concatenate_jvp,
        vjp=_concatenate_vjp,
    )
)
register(
    OpDef(
        "stack",
        None,
        _stack_type,
        lambda *xs, axis=0: np.stack(xs, axis=axis),
        "numpy stack: join one or more operands of one shape along a new axis",
        attrs={"axis": AttrSpec("int", 0)},
        jvp=_stack_jvp,
        vjp=_stack_vjp,
    )
)


# ---- slice (numpy basic indexing) --------------------------------------------------------------
# `index` is numpy's basic-indexing syntax as text ("1:3,:,0,None,..."), parsed strictly (no
# eval) and once per distinct string. The cotangent goes back through the internal
# `slice_grad`, which writes g into zeros; both rules prefix ":" per batch axis.

_INT = re.compile(r"[+-]?[0-9]{1,18}")


def _index_int(text: str, item: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(f"bad index item {item!r}")
    return int(text)


@functools.lru_cache(maxsize=4096)
def parse_index(index: str) -> tuple:
    """The index as a tuple of int / slice / None, with exactly one Ellipsis (appended if
    absent, which numpy does implicitly) so that indexing always returns an array."""
    items: list = []
    for raw in index.split(",") if index.strip() else ():
        item = raw.strip()
        if item == "...":
            if any(i is Ellipsis for i in items):
                raise ValueError("an index can only have a single ellipsis ('...')")
            items.append(Ellipsis)
        elif item == "None":
            items.append(None)
        elif ":" in item:
            parts = [p.strip() for p in item.split(":")]
            if len(parts) > 3:
                raise ValueError(f"bad slice {item!r}")
            bounds = [_index_int(p, item) if p else None for p in parts]
            if len(bounds) == 3 and bounds[2] == 0:
                raise ValueError("slice step cannot be zero")
            items.append(slice(*bounds))
        else:
            items.append(_index_int(item, item))
    if not any(i is Ellipsis for i in items):
        items.append(Ellipsis)
    return tuple(items)


def _indexed_shape(shape: tuple[int, ...], index: str) -> tuple[int, ...]:
    try:
        key = parse_index(index)
        # A zero-stride view: indexing it costs nothing, whatever the shape.
        return np.broadcast_to(np.empty((), bool), shape)[key].shape
    except (ValueError, IndexError) as exc:
        raise RuleError("attrs.index", f"{index!r} for shape {list(shape)}: {exc}") from None


def _batched_index(g: Sym, index: str) -> str:
    return ",".join([":"] * len(g.em.batch) + ([index] if index.strip() else []))


def _slice_type(types: list[TensorType], index: str) -> TensorType:
    (x,) = types
    return TensorType(_indexed_shape(x.shape, index), x.dtype)


def _slice_grad_type(types: list[TensorType], index: str, shape: tuple[int, ...]) -> TensorType:
    (g,) = types
    if any(d < 0 for d in shape):
        raise RuleError("attrs.shape", f"negative dimension in {list(shape)}")
    expected = _indexed_shape(shape, index)
    if g.shape != expected:
        raise RuleError(
            "inputs[0]", f"has shape {list(g.shape)}; {index!r} of {list(shape)} is {expected}"
        )
    return TensorType(shape, g.dtype)


def _slice_grad(g: np.ndarray, *, index: str, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, g.dtype)
    out[parse_index(index)] = g
    return out


register(
    OpDef(
        "slice",
        1,
        _slice_type,
        lambda x, *, index: x[parse_index(index)],
        "numpy basic indexing x[index], with `index` as text: ints, start:stop:step, None, ...",
        attrs={"index": AttrSpec("string", required=True)},
        jvp=lambda ts, ans, x, index: op.slice(ts[0], index=_batched_index(ts[0], index)),
        vjp=lambda g, ans, x, index: (
            op.slice_grad(g, index=_batched_index(g, index), shape=g.em.batch + x.shape),
        ),
    )
)
register(
    OpDef(
        "slice_grad",
        1,
        _slice_grad_type,
        _slice_grad,
        "zeros of `shape` with the operand written at `index` (the transpose of slice)",
        attrs={
            "index": AttrSpec("string", required=True),
            "shape": AttrSpec("ints", required=True),
        },
        jvp=lambda ts, ans, g, index, shape: op.slice_grad(
            ts[0], index=_batched_index(ts[0], index), shape=ts[0].em.batch + shape
        ),
        vjp=lambda ct, ans, g, index, shape: (op.slice(ct, index=_batched_index(ct, index)),),
        internal=True,
    )
)
