"""Linear algebra: matmul, dot, outer. All bilinear, so each rule is "differentiate one factor
at a time" written with matmul, multiply, reshape and transpose, which are differentiable in
turn (second derivatives come for free).

The only care is the batch axis of a (co)tangent: numpy aligns stack dimensions from the right,
so a batched tangent is first put in matrix form (1-D operands get a unit axis, as numpy does)
and then given unit axes after its batch axis (`lift`) until it outranks the other factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradserve.autodiff.ir import TensorType
from gradserve.autodiff.registry import (
    NUMERIC,
    OpDef,
    RuleError,
    broadcast_shapes,
    register,
    same_dtype,
)
from gradserve.autodiff.symbolic import Sym, lift, op, reshape, sum_to, transpose


def _plain_reshape(x: Sym, shape: Sequence[int]) -> Sym:
    shape = tuple(shape)
    return x if x.shape == shape else op.reshape(x, shape=shape)


def _swap_last(x: Sym) -> Sym:
    """A primal value with its last two axes swapped."""
    perm = (*range(x.ndim - 2), x.ndim - 1, x.ndim - 2)
    return op.transpose(x, axes=perm)


def _operand_ranks(types: Sequence[TensorType], what: str) -> None:
    for i, t in enumerate(types):
        if t.ndim == 0:
            raise RuleError(f"inputs[{i}]", f"{what} needs at least one dimension (use multiply)")


def _contracted(a: TensorType, b: TensorType, what: str) -> None:
    k = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if a.shape[-1] != k:
        raise RuleError(
            "inputs[1]",
            f"{what}: shapes {list(a.shape)} and {list(b.shape)} are not aligned "
            f"({a.shape[-1]} != {k})",
        )


# ---- matmul ------------------------------------------------------------------------------------


def _matrix_shape(shape: tuple[int, ...], left: bool) -> tuple[int, ...]:
    """numpy's promotion of a 1-D matmul operand: a row on the left, a column on the right."""
    if len(shape) >= 2:
        return shape
    return (1, *shape) if left else (*shape, 1)


def _matmul_type(types: list[TensorType]) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "matmul")
    _operand_ranks(types, "matmul")
    a, b = types
    _contracted(a, b, "matmul")
    stack = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    rows = a.shape[-2:-1] if a.ndim >= 2 else ()
    cols = b.shape[-1:] if b.ndim >= 2 else ()
    return TensorType(stack + rows + cols, dtype)


def _rows(x: np.ndarray) -> np.ndarray | None:
    """A stack of matrices (..., n, k) as one (N * n, k) matrix, if that needs no copy."""
    try:
        return np.reshape(x, (math.prod(x.shape[:-1]), x.shape[-1]), copy=False)
    except ValueError:
        return None


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # numpy calls BLAS once per matrix of a stack (a matrix-vector product when the matrices
    # are vectors); a stack times one plain matrix is a single GEMM once the stack is folded
    # into the rows: (..., n, k) @ (k, m) directly, (p, n) @ (..., n, m) transposed. With an
    # inner dimension of 1 (an outer product, as in the VJP of a 1-column layer) BLAS is slower
    # than the broadcast product, which is exact: each element is one product.
    if a.ndim >= 2 and b.ndim >= 2 and a.shape[-1] == 1:
        return np.multiply(a, b)
    if b.ndim <= 2 < a.ndim and (flat := _rows(a)) is not None:
        return (flat @ b).reshape(a.shape[:-1] + b.shape[1:])
    if a.ndim <= 2 < b.ndim and (flat := _rows(np.swapaxes(b, -1, -2))) is not None:
        out = flat @ a.T  # (N * m, p), or (N * m,) for a vector a
        if a.ndim == 1:
            return out.reshape(b.shape[:-2] + b.shape[-1:])
        return np.swapaxes(out.reshape((*b.shape[:-2], b.shape[-1], a.shape[0])), -1, -2)
    return np.asarray(np.matmul(a, b))


def _matmul_jvp(ts: list[Sym | None], ans: Sym, a: Sym, b: Sym) -> Sym:
    ta, tb = ts
    am = _plain_reshape(a, _matrix_shape(a.shape, True))
    bm = _plain_reshape(b, _matrix_shape(b.shape, False))
    out = None
    if ta is not None:
        t = reshape(ta, am.shape)
        out = op.matmul(lift(t, bm.ndim) if t.em.batch else t, bm)
    if tb is not None:
        t = reshape(tb, bm.shape)
        term = op.matmul(am, lift(t, am.ndim) if t.em.batch else t)
        out = term if out is None else out + term
    assert out is not None
    return reshape(out, ans.shape)


def _matmul_vjp(g: Sym, ans: Sym, a: Sym, b: Sym) -> tuple[Sym, Sym]:
    am = _plain_reshape(a, _matrix_shape(a.shape, True))
    bm = _plain_reshape(b, _matrix_shape(b.shape, False))
    stack = tuple(np.broadcast_shapes(am.shape[:-2], bm.shape[:-2]))
    gm = reshape(g, (*stack, am.shape[-2], bm.shape[-1]))
    ga = sum_to(op.matmul(gm, _swap_last(bm)), am.shape)
    gb = sum_to(op.matmul(_swap_last(am), gm), bm.shape)
    return reshape(ga, a.shape), reshape(gb, b.shape)


