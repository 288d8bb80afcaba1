"""Structure ops: they move elements around (reshape, transpose, slice, concatenate, ...)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

from .core import (
    DTYPES,
    AttrSpec,
    IndexRuleError,
    RuleError,
    Shape,
    TensorType,
    define,
    normalize_axes,
    same_dtype,
    show,
    size,
    unify,
)


def _reshape_type(types: Sequence[TensorType], shape: Shape) -> TensorType:
    (x,) = types
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in shape):
        raise RuleError("attrs.shape", f"invalid shape {list(shape)}")
    n = size(x.shape)
    if n < 0:
        return TensorType(shape, x.dtype)
    known = math.prod(d for d in shape if d != -1)
    if unknown:
        if known == 0 or n % known:
            raise RuleError("attrs.shape", f"cannot reshape {show(x.shape)} to {list(shape)}")
        shape = tuple(n // known if d == -1 else d for d in shape)
    if math.prod(shape) != n:
        raise RuleError("attrs.shape", f"cannot reshape {show(x.shape)} to {list(shape)}")
    return TensorType(shape, x.dtype)


def _broadcast_type(types: Sequence[TensorType], shape: Shape) -> TensorType:
    (x,) = types
    pairs = [] if x.shape is None else list(zip(x.shape[::-1], shape[::-1], strict=False))
    if (
        any(d < 0 for d in shape)
        or (x.shape is not None and len(x.shape) > len(shape))
        or not all(d in (1, t) or d < 0 for d, t in pairs)
    ):
        raise RuleError("attrs.shape", f"cannot broadcast {show(x.shape)} to {list(shape)}")
    return TensorType(tuple(shape), x.dtype)


def _transpose_type(types: Sequence[TensorType], axes: Shape | None = None) -> TensorType:
    (x,) = types
    if x.shape is None:
        return x
    if axes is None:
        return TensorType(x.shape[::-1], x.dtype)
    ndim = len(x.shape)
    if any(not -ndim <= a < ndim for a in axes) or sorted(a % ndim for a in axes) != list(
        range(ndim)
    ):
        raise RuleError("attrs.axes", f"{list(axes)} is not a permutation of {ndim} axes")
    return TensorType(tuple(x.shape[a] for a in axes), x.dtype)


define(
    "reshape",
    "x",
    _reshape_type,
    "numpy reshape; one dimension may be -1",
    attrs={"shape": AttrSpec("ints", required=True, doc="the new shape")},
)
define(
    "broadcast_to",
    "x",
    _broadcast_type,
    "numpy broadcast_to",
    attrs={"shape": AttrSpec("ints", required=True, doc="the target shape")},
)
define(
    "transpose",
    "x",
    _transpose_type,
    "numpy transpose; no axes reverses them",
    attrs={"axes": AttrSpec("ints", doc="the permutation (reversed if absent)")},
)


# ---- expand_dims, squeeze ----------------------------------------------------------------------


def _expand_dims_type(types: Sequence[TensorType], axis: Shape) -> TensorType:
    (x,) = types
    if x.shape is None:
        return x
    ndim = len(x.shape) + len(axis)
    new = {a + ndim for a in normalize_axes(axis, ndim)}
    rest = iter(x.shape)
    return TensorType(tuple(1 if i in new else next(rest) for i in range(ndim)), x.dtype)


def squeezed_axes(shape: Shape, axis: Shape | None) -> tuple[int, ...]:
    """The (negative) axes that squeeze drops."""
    if axis is None:
        return tuple(i - len(shape) for i, d in enumerate(shape) if d == 1)
    axes = normalize_axes(axis, len(shape))
    for a in axes:
        if shape[a] not in (1, -1):
            raise RuleError("attrs.axis", f"cannot squeeze axis {a} of size {shape[a]}")
    return axes


def _squeeze_type(types: Sequence[TensorType], axis: Shape | None = None) -> TensorType:
    (x,) = types
    if x.shape is None or (axis is None and -1 in x.shape):  # an unknown size may be 1
        return TensorType(None, x.dtype)
    drop = {a + len(x.shape) for a in squeezed_axes(x.shape, axis)}
    return TensorType(tuple(d for i, d in enumerate(x.shape) if i not in drop), x.dtype)


define(
    "expand_dims",
    "x",
    _expand_dims_type,
    "numpy expand_dims: new unit axes at `axis` (positions in the result)",
    attrs={"axis": AttrSpec("ints", required=True, doc="where the new axes go")},
)
define(
    "squeeze",
    "x",
    _squeeze_type,
    "numpy squeeze: drop the unit axes `axis` (all of them when absent)",
    attrs={"axis": AttrSpec("ints", doc="the unit axes to drop (all if absent)")},
)


# ---- concatenate, stack ------------------------------------------------------------------------


def _concatenate_type(types: Sequence[TensorType], axis: int = 0) -> TensorType:
    dtype = same_dtype(types, DTYPES, "concatenate")
    first = types[0].shape
    if first is not None and not first:
        raise RuleError("inputs[0]", "cannot concatenate 0-d values (use stack)")
    if any(t.shape is None for t in types) or first is None:
        return TensorType(None, dtype)
    (ax,) = normalize_axes((axis,), len(first))
    rest = first[:ax] + first[ax + 1 :] if ax != -1 else first[:-1]
    for i, t in enumerate(types[1:], 1):
        assert t.shape is not None
        other = t.shape[:ax] + t.shape[ax + 1 :] if ax != -1 else t.shape[:-1]
        merged = unify(rest, other) if len(t.shape) == len(first) else None
        if merged is None:
            raise RuleError(
                f"inputs[{i}]",
                f"shape {list(t.shape)} does not match {list(first)} except on axis {axis}",
            )
        rest = merged
    sizes = [t.shape[ax] for t in types if t.shape is not None]
    total = -1 if any(d < 0 for d in sizes) else sum(sizes)
    at = len(first) + ax
    return TensorType((*rest[:at], total, *rest[at:]), dtype)


def _stack_type(types: Sequence[TensorType], axis: int = 0) -> TensorType:
    dtype = same_dtype(types, DTYPES, "stack")
    if any(t.shape is None for t in types):
        return TensorType(None, dtype)
    base = types[0].shape
    assert base is not None
    for i, t in enumerate(types[1:], 1):
        assert t.shape is not None
        merged = unify(base, t.shape)
        if merged is None:
            raise RuleError(
                f"inputs[{i}]", f"shape {list(t.shape)} differs from {list(types[0].shape)}"
            )
        base = merged
    (ax,) = normalize_axes((axis,), len(base) + 1)
    at = len(base) + 1 + ax
    return TensorType((*base[:at], len(types), *base[at:]), dtype)


define(
    "concatenate",
    "xs ...",
    _concatenate_type,
    "numpy concatenate: join one or more operands along an existing axis",
    attrs={"axis": AttrSpec("int", 0, doc="the axis to join along")},
)
define(
    "stack",
    "xs ...",
    _stack_type,
    "numpy stack: join one or more operands of one shape along a new axis",
    attrs={"axis": AttrSpec("int", 0, doc="where the new axis goes")},
)


# ---- slice (numpy basic indexing) --------------------------------------------------------------
# `index` is numpy's basic-indexing syntax as text ("1:3,:,0,None,..."), parsed strictly (no
# eval) and once per distinct string.

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


def indexed_shape(shape: Shape, index: str) -> Shape:
    """The shape of `x[index]` for `x` of `shape` (an unknown size stays unknown)."""
    try:
        key = parse_index(index)
    except ValueError as exc:
        raise RuleError("attrs.index", f"{index!r}: {exc}") from None
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if consumed > len(shape):
        raise IndexRuleError("attrs.index", f"{index!r}: too many indices for shape {list(shape)}")
    out: list[int] = []
    dim = 0
    for k in key:
        if k is None:
            out.append(1)
        elif k is Ellipsis:
            n = len(shape) - consumed
            out.extend(shape[dim : dim + n])
            dim += n
        elif isinstance(k, slice):
            d = shape[dim]
            out.append(-1 if d < 0 else len(range(*k.indices(d))))
            dim += 1
        else:
            d = shape[dim]
            if d >= 0 and not -d <= k < d:
                raise IndexRuleError(
                    "attrs.index", f"{index!r}: index {k} is out of bounds for axis {dim} ({d})"
                )
            dim += 1
    return tuple(out)


def _slice_type(types: Sequence[TensorType], index: str) -> TensorType:
    (x,) = types
    return TensorType(None if x.shape is None else indexed_shape(x.shape, index), x.dtype)


def _slice_grad_type(types: Sequence[TensorType], index: str, shape: Shape) -> TensorType:
    (g,) = types
    if any(d < 0 for d in shape):
        raise RuleError("attrs.shape", f"negative dimension in {list(shape)}")
    expected = indexed_shape(shape, index)
    if g.shape is not None and unify(g.shape, expected) is None:
        raise RuleError(
            "inputs[0]", f"has shape {list(g.shape)}; {index!r} of {list(shape)} is {expected}"
        )
    return TensorType(shape, g.dtype)


define(
    "slice",
    "x",
    _slice_type,
    "numpy basic indexing x[index], with `index` as text: ints, start:stop:step, None, ...",
    attrs={"index": AttrSpec("string", required=True, doc='e.g. "1:3,:,0,None,..."')},
    sdk=False,  # Var.__getitem__
)
define(
    "slice_grad",
    "x",
    _slice_grad_type,
    "zeros of `shape` with the operand written at `index` (the transpose of slice)",
    attrs={
        "index": AttrSpec("string", required=True),
        "shape": AttrSpec("ints", required=True),
    },
    internal=True,
)


# ---- pad, flip, tile, repeat ---------------------------------------------------------------


def _pad_type(
    types: Sequence[TensorType],
    pads: Shape,
    mode: str = "constant",
    constant_value: float = 0.0,
) -> TensorType:
    (x,) = types
    if any(p < 0 for p in pads):
        raise RuleError("attrs.pads", f"{list(pads)} has a negative pad (slice to crop)")
    if x.shape is None:
        return x
    n = len(x.shape)
    if len(pads) != 2 * n:
        raise RuleError(
            "attrs.pads", f"needs {2 * n} values (the begins, then the ends), got {len(pads)}"
        )
    shape = []
    for axis, (d, b, e) in enumerate(zip(x.shape, pads[:n], pads[n:], strict=True)):
        if d >= 0 and (b or e):
            if mode == "reflect" and max(b, e) >= d:
                raise RuleError(
                    "attrs.pads", f"reflect pads of axis {axis} must be below its size {d}"
                )
            if mode in ("edge", "wrap") and d == 0:
                raise RuleError("attrs.pads", f"cannot {mode}-pad the empty axis {axis}")
        shape.append(-1 if d < 0 else d + b + e)
    return TensorType(tuple(shape), x.dtype)


def _pad_grad_type(types: Sequence[TensorType], pads: Shape, mode: str = "constant") -> TensorType:
    (g,) = types
    if g.shape is None:
        return g
    n = len(g.shape)
    if len(pads) != 2 * n or any(p < 0 for p in pads):
        raise RuleError("attrs.pads", f"{list(pads)} are not pads for rank {n}")
    shape = []
    for d, b, e in zip(g.shape, pads[:n], pads[n:], strict=True):
        if d >= 0 and d - b - e < (1 if mode != "constant" and (b or e) else 0):
            raise RuleError("attrs.pads", f"{list(pads)} are too large for {list(g.shape)}")
        shape.append(-1 if d < 0 else d - b - e)
    return TensorType(tuple(shape), g.dtype)


PAD_MODE = AttrSpec(
    "string",
    "constant",
    choices=("constant", "reflect", "edge", "wrap"),
    doc="how to fill the pads",
)
define(
    "pad",
    "x",
    _pad_type,
    "numpy pad with ONNX's pads (all begins, then all ends); mode constant, reflect (without "
    "the edge), edge (repeating it) or wrap (the other end's elements, periodically)",
    attrs={
        "pads": AttrSpec(
            "ints",
            required=True,
            doc="begin_0, begin_1, ..., then end_0, end_1, ... (ONNX's order)",
        ),
        "mode": PAD_MODE,
        "constant_value": AttrSpec("float", 0.0, doc="the fill of mode constant"),
    },
)
define(
    "pad_grad",
    "x",
    _pad_grad_type,
    "the transpose of pad: the pads cut off, and in modes reflect, edge and wrap added onto the "
    "elements they copy",
    attrs={"pads": AttrSpec("ints", required=True), "mode": PAD_MODE},
    internal=True,
)


def _flip_type(types: Sequence[TensorType], axis: Shape | None = None) -> TensorType:
    (x,) = types
    if x.shape is not None and axis is not None:
        normalize_axes(axis, len(x.shape))
    return x


def tiled_shape(shape: Shape, reps: Shape) -> tuple[Shape, Shape]:
    """numpy tile's view of its operands: `shape` and `reps`, both padded with leading 1s to one
    length."""
    n = max(len(shape), len(reps))
    return (1,) * (n - len(shape)) + shape, (1,) * (n - len(reps)) + reps


def _tile_type(types: Sequence[TensorType], reps: Shape) -> TensorType:
    (x,) = types
    if any(r < 0 for r in reps):
        raise RuleError("attrs.reps", f"{list(reps)} has a negative count")
    if x.shape is None:
        return x
    shape, full = tiled_shape(x.shape, reps)
    return TensorType(
        tuple(-1 if d < 0 else d * r for d, r in zip(shape, full, strict=True)), x.dtype
    )


def _repeat_type(types: Sequence[TensorType], repeats: int, axis: int) -> TensorType:
    (x,) = types
    if repeats < 0:
        raise RuleError("attrs.repeats", f"must be >= 0, got {repeats}")
    if x.shape is None:
        return x
    (ax,) = normalize_axes((axis,), len(x.shape))
    shape = list(x.shape)
    shape[ax] = -1 if shape[ax] < 0 else shape[ax] * repeats
    return TensorType(tuple(shape), x.dtype)


define(
    "flip",
    "x",
    _flip_type,
    "numpy flip: reverse the order along `axis` (all axes when absent)",
    attrs={"axis": AttrSpec("ints", doc="the axes to reverse (all if absent)")},
)
define(
    "tile",
    "x",
    _tile_type,
    "numpy tile: `x` repeated `reps` times along each axis (shorter of the two padded with "
    "leading 1s)",
    attrs={"reps": AttrSpec("ints", required=True, doc="the repetitions per axis")},
)
define(
    "repeat",
    "x",
    _repeat_type,
    "numpy repeat with one count: each element repeated `repeats` times along `axis`",
    attrs={
        "repeats": AttrSpec("int", required=True, doc="how often each element repeats"),
        "axis": AttrSpec("int", required=True, doc="the axis to repeat along"),
    },
)


# ---- astype ------------------------------------------------------------------------------------


define(
    "astype",
    "x",
    lambda types, dtype: TensorType(types[0].shape, dtype),
    "numpy astype: a cast to `dtype`; derivatives flow through float-to-float casts only",
    attrs={"dtype": AttrSpec("string", required=True, choices=DTYPES, doc="the new dtype")},
)
