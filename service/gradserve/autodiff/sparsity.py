"""Structural sparsity of Jacobians, detected from the graph by index-set propagation.

Every value v carries its pattern: a boolean CSR matrix of shape (v.size, wrt.size) whose row i
holds the entries of `wrt` that v.flat[i] depends on (the way SparseConnectivityTracer.jl and
CasADi trace dependencies). `wrt` starts as the identity; each op maps its operands' patterns
to its result's through a rule in `RULES`, keyed by op name (like JAX's per-transformation rule
tables), or through a generic derivation:
- element-wise ops (those with partials): each operand's rows broadcast to the result's shape,
  united over the operands that have a partial;
- pure index ops (`INDEX_OPS`): their own forward run on an array of element ids says which
  operand element each result element is;
- scatter-adds (`pad_grad`, `conv_patches_grad`, `max_pool_grad`; rules in `RULES`): their
  transpose, an index op, run on the result's ids says where each operand element is added;
- non-differentiable ops: no dependence;
- any other op: the conservative dense fallback (every result element depends on every entry
  any operand depends on), so a missing rule costs sparsity, never correctness.
Nothing of size of.size x wrt.size is ever formed; memory follows the non-zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from gradserve_client.opset import FLOAT_DTYPES
from gradserve_client.opset.conv import pool_geometry, window
from gradserve_client.opset.core import normalize_axes
from gradserve_client.opset.einsum import parse_subscripts
from gradserve_client.opset.reductions import axes_of

from gradserve.autodiff.cache import cached
from gradserve.autodiff.ir import Cancel, Cancelled, Program, TensorType
from gradserve.autodiff.ops.einsum import diagonal
from gradserve.autodiff.registry import OPS
from gradserve.autodiff.transforms import check_targets, needed_by

Pattern = sp.csr_array
# rule(patterns of the operands (None: depends on nothing), operand types, result type, attrs)
Rule = Callable[
    [list[Pattern | None], list[TensorType], TensorType, dict[str, Any]], Pattern | None
]

# Ops whose result elements are operand elements, moved, copied or zero: running the forward on
# element ids gives the map. Ids start at 1 so that a written zero (slice_grad) means "none".
INDEX_OPS = frozenset(
    {
        "reshape",
        "broadcast_to",
        "transpose",
        "expand_dims",
        "squeeze",
        "concatenate",
        "stack",
        "slice",
        "slice_grad",
        "pad",
        "flip",
        "tile",
        "repeat",
        "conv_patches",
    }
)
# The fill attributes of index ops: run on ids with a zero fill, a filled element is "none".
_FILLS = ("pad_value", "constant_value")


def _empty(rows: int, cols: int) -> Pattern:
    return sp.csr_array((rows, cols), dtype=bool)


def _union(a: Pattern | None, b: Pattern | None) -> Pattern | None:
    if a is None or b is None:
        return a if b is None else b
    if a is b or (
        a.nnz == b.nnz
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
    ):
        return a  # the common case (x * y on one path), at a fraction of a sparse addition
    return a + b  # boolean CSR addition is a logical or


def _gather(p: Pattern, ids: np.ndarray) -> Pattern:
    """The rows `ids` (a flat index array) of `p`."""
    return p[np.ascontiguousarray(ids, dtype=np.intp).ravel()]


def _spread(
    p: Pattern, shape: tuple[int, ...], axes: Sequence[int], view: tuple[int, ...], out: tuple
) -> Pattern:
    """Unite the rows of `p` (a value of `shape`) over `axes`, then broadcast the reduced value,
    seen with shape `view`, to `out`: the pattern of reduce-then-broadcast ops."""
    keep = _kept(shape, axes)
    groups = math.prod(keep)
    if groups != math.prod(shape):
        ids = np.broadcast_to(np.arange(groups).reshape(keep), shape).ravel()
        select = sp.csr_array(
            (np.ones(ids.size, bool), (ids, np.arange(ids.size))), shape=(groups, ids.size)
        )
        p = select @ p
    if view == out:
        return p
    return _gather(p, np.broadcast_to(np.arange(groups).reshape(view), out))


def _all_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim))


def _kept(shape: tuple[int, ...], axes: Sequence[int]) -> tuple[int, ...]:
    """`shape` with the `axes` as size 1 (the keepdims shape)."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _reduce(p: Pattern, shape: tuple[int, ...], axes: Sequence[int]) -> Pattern:
    """Rows united over `axes`: one row per element of the reduced value."""
    keep = _kept(shape, axes)
    return _spread(p, shape, axes, keep, keep)