register(
    OpDef(
        "matmul",
        2,
        _matmul_type,
        _matmul,
        "numpy matmul (a @ b): 1-D operands are promoted, stack dimensions broadcast",
        jvp=_matmul_jvp,
        vjp=_matmul_vjp,
    )
)


# ---- dot ---------------------------------------------------------------------------------------
# numpy dot contracts a's last axis with b's second-to-last: dot(a, b)[i.., j.., m] =
# sum_k a[i.., k] b[j.., k, m]. The rules flatten it to one 2-D matmul, (P, k) @ (k, N), with
# b's contracted axis moved to the front; a 0-d operand makes it a plain product.


def _dot_type(types: list[TensorType]) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "dot")
    a, b = types
    if a.ndim == 0 or b.ndim == 0:
        return TensorType(broadcast_shapes(a.shape, b.shape), dtype)
    _contracted(a, b, "dot")
    cols = b.shape[:-2] + b.shape[-1:] if b.ndim >= 2 else ()
    return TensorType(a.shape[:-1] + cols, dtype)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.dot(a, b))


def _b_perm(ndim: int) -> tuple[int, ...]:
    """Moves b's contracted axis (-2) to the front."""
    return (ndim - 2, *range(ndim - 2), ndim - 1)


def _lhs(x: Sym, a_shape: tuple[int, ...], batched: bool) -> Sym:
    """a (or its tangent) as a (P, k) matrix."""
    target = (math.prod(a_shape[:-1]), a_shape[-1])
    return reshape(x, target) if batched else _plain_reshape(x, target)


def _rhs(x: Sym, b_shape: tuple[int, ...], batched: bool) -> Sym:
    """b (or its tangent) as a (k, N) matrix."""
    if len(b_shape) == 1:
        target = (b_shape[0], 1)
    else:
        if len(b_shape) > 2:
            perm = _b_perm(len(b_shape))
            x = transpose(x, perm) if batched else op.transpose(x, axes=perm)
        target = (b_shape[-2], math.prod(b_shape) // b_shape[-2])
    return reshape(x, target) if batched else _plain_reshape(x, target)


def _dot_jvp(ts: list[Sym | None], ans: Sym, a: Sym, b: Sym) -> Sym:
    ta, tb = ts
    if a.ndim == 0 or b.ndim == 0:
        terms = [lift(t, ans.ndim) * y for t, y in ((ta, b), (tb, a)) if t is not None]
    else:
        terms = []
        if ta is not None:
            terms.append(op.matmul(_lhs(ta, a.shape, True), _rhs(b, b.shape, False)))
        if tb is not None:
            terms.append(op.matmul(_lhs(a, a.shape, False), _rhs(tb, b.shape, True)))
    out = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return reshape(out, ans.shape)


def _dot_vjp(g: Sym, ans: Sym, a: Sym, b: Sym) -> tuple[Sym, Sym]:
    if a.ndim == 0 or b.ndim == 0:
        return sum_to(g * b, a.shape), sum_to(g * a, b.shape)
    am, bm = _lhs(a, a.shape, False), _rhs(b, b.shape, False)
    gm = reshape(g, (am.shape[0], bm.shape[1]))
    ga = reshape(op.matmul(gm, _swap_last(bm)), a.shape)
    gb = op.matmul(_swap_last(am), gm)
    if b.ndim <= 2:
        return ga, reshape(gb, b.shape)
    perm = _b_perm(b.ndim)
    gb = reshape(gb, tuple(b.shape[p] for p in perm))
    return ga, transpose(gb, tuple(np.argsort(perm).tolist()))


register(
    OpDef(
        "dot",
        2,
        _dot_type,
        _dot,
        "numpy dot: sum over a's last and b's second-to-last axis; a 0-d operand multiplies",
        jvp=_dot_jvp,
        vjp=_dot_vjp,
    )
)


# ---- outer -------------------------------------------------------------------------------------


def _outer_type(types: list[TensorType]) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "outer")
    a, b = types
    return TensorType((a.size, b.size), dtype)


def _outer_jvp(ts: list[Sym | None], ans: Sym, a: Sym, b: Sym) -> Sym:
    ta, tb = ts
    n, m = ans.shape
    out = None
    if ta is not None:
        out = reshape(ta, (n, 1)) * _plain_reshape(b, (1, m))
    if tb is not None:
        term = _plain_reshape(a, (n, 1)) * reshape(tb, (1, m))
        out = term if out is None else out + term
    assert out is not None
    return out


def _outer_vjp(g: Sym, ans: Sym, a: Sym, b: Sym) -> tuple[Sym, Sym]:
    n, m = ans.shape
    ga = sum_to(g * _plain_reshape(b, (1, m)), (n, 1))
    gb = sum_to(g * _plain_reshape(a, (n, 1)), (1, m))
    return reshape(ga, a.shape), reshape(gb, b.shape)


register(
    OpDef(
        "outer",
        2,
        _outer_type,
        np.outer,
        "numpy outer: the product of every element of a (flattened) with every element of b",
        jvp=_outer_jvp,
        vjp=_outer_vjp,
    )
)
