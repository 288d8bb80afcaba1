"""einsum: numpy's Einstein summation, contracted pairwise with one batched GEMM per pair.

`subscripts` is numpy's: explicit ("ij,jk->ik") or implicit ("ij,jk", the output being the
letters that appear once, in alphabetical order), with "..." for leading axes (right-aligned
across operands). A letter repeated within an operand takes its diagonal ("ii->i", "bii->bi",
the trace "ii->"); a letter has one size everywhere (no size-1 broadcasting, which numpy allows
only for "..." axes anyway).

The forward (`contract`, also the kernel of `conv`) splits each pair's letters into batch
(in both operands and kept), contracted (in both, not kept), and kept on one side, folds them
into one (batch, m, k) @ (batch, k, n) matmul, and reshapes back: BLAS does the work, where
np.einsum without a BLAS path would loop in C. The contraction order of three or more operands
is numpy's greedy `einsum_path`.

The forward first sees each operand through its diagonals (`diagonal`: a strided view, one axis
per distinct letter), so `contract` never meets a repeated letter.

einsum is multilinear, so its rules are einsums: the JVP sums one einsum per operand with that
operand replaced by its tangent; the VJP of an operand contracts the cotangent with the others
(a letter summed within that operand alone is broadcast back). For an operand with a diagonal,
the VJP's result names each repeat of a letter with a letter of its own, tied to the first by a
constant identity tensor (one more operand): the cotangent lands on the diagonal, zeros
elsewhere. A batch axis of a (co)tangent is one more letter, so the rules are batch-polymorphic
and differentiable again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from gradserve_client.opset.einsum import LETTERS, parse_subscripts
from numpy.lib.stride_tricks import as_strided

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
    for step in _path(tuple(terms), out, tuple(a.shape for a in arrays)):
        picked = [operands[i] for i in step]  # usually a pair; a step of outer products may be more
        operands = [o for i, o in enumerate(operands) if i not in step]
        keep = set(out).union(*(t for _, t in operands))
        while len(picked) > 1:
            (a, ta), (b, tb), *picked = picked
            picked.insert(0, _pair(a, ta, b, tb, keep.union(*(t for _, t in picked))))
        operands.append(picked[0])
    ((x, tx),) = operands
    x, tx = _sum_alone(x, tx, set(out))
    return np.transpose(x, [tx.index(c) for c in out])


# ---- the op ------------------------------------------------------------------------------------


def diagonal(x: np.ndarray, term: str) -> tuple[np.ndarray, str]:
    """x seen through its diagonals (a read-only strided view): one axis per distinct letter of
    `term`, in the order they first appear, and those letters."""
    distinct = "".join(dict.fromkeys(term))
    if distinct == term:
        return x, term
    shape = tuple(x.shape[term.index(c)] for c in distinct)
    strides = tuple(
        sum(st for t, st in zip(term, x.strides, strict=True) if t == c) for c in distinct
    )
    return as_strided(x, shape, strides, writeable=False), distinct


def _parsed(xs: Sequence[Sym], subscripts: str) -> tuple[tuple[str, ...], str]:
    return parse_subscripts(subscripts, tuple(x.ndim for x in xs))


def _einsum(*arrays: np.ndarray, subscripts: str) -> np.ndarray:
    terms, out = parse_subscripts(subscripts, tuple(a.ndim for a in arrays))
    views, letters = zip(*map(diagonal, arrays, terms), strict=True)
    return contract(letters, out, *views)


def _spare_letters(terms: Sequence[str], out: str) -> Iterator[str]:
    used = set(out).union(*terms)
    return (c for c in LETTERS if c not in used)


def _batch_letter(g: Sym, terms: Sequence[str], out: str) -> str:
    """The letter of the (co)tangent's batch axis ('' without one)."""
    return next(_spare_letters(terms, out)) if g.em.batch else ""


def _undiagonal(x: Sym, term: str, spare: Iterator[str]) -> tuple[str, list[Sym], list[str]]:
    """`term` with each repeat of a letter renamed to a spare letter, and the identity tensors
    (constants, with their terms) that tie each renamed letter to the first."""
    renamed, identities, terms = "", [], []
    for i, c in enumerate(term):
        if c not in term[:i]:
            renamed += c
            continue
        renamed += next(spare)
        terms.append(c + renamed[-1])
        identities.append(x.lift(np.eye(x.shape[i])))
    return renamed, identities, terms


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
    spare = _spare_letters(terms, out)
    b = next(spare) if g.em.batch else ""
    grads = []
    for i, x in enumerate(xs):
        term, identities, tied = _undiagonal(x, terms[i], spare)
        others = [t for j, t in enumerate(terms) if j != i] + tied
        reached = set(out).union(*others)
        target = "".join(c for c in term if c in reached)
        operands = [*(y for j, y in enumerate(xs) if j != i), *identities, g]
        ct = _emit(operands, [*others, b + out], b + target)
        if target != term:  # letters summed within x alone: their gradient is broadcast
            shape = g.em.batch + tuple(
                n if c in reached else 1 for c, n in zip(term, x.shape, strict=True)
            )
            ct = op.broadcast_to(op.reshape(ct, shape=shape), shape=g.em.batch + x.shape)
        grads.append(ct)
    return tuple(grads)


implement("einsum", _einsum, jvp=_einsum_jvp, vjp=_einsum_vjp)