def _axes(attrs: dict[str, Any], ndim: int) -> tuple[int, ...]:
    """The op's `axis` (one or several; absent: all) as non-negative axes."""
    axis = attrs.get("axis")
    return tuple(a + ndim for a in axes_of((axis,) if isinstance(axis, int) else axis, ndim))


def _reduction(ps, types, out, attrs):
    (x,) = types
    return _reduce(ps[0], x.shape, _axes(attrs, x.ndim))


def _along_axis(ps, types, out, attrs):
    """softmax-like: each element depends on its whole slice along `axis`."""
    (x,) = types[:1]
    axes = _axes(attrs, x.ndim)
    return _spread(ps[0], x.shape, axes, _kept(x.shape, axes), x.shape)


def _sum_to(ps, types, out, attrs):
    (x,) = types
    nb = attrs.get("batch_ndim", 0)
    shape = attrs["shape"]
    lead = x.ndim - nb - len(shape)
    axes = tuple(range(nb, nb + lead)) + tuple(
        nb + lead + i for i, d in enumerate(shape) if d == 1 and x.shape[nb + lead + i] != 1
    )
    return _reduce(ps[0], x.shape, axes)


def _elementwise_union(ps, types, out: tuple[int, ...], use: Sequence[bool]) -> Pattern | None:
    result = None
    for p, t, used in zip(ps, types, use, strict=True):
        if p is not None and used:
            if t.shape != out:
                p = _gather(p, np.broadcast_to(np.arange(t.size).reshape(t.shape), out))
            result = _union(result, p)
    return result


def _matrix(shape: tuple[int, ...], left: bool) -> tuple[int, ...]:
    if len(shape) >= 2:
        return shape
    return (1, *shape) if left else (*shape, 1)


def _matmul(ps, types, out, attrs):
    a, b = (_matrix(t.shape, i == 0) for i, t in enumerate(types))
    stack = np.broadcast_shapes(a[:-2], b[:-2])
    full = (*stack, a[-2], b[-1])
    result = None
    for p, shape, axis in ((ps[0], a, len(a) - 1), (ps[1], b, len(b) - 2)):
        if p is not None:
            keep = _kept(shape, (axis,))
            view = (1,) * (len(full) - len(keep)) + keep
            result = _union(result, _spread(p, shape, (axis,), view, full))
    return result  # full has out's size and C order


def _dot(ps, types, out, attrs):
    a, b = types
    if a.ndim == 0 or b.ndim == 0:
        return _elementwise_union(ps, types, out.shape, (True, True))
    result = None
    if ps[0] is not None:  # out[I, J] sums a[I, :]
        view = a.shape[:-1] + (1,) * (out.ndim - a.ndim + 1)
        result = _spread(ps[0], a.shape, (a.ndim - 1,), view, out.shape)
    if ps[1] is not None:  # ... and b[J[:-1], :, J[-1]]
        axis = max(b.ndim - 2, 0)
        view = (1,) * (a.ndim - 1) + tuple(d for i, d in enumerate(b.shape) if i != axis)
        result = _union(result, _spread(ps[1], b.shape, (axis,), view, out.shape))
    return result


