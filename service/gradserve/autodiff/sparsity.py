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
- non-differentiable ops: no dependence;
- any other op: the conservative dense fallback (every result element depends on every entry
  any operand depends on), so a missing rule costs sparsity, never correctness.
Nothing of size of.size x wrt.size is ever formed; memory follows the non-zeros.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from gradserve_client.opset.reductions import axes_of

from gradserve.autodiff.ir import Program, TensorType
from gradserve.autodiff.registry import OPS
from gradserve.autodiff.transforms import check_targets, needed_by

Pattern = sp.csr_array
# rule(patterns of the operands (None: depends on nothing), operand types, result type, attrs)
Rule = Callable[[list[Pattern | None], list[TensorType], TensorType, dict[str, Any]], Pattern]

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
    }
)


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
    keep = tuple(1 if i in axes else d for i, d in enumerate(shape))
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


def _axes(attrs: dict[str, Any], ndim: int) -> tuple[int, ...]:
    """The op's `axis` (one or several; absent: all) as non-negative axes."""
    axis = attrs.get("axis")
    return tuple(a + ndim for a in axes_of((axis,) if isinstance(axis, int) else axis, ndim))


def _reduction(ps, types, out, attrs):
    (x,) = types
    axes = _axes(attrs, x.ndim)
    keep = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return _spread(ps[0], x.shape, axes, keep, keep)


def _along_axis(ps, types, out, attrs):
    """softmax-like: each element depends on its whole slice along `axis`."""
    (x,) = types[:1]
    axes = _axes(attrs, x.ndim)
    keep = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return _spread(ps[0], x.shape, axes, keep, x.shape)


def _sum_to(ps, types, out, attrs):
    (x,) = types
    nb = attrs.get("batch_ndim", 0)
    shape = attrs["shape"]
    lead = x.ndim - nb - len(shape)
    axes = tuple(range(nb, nb + lead)) + tuple(
        nb + lead + i for i, d in enumerate(shape) if d == 1 and x.shape[nb + lead + i] != 1
    )
    keep = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return _spread(ps[0], x.shape, axes, keep, keep)


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
            keep = tuple(1 if i == axis else d for i, d in enumerate(shape))
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
    keep = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return _spread(ps[0], x.shape, axes, keep, keep)


def _mse(ps, types, out, attrs):
    shape = np.broadcast_shapes(*(t.shape for t in types))
    p = _elementwise_union(ps, types, shape, (True, True))
    if attrs.get("reduction") == "none" or p is None:
        return p
    return _spread(p, shape, _all_axes(len(shape)), (1,) * len(shape), (1,) * len(shape))


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
}


def _index_op(op: str, ps, types, attrs, cols: int) -> Pattern:
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
            union = _union(union, _spread(p, (p.shape[0],), (0,), (1,), (1,)))
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


@functools.lru_cache(maxsize=256)
def structural_pattern(program: Program, of: str, wrt: str) -> Pattern:
    """`jacobian_sparsity`, cached and shared: callers must not modify it."""
    check_targets(program, (of,), (wrt,))
    types = program.types
    n = types[wrt].size
    patterns: dict[str, Pattern] = {wrt: sp.csr_array(sp.eye_array(n, dtype=bool, format="csr"))}
    needed = needed_by(program.nodes, (of,))
    nodes = [node for node in program.nodes if node.name in needed]
    last_use = {s: i for i, node in enumerate(nodes) for s in node.inputs}
    for i, node in enumerate(nodes):
        ps = [patterns.get(s) for s in node.inputs]
        p = node_pattern(
            node.op, ps, [types[s] for s in node.inputs], types[node.name], node.attrs, n
        )
        if p is not None:
            patterns[node.name] = p
        for s in node.inputs:
            if last_use[s] == i and s != of:
                patterns.pop(s, None)  # memory follows the live patterns
    result = patterns.get(of)
    if result is None:
        return _empty(types[of].size, n)
    result = sp.csr_array(result)
    result.sum_duplicates()  # sorted, unique column indices in every row
    return result


def jacobian_sparsity(program: Program, of: str, wrt: str) -> sp.csr_array:
    """The structural pattern of d of / d wrt: a boolean CSR array of shape (of.size, wrt.size),
    both flattened in C order. True wherever the derivative can be non-zero at some point."""
    return structural_pattern(program, of, wrt).copy()
