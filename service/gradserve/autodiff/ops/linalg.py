"""Linear algebra: matmul, dot, outer. All bilinear, so the JVP is derived (f(ta, b) +
f(a, tb), `bilinear=`) from the product with one batched factor, and the VJP is written with
matmul, multiply, reshape and transpose, which are differentiable in turn (second derivatives
come for free).

The only care is the batch axis of a (co)tangent: numpy aligns stack dimensions from the right,
so a batched tangent is first put in matrix form (1-D operands get a unit axis, as numpy does)
and then given unit axes after its batch axis (`lift`) until it outranks the other factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, lift, op, reshape, sum_to, transpose


def _plain_reshape(x: Sym, shape: Sequence[int]) -> Sym:
    shape = tuple(shape)
    return x if x.shape == shape else op.reshape(x, shape=shape)


def _swap_last(x: Sym) -> Sym:
    """A primal value with its last two axes swapped."""
    perm = (*range(x.ndim - 2), x.ndim - 1, x.ndim - 2)
    return op.transpose(x, axes=perm)


# ---- matmul ------------------------------------------------------------------------------------


def _matrix_shape(shape: tuple[int, ...], left: bool) -> tuple[int, ...]:
    """numpy's promotion of a 1-D matmul operand: a row on the left, a column on the right."""
    if len(shape) >= 2:
        return shape
    return (1, *shape) if left else (*shape, 1)


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


def _matmul_product(t: Sym, ans: Sym, a: Sym, b: Sym, i: int) -> Sym:
    """a @ b with operand i replaced by its tangent t, in matrix form and given unit axes after
    its batch axis until it outranks the other factor."""
    am = _plain_reshape(a, _matrix_shape(a.shape, True))
    bm = _plain_reshape(b, _matrix_shape(b.shape, False))
    if i == 0:
        out = op.matmul(lift(reshape(t, am.shape), bm.ndim), bm)
    else:
        out = op.matmul(am, lift(reshape(t, bm.shape), am.ndim))
    return reshape(out, ans.shape)


def _matmul_vjp(g: Sym, ans: Sym, a: Sym, b: Sym) -> tuple[Sym, Sym]:
    am = _plain_reshape(a, _matrix_shape(a.shape, True))
    bm = _plain_reshape(b, _matrix_shape(b.shape, False))
    stack = tuple(np.broadcast_shapes(am.shape[:-2], bm.shape[:-2]))
    gm = reshape(g, (*stack, am.shape[-2], bm.shape[-1]))
    ga = sum_to(op.matmul(gm, _swap_last(bm)), am.shape)
    gb = sum_to(op.matmul(_swap_last(am), gm), bm.shape)
    return reshape(ga, a.shape), reshape(gb, b.shape)


implement("matmul", _matmul, bilinear=_matmul_product, vjp=_matmul_vjp)


# ---- dot ---------------------------------------------------------------------------------------
# numpy dot contracts a's last axis with b's second-to-last: dot(a, b)[i.., j.., m] =
# sum_k a[i.., k] b[j.., k, m]. The rules flatten it to one 2-D matmul, (P, k) @ (k, N), with
# b's contracted axis moved to the front; a 0-d operand makes it a plain product.


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


def _dot_product(t: Sym, ans: Sym, a: Sym, b: Sym, i: int) -> Sym:
    """dot(a, b) with operand i replaced by its tangent t."""
    if a.ndim == 0 or b.ndim == 0:
        return reshape(lift(t, ans.ndim) * (b if i == 0 else a), ans.shape)
    lhs = _lhs(t, a.shape, True) if i == 0 else _lhs(a, a.shape, False)
    rhs = _rhs(t, b.shape, True) if i == 1 else _rhs(b, b.shape, False)
    return reshape(op.matmul(lhs, rhs), ans.shape)


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


implement("dot", _dot, bilinear=_dot_product, vjp=_dot_vjp)


# ---- outer -------------------------------------------------------------------------------------


def _outer_product(t: Sym, ans: Sym, a: Sym, b: Sym, i: int) -> Sym:
    """outer(a, b) with operand i replaced by its tangent t."""
    n, m = ans.shape
    if i == 0:
        return reshape(t, (n, 1)) * _plain_reshape(b, (1, m))
    return _plain_reshape(a, (n, 1)) * reshape(t, (1, m))


def _outer_vjp(g: Sym, ans: Sym, a: Sym, b: Sym) -> tuple[Sym, Sym]:
    n, m = ans.shape
    ga = sum_to(g * _plain_reshape(b, (1, m)), (n, 1))
    gb = sum_to(g * _plain_reshape(a, (n, 1)), (1, m))
    return reshape(ga, a.shape), reshape(gb, b.shape)


implement("outer", np.outer, bilinear=_outer_product, vjp=_outer_vjp)