def _outer(ps, types, out, attrs):
    a, b = types
    views = [TensorType((a.size, 1), a.dtype), TensorType((1, b.size), b.dtype)]
    return _elementwise_union(ps, views, out.shape, (True, True))


def _per_example_loss(ps, types, out, attrs):
    """cross_entropy: each example depends on its row of logits; mean/sum on all of them."""
    x = types[0]
    axes = (x.ndim - 1,) if attrs.get("reduction") == "none" else _all_axes(x.ndim)
    return _reduce(ps[0], x.shape, axes)


def _mse(ps, types, out, attrs):
    shape = np.broadcast_shapes(*(t.shape for t in types))
    p = _elementwise_union(ps, types, shape, (True, True))
    if attrs.get("reduction") == "none" or p is None:
        return p
    return _reduce(p, shape, _all_axes(len(shape)))


def _scatter(p: Pattern, targets: np.ndarray, source: tuple[int, ...], size: int) -> Pattern:
    """The pattern of a scatter-add into `size` elements: `targets` (source's shape, maybe with
    trailing axes more) holds where each element of a value of shape `source` is added, as
    1-based ids (0: nowhere). A result element unites the rows of its sources."""
    sources = np.broadcast_to(
        np.arange(p.shape[0]).reshape(source + (1,) * (targets.ndim - len(source))), targets.shape
    ).ravel()
    targets = targets.ravel()
    hit = targets > 0
    spread = sp.csr_array(
        (np.ones(hit.sum(), bool), (targets[hit] - 1, sources[hit])), shape=(size, p.shape[0])
    )
    return spread @ p


def _ids(shape: tuple[int, ...]) -> np.ndarray:
    """1-based element ids of a value of `shape`: 0 is free for "none"."""
    return np.arange(1, math.prod(shape) + 1).reshape(shape)


def _transposed_index(
    op: str, attrs_of: Callable[[dict, list[TensorType]], dict], operand: int = 0
) -> Rule:
    """The rule of a scatter-add (of its `operand`) whose transpose is the index op `op`, with
    the attributes `attrs_of` gives: that op, run on the ids of the result, says where each
    element goes."""

    def rule(ps, types, out, attrs):
        if ps[operand] is None:  # max_pool_grad's selection operands carry no derivative
            return None
        targets = np.asarray(OPS[op].bind(attrs_of(attrs, types))(_ids(out.shape)))
        return _scatter(ps[operand], targets, types[operand].shape, out.size)

    return rule


def _windows(p: Pattern, shape: tuple[int, ...], attrs: dict) -> Pattern:
    """The pattern of conv_patches (..., *S', *K) of a value of `shape` with pattern p."""
    return _index_op("conv_patches", [p], [TensorType(shape, "float64")], attrs, p.shape[1])


def _pooling(operand: int) -> Rule:
    """max_pool, avg_pool (and max_pool_pick in its tangent): each window element counts (the
    max may be any of them), padding never."""

    def rule(ps, types, out, attrs):
        if ps[operand] is None:  # max_pool_pick's selection operands carry no derivative
            return None
        x, t = types[0], types[operand]
        geom = pool_geometry(x.shape, attrs)
        n = len(geom.kernel)
        patches = _windows(ps[operand], t.shape, geom.attrs)
        full = t.shape[: t.ndim - n] + geom.out + geom.kernel
        return _reduce(patches, full, tuple(range(len(full) - n, len(full))))

    return rule


