"""einsum: numpy's Einstein summation, contracted pairwise with one batched GEMM per pair.

`subscripts` is numpy's: explicit ("ij,jk->ik") or implicit ("ij,jk", the output being the
letters that appear once, in alphabetical order), with "..." for leading axes (right-aligned
across operands). Two restrictions keep the rules exact and short: a letter appears at most once
per operand (no diagonals or traces) and a letter has one size everywhere (no size-1
broadcasting, which numpy allows only for "..." axes anyway).

The forward (`contract`, also the kernel of `conv`) splits each pair's letters into batch
(in both operands and kept), contracted (in both, not kept), and kept on one side, folds them
into one (batch, m, k) @ (batch, k, n) matmul, and reshapes back: BLAS does the work, where
np.einsum without a BLAS path would loop in C. The contraction order of three or more operands
is numpy's greedy `einsum_path`.

einsum is multilinear, so its rules are einsums: the JVP sums one einsum per operand with that
operand replaced by its tangent; the VJP of an operand contracts the cotangent with the others
(a letter summed within that operand alone is broadcast back). A batch axis of a (co)tangent is
one more letter, so the rules are batch-polymorphic and differentiable again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from gradserve_client.opset.einsum import LETTERS, parse_subscripts

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, op

# ---- the kernel --------------------------------------------------------------------------------


def _sum_alone(x: np.ndarray, term: str, keep: set[str]) -> tuple[np.ndarray, str]:
    """Sum out the letters of x that nothing else needs."""
    axes = tuple(i for i, c in enumerate(term) if c not in keep)
    if not axes:
        return x, term
    return np.add.reduce(x, axis=axes), "".join(c for c in term if c in keep)


def _matrices(
    x: np.ndarray, term: str, batch: list[str], rows: list[str], cols: list[str]
) -> np.ndarray:
    """x as a stack of (rows, cols) matrices. The copy that folds the axes keeps x's innermost
    axis innermost (rows last, then a transposed view): for conv's strided windows that copy is
    6-20x faster than the other order, and matmul takes either layout without copying again."""
    size = dict(zip(term, x.shape, strict=True))
    nb, nr, nc = (math.prod(size[c] for c in part) for part in (batch, rows, cols))
    # The innermost axis: the smallest stride, and of those the longest run.
    moving = [(abs(st), -n, c) for c, st, n in zip(term, x.strides, x.shape, strict=True) if n > 1]
    if moving and min(moving)[2] in rows:
        folded = np.transpose(x, [term.index(c) for c in batch + cols + rows])
        return folded.reshape(nb, nc, nr).swapaxes(1, 2)
    return np.transpose(x, [term.index(c) for c in batch + rows + cols]).reshape(nb, nr, nc)


def _pair(a: np.ndarray, ta: str, b: np.ndarray, tb: str, keep: set[str]) -> tuple[np.ndarray, str]:
    """Contract two operands, keeping the letters in `keep`, as one batched matmul."""
    a, ta = _sum_alone(a, ta, keep | set(tb))
    b, tb = _sum_alone(b, tb, keep | set(ta))
    batch = [c for c in ta if c in tb and c in keep]
    summed = [c for c in ta if c in tb and c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    am = _matrices(a, ta, batch, left, summed)
    bm = _matrices(b, tb, batch, summed, right)
    if am.shape[1] > bm.shape[2]:
        # BLAS writes long result rows faster than short ones (2x for conv's (N*H*W, O)):
        # compute the transposed product; the letters keep track of the order.
        am, bm, left, right = bm.swapaxes(1, 2), am.swapaxes(1, 2), right, left
    # An inner dimension of 1 is an outer product: exact and faster as a broadcast multiply.
    out = np.multiply(am, bm) if am.shape[2] == 1 else np.matmul(am, bm)
    size = dict(zip(ta, a.shape, strict=True)) | dict(zip(tb, b.shape, strict=True))
    letters = batch + left + right
    return out.reshape([size[c] for c in letters]), "".join(letters)


@functools.lru_cache(maxsize=1024)
def _path(terms: tuple[str, ...], out: str, shapes: tuple[tuple[int, ...], ...]) -> tuple:
    if len(terms) <= 2:
        return ((0, 1),) if len(terms) == 2 else ()
    views = [np.broadcast_to(np.empty((), np.float64), s) for s in shapes]
    path = np.einsum_path(f"{','.join(terms)}->{out}", *views, optimize="greedy")[0]
    return tuple(tuple(p) for p in path[1:])


def contract(terms: Sequence[str], out: str, *arrays: np.ndarray) -> np.ndarray:
    """einsum over parsed subscripts (no repeated letter within a term)."""
    operands = list(zip(arrays, terms, strict=True))
    for pair in _path(tuple(terms), out, tuple(a.shape for a in arrays)):
        (a, ta), (b, tb) = (operands[i] for i in pair)
        operands = [o for i, o in enumerate(operands) if i not in pair]
        keep = set(out).union(*(t for _, t in operands))
        operands.append(_pair(a, ta, b, tb, keep))
    ((x, tx),) = operands
    x, tx = _sum_alone(x, tx, set(out))
    return np.transpose(x, [tx.index(c) for c in out])


# ---- the op ------------------------------------------------------------------------------------


def _parsed(xs: Sequence[Sym], subscripts: str) -> tuple[tuple[str, ...], str]:
    return parse_subscripts(subscripts, tuple(x.ndim for x in xs))


def _einsum(*arrays: np.ndarray, subscripts: str) -> np.ndarray:
    terms, out = parse_subscripts(subscripts, tuple(a.ndim for a in arrays))
    return contract(terms, out, *arrays)


def _batch_letter(g: Sym, terms: Sequence[str], out: str) -> str:
    """The letter of the (co)tangent's batch axis ('' without one)."""
    if not g.em.batch:
        return ""
    used = set(out).union(*terms)
    return next(c for c in LETTERS if c not in used)


def _emit(operands: Sequence[Sym], terms: Sequence[str], out: str) -> Sym:
    return op.einsum(list(operands), subscripts=f"{','.join(terms)}->{out}")


def _einsum_jvp(ts: list[Sym | None], ans: Sym, *xs: Sym, subscripts: str) -> Sym:
    terms, out = _parsed(xs, subscripts)
    total = None
    for i, t in enumerate(ts):
        if t is None:
            continue
        b = _batch_letter(t, terms, out)
        local = [b + term if j == i else term for j, term in enumerate(terms)]
        term = _emit([t if j == i else x for j, x in enumerate(xs)], local, b + out)
        total = term if total is None else total + term
    assert total is not None
    return total


def _einsum_vjp(g: Sym, ans: Sym, *xs: Sym, subscripts: str) -> tuple[Sym, ...]:
    terms, out = _parsed(xs, subscripts)
    b = _batch_letter(g, terms, out)
    grads = []
    for i, x in enumerate(xs):
        others = [term for j, term in enumerate(terms) if j != i]
        reached = set(out).union(*others)
        target = "".join(c for c in terms[i] if c in reached)
        ct = _emit([*(y for j, y in enumerate(xs) if j != i), g], [*others, b + out], b + target)
        if target != terms[i]:  # letters summed within x alone: their gradient is broadcast
            shape = g.em.batch + tuple(
                n if c in reached else 1 for c, n in zip(terms[i], x.shape, strict=True)
            )
            ct = op.broadcast_to(op.reshape(ct, shape=shape), shape=g.em.batch + x.shape)
        grads.append(ct)
    return tuple(grads)


implement("einsum", _einsum, jvp=_einsum_jvp, vjp=_einsum_vjp)