def _conv(ps, types, out, attrs):
    x, w = types[:2]
    groups = attrs.get("groups", 1)
    geom = window(
        x.shape[2:],
        w.shape[2:],
        attrs.get("strides"),
        attrs.get("pads"),
        attrs.get("dilations"),
        attrs.get("auto_pad", "NOTSET"),
    )
    n, (batch, channels), (kernels, per_group) = len(geom.kernel), x.shape[:2], w.shape[:2]
    spatial, kernel = math.prod(geom.out), math.prod(geom.kernel)
    result = None
    if ps[0] is not None:  # out[n, o] unites x's windows over the channels of o's group
        grouped = (batch, groups, channels // groups, *geom.out, *geom.kernel)
        windows = _windows(ps[0], x.shape, geom.attrs)
        summed = (2, *range(3 + n, 3 + 2 * n))
        view = (batch, groups, 1, *geom.out)
        full = (batch, groups, kernels // groups, *geom.out)
        result = _spread(windows, grouped, summed, view, full)
    if ps[1] is not None:  # ... and w[o, c, k] where window offset k lies inside the input
        inside = np.asarray(OPS["conv_patches"].bind(geom.attrs)(np.ones((1, *x.shape[2:]))))
        where, offset = np.nonzero(inside.reshape(spatial, kernel))
        o, c = np.arange(kernels)[:, None, None], np.arange(per_group)[:, None]
        rows = (np.arange(batch)[:, None, None, None] * kernels + o) * spatial + where
        cols = (o * per_group + c) * kernel + offset
        rows, cols = np.broadcast_arrays(rows, cols)
        select = sp.csr_array(
            (np.ones(rows.size, bool), (rows.ravel(), cols.ravel())), shape=(out.size, w.size)
        )
        result = _union(result, select @ ps[1])
    if len(ps) > 2 and ps[2] is not None:  # ... and b[o]
        ids = np.broadcast_to(np.arange(kernels).reshape(1, kernels, *(1,) * n), out.shape)
        result = _union(result, _gather(ps[2], ids))
    return result


def _conv_grads_views(g: TensorType, attrs: dict, per_group: int, kernels: tuple[int, ...]):
    """What the rules of conv_input_grad and conv_kernel_grad see: the letters of the spatial
    and the kernel axes, the cotangent grouped (N, G, O/G, *S'), the grouped windows (N, G,
    C/G, *S', *K) and the window attrs. Both are einsums of those, as conv's rule is."""
    n, groups = len(kernels), attrs["groups"]
    (batch, channels), windows = g.shape[:2], g.shape[2:]
    grouped = TensorType((batch, groups, channels // groups, *windows), g.dtype)
    cols = TensorType((batch, groups, per_group, *windows, *kernels), g.dtype)
    geometry = {k: attrs[k] for k in ("kernel_shape", "strides", "pads", "dilations")}
    return "pqrstuvw"[:n], "ijklmxyz"[:n], grouped, cols, geometry


def _conv_input_grad(ps, types, out, attrs):
    """Each window's share, an einsum of g and w, added back where the window was taken from."""
    g, w = types
    s, k, grouped, cols, geometry = _conv_grads_views(g, attrs, w.shape[1], w.shape[2:])
    kernel = TensorType((attrs["groups"], g.shape[1] // attrs["groups"], *w.shape[1:]), w.dtype)
    shares = _einsum(ps, [grouped, kernel], cols, {"subscripts": f"ngo{s},goc{k}->ngc{s}{k}"})
    if shares is None:
        return None
    flat = TensorType((cols.shape[0], out.shape[1], *cols.shape[3:]), cols.dtype)
    return RULES["conv_patches_grad"]([shares], [flat], out, {**geometry, "shape": attrs["shape"]})


def _conv_kernel_grad(ps, types, out, attrs):
    """The einsum of g with the windows of x over the samples and the windows."""
    x, g = types
    per_group = x.shape[1] // attrs["groups"]
    s, k, grouped, cols, geometry = _conv_grads_views(g, attrs, per_group, out.shape[2:])
    windows = None if ps[0] is None else _windows(ps[0], x.shape, geometry)
    kernel = TensorType((attrs["groups"], g.shape[1] // attrs["groups"], *out.shape[1:]), g.dtype)
    return _einsum(
        [ps[1], windows], [grouped, cols], kernel, {"subscripts": f"ngo{s},ngc{s}{k}->goc{k}"}
    )


def _einsum(ps, types, out, attrs):
    """out[I] unites, over each operand, its elements that agree with I on the output's letters
    (any value of the letters it sums)."""
    terms, letters = parse_subscripts(attrs["subscripts"], tuple(t.ndim for t in types))
    result = None
    for p, t, term in zip(ps, types, terms, strict=True):
        if p is None:
            continue
        on_diagonal, term = diagonal(np.arange(t.size).reshape(t.shape), term)  # "ii": x[i, i]
        p, shape = _gather(p, on_diagonal), on_diagonal.shape
        summed = tuple(i for i, c in enumerate(term) if c not in letters)
        reduced = _reduce(p, shape, summed)
        kept = [c for c in term if c in letters]
        ids = np.arange(reduced.shape[0]).reshape([shape[term.index(c)] for c in kept])
        ids = np.transpose(ids, sorted(range(len(kept)), key=lambda i: letters.index(kept[i])))
        view = [shape[term.index(c)] if c in term else 1 for c in letters]
        result = _union(result, _gather(reduced, np.broadcast_to(ids.reshape(view), out.shape)))
    return result


def _layer_norm(ps, types, out, attrs):
    """Dense within each normalised row (axes axis..-1), and scale, bias element-wise."""
    x = types[0]
    (first,) = normalize_axes((attrs.get("axis", -1),), x.ndim)
    axes = tuple(range(x.ndim + first, x.ndim))
    result = None if ps[0] is None else _spread(ps[0], x.shape, axes, _kept(x.shape, axes), x.shape)
    params = _elementwise_union(ps[1:], types[1:], out.shape, (True,) * (len(ps) - 1))
    return _union(result, params)


def _batch_norm(ps, types, out, attrs):
    """Element-wise in x; scale, bias, mean and var per channel (axis 1)."""
    x = types[0]
    channel = TensorType((x.shape[1],) + (1,) * (x.ndim - 2), x.dtype)
    views = [x, *(channel for _ in types[1:])]
    return _elementwise_union(ps, views, out.shape, (True,) * len(ps))


def _cumsum(ps, types, out, attrs):
    """Triangular along the axis: out[i] sums x[j] for j <= i (j < i exclusive; reversed: >=)."""
    (x,) = types
    axis = _axes(attrs, x.ndim)[0]
    n = x.shape[axis]
    offset = -1 if attrs.get("exclusive", 0) else 0
    band = np.tril(np.ones((n, n), bool), offset)
    if attrs.get("reverse", 0):
        band = band.T
    pre, post = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
    spread = sp.kron(sp.kron(sp.eye_array(pre), sp.csr_array(band)), sp.eye_array(post))
    return sp.csr_array(spread, dtype=bool) @ ps[0]


def _take(ps, types, out, attrs):
    """The indices are data: each result element may be any table element along the axis."""
    a, indices = types
    (axis,) = normalize_axes((attrs.get("axis", 0),), a.ndim)
    axis += a.ndim
    view = (*a.shape[:axis], *(1,) * indices.ndim, *a.shape[axis + 1 :])
    return _spread(ps[0], a.shape, (axis,), view, out.shape)


def _take_grad(ps, types, out, attrs):
    """Each table element may take any cotangent element along the indices' axes."""
    g, indices = types
    (axis,) = normalize_axes((attrs["axis"],), out.ndim)
    at = g.ndim + axis + 1 - indices.ndim
    summed = tuple(range(at, at + indices.ndim))
    view = (*g.shape[:at], 1, *g.shape[at + indices.ndim :])
    return _spread(ps[0], g.shape, summed, view, out.shape)


def _take_along_axis(ps, types, out, attrs):
    a = types[0]
    (axis,) = normalize_axes((attrs["axis"],), a.ndim)
    axes = (a.ndim + axis,)
    return _spread(ps[0], a.shape, axes, _kept(a.shape, axes), out.shape)


def _take_along_axis_grad(ps, types, out, attrs):
    """Along the axis any cotangent element may land anywhere; axes of size 1 in the result
    (broadcast in the forward) gather the whole axis."""
    g = types[0]
    (axis,) = normalize_axes((attrs["axis"],), g.ndim)
    axis += g.ndim
    axes = tuple(i for i, n in enumerate(out.shape) if i == axis or (n == 1 and g.shape[i] != 1))
    return _spread(ps[0], g.shape, axes, _kept(g.shape, axes), out.shape)


def _astype(ps, types, out, attrs):
    """Identity between float types; no derivative into or out of other types."""
    return ps[0] if types[0].dtype in FLOAT_DTYPES and out.dtype in FLOAT_DTYPES else None


def _pool_window(attrs: dict, types: list[TensorType]) -> dict:
    return pool_geometry(types[0].shape, attrs).attrs


RULES: dict[str, Rule] = {
    **dict.fromkeys(("sum", "mean", "max", "min", "prod", "var", "std", "logsumexp"), _reduction),
    **dict.fromkeys(("softmax", "log_softmax", "prod_others"), _along_axis),
    "cross_entropy_grad": lambda ps, types, out, attrs: _along_axis(ps, types, out, {"axis": -1}),
    "cross_entropy": _per_example_loss,
    "mse": _mse,
    "sum_to": _sum_to,
    "matmul": _matmul,
    "dot": _dot,
    "outer": _outer,
    "einsum": _einsum,
    "conv": _conv,
    "conv_input_grad": _conv_input_grad,
    "conv_kernel_grad": _conv_kernel_grad,
    **dict.fromkeys(("max_pool", "avg_pool"), _pooling(0)),
    "max_pool_pick": _pooling(2),
    "max_pool_grad": _transposed_index("conv_patches", _pool_window, operand=2),
    "conv_patches_grad": _transposed_index(
        "conv_patches", lambda attrs, types: {k: v for k, v in attrs.items() if k != "shape"}
    ),
    "pad_grad": _transposed_index("pad", lambda attrs, types: attrs),
    "take": _take,
    "take_grad": _take_grad,
    "take_along_axis": _take_along_axis,
    "take_along_axis_grad": _take_along_axis_grad,
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "cumsum": _cumsum,
    "astype": _astype,
}


def _index_op(op: str, ps, types, attrs, cols: int) -> Pattern:
    attrs = {k: 0 if k in _FILLS else v for k, v in attrs.items()}
    ids, offset = [], 1
    for t in types:
        ids.append(np.arange(offset, offset + t.size).reshape(t.shape))
        offset += t.size
    moved = np.asarray(OPS[op].bind(attrs)(*ids))
    blocks = [p if p is not None else _empty(t.size, cols) for p, t in zip(ps, types, strict=True)]
    if moved.min(initial=1) > 0:  # every result element is an operand element
        rows = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
        return _gather(rows, moved - 1)
    return _gather(sp.vstack([_empty(1, cols), *blocks], format="csr"), moved)


def _dense_fallback(ps, out: TensorType, cols: int) -> Pattern:
    """Every result element depends on everything any operand depends on."""
    union = None
    for p in ps:
        if p is not None:
            union = _union(union, _reduce(p, (p.shape[0],), (0,)))
    assert union is not None
    return _gather(union, np.zeros(out.size, np.intp))


def node_pattern(
    op: str, ps: list[Pattern | None], types: list[TensorType], out: TensorType, attrs, cols: int
) -> Pattern | None:
    """The pattern of one node's result from its operands' patterns (None: no dependence)."""
    opdef = OPS[op]
    if not opdef.differentiable or all(p is None for p in ps):
        return None
    if op in RULES:
        p = RULES[op](ps, types, out, dict(attrs))
    elif opdef.partials is not None:
        use = [partial is not None for partial in opdef.partials]
        p = _elementwise_union(ps, types, out.shape, use)
    elif op in INDEX_OPS:
        p = _index_op(op, ps, types, dict(attrs), cols)
    else:
        p = _dense_fallback(ps, out, cols)
    if p is not None and p.shape[0] != out.size:
        raise AssertionError(f"pattern rule bug for {op}: {p.shape[0]} rows, {out.size} elements")
    return p


# The most pattern entries (index pairs, ~5 bytes each) detection holds at once. A dense block
# reaches it fast (a 90,000 x 300 pattern is 27M entries per value); then colouring could not
# save passes anyway, and detection stops rather than take gigabytes.
MAX_LIVE_ENTRIES = 1 << 26


class PatternTooLarge(MemoryError):
    """Detection would hold more than MAX_LIVE_ENTRIES pattern entries: the block is dense
    enough to compute without colouring (a MemoryError: the server's RESOURCE_EXHAUSTED)."""


@cached
def structural_pattern(program: Program, of: str, wrt: str, *, cancel: Cancel = None) -> Pattern:
    """`jacobian_sparsity`, cached in the program cache (keyed by the program, so by its graph
    and input shapes, `of` and `wrt`) and shared: callers must not modify it. Raises
    `PatternTooLarge` past MAX_LIVE_ENTRIES live entries, and `Cancelled` as soon as `cancel()`
    is true (checked between nodes, as the executor checks between steps)."""
    check_targets(program, (of,), (wrt,))
    types = program.types
    n = types[wrt].size
    patterns: dict[str, Pattern] = {wrt: sp.csr_array(sp.eye_array(n, dtype=bool, format="csr"))}
    needed = needed_by(program.nodes, (of,))
    nodes = [node for node in program.nodes if node.name in needed]
    last_use = {s: i for i, node in enumerate(nodes) for s in node.inputs}
    for i, node in enumerate(nodes):
        if cancel is not None and cancel():
            raise Cancelled
        ps = [patterns.get(s) for s in node.inputs]
        p = node_pattern(
            node.op, ps, [types[s] for s in node.inputs], types[node.name], node.attrs, n
        )
        if p is not None:
            patterns[node.name] = p
        for s in node.inputs:
            if last_use[s] == i and s != of:
                patterns.pop(s, None)  # memory follows the live patterns
        live = sum(q.nnz for q in patterns.values())
        if live > MAX_LIVE_ENTRIES:
            raise PatternTooLarge(
                f"the sparsity pattern of d {of} / d {wrt} holds {live} entries at node "
                f"{node.name!r}, more than detection keeps ({MAX_LIVE_ENTRIES}): it is dense"
            )
    result = patterns.get(of)
    if result is None:
        return read_only(_empty(types[of].size, n))
    result = sp.csr_array(result)
    result.sum_duplicates()  # sorted, unique column indices in every row
    # A copy that owns arrays of its own size: a sparse sum's arrays are views of buffers sized
    # for both operands' entries (a tridiagonal pattern's: 1.6 x its own), kept with the cache.
    return read_only(result.copy())


def read_only(pattern: sp.csr_array) -> sp.csr_array:
    """`pattern` with its arrays made read-only, for a pattern kept in the cache: results share
    its structure (`indices`, `indptr`), and an in-place change of one (``eliminate_zeros``)
    would otherwise corrupt every later call's. Returns `pattern`."""
    for array in (pattern.data, pattern.indices, pattern.indptr):
        array.flags.writeable = False
    return pattern


def jacobian_sparsity(program: Program, of: str, wrt: str, cancel: Cancel = None) -> sp.csr_array:
    """The structural pattern of d of / d wrt: a boolean CSR array of shape (of.size, wrt.size),
    both flattened in C order. True wherever the derivative can be non-zero at some point."""
    return structural_pattern(program, of, wrt, cancel=cancel).copy()
