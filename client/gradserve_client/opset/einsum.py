"""einsum (numpy's): the subscripts' grammar and the type rule; the server contracts.

`subscripts` is numpy's: explicit ("ij,jk->ik") or implicit ("ij,jk", the output being the
letters that appear once, in alphabetical order), with "..." for leading axes (right-aligned
across operands). A letter repeated within an operand takes its diagonal ("ii->i", "bii->bi",
the trace "ii->"). A letter has one size everywhere (no size-1 broadcasting, which numpy allows
only for "..." axes anyway).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence

from .core import NUMERIC, AttrSpec, RuleError, Shape, TensorType, define, same_dtype, same_size

LETTERS = string.ascii_letters


@functools.lru_cache(maxsize=1024)
def parse_subscripts(subscripts: str, ranks: tuple[int, ...]) -> tuple[tuple[str, ...], str]:
    """(one letter string per operand, output letters), "..." expanded to letters of its own.
    Raises ValueError with the reason."""
    spec = subscripts.replace(" ", "")
    lhs, arrow, out = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"{len(terms)} operand terms for {len(ranks)} operands")
    used = set(spec) - set(".,->")
    if not used <= set(LETTERS):
        raise ValueError(f"subscripts may only use letters, got {sorted(used - set(LETTERS))}")
    spare = iter(c for c in LETTERS if c not in used)
    n_ellipsis = 0
    for term, rank in zip(terms, ranks, strict=True):
        if "..." in term:
            n_ellipsis = max(n_ellipsis, rank - len(term.replace("...", "")))
    ell = "".join(next(spare) for _ in range(n_ellipsis))
    expanded = []
    for i, (term, rank) in enumerate(zip(terms, ranks, strict=True)):
        if term.count("...") > 1 or "." in term.replace("...", ""):
            raise ValueError(f"operand {i}: bad ellipsis in {term!r}")
        if "..." in term:
            k = rank - len(term.replace("...", ""))
            if k < 0:
                raise ValueError(f"operand {i}: {term!r} has more letters than its rank {rank}")
            term = term.replace("...", ell[n_ellipsis - k :])
        if len(term) != rank:
            raise ValueError(f"operand {i}: {term!r} names {len(term)} axes, its rank is {rank}")
        expanded.append(term)
    letters = "".join(expanded)
    if arrow:
        if out.count("...") > 1 or "." in out.replace("...", ""):
            raise ValueError(f"bad ellipsis in the output {out!r}")
        out = out.replace("...", ell)
        if len(set(out)) != len(out):
            raise ValueError(f"output {out!r} repeats a letter")
        missing = set(out) - set(letters)
        if missing:
            raise ValueError(f"output letter {sorted(missing)[0]!r} is in no operand")
    else:
        out = ell + "".join(sorted(c for c in set(letters) - set(ell) if letters.count(c) == 1))
    return tuple(expanded), out


def letter_sizes(terms: Sequence[str], shapes: Sequence[Shape]) -> dict[str, int]:
    """The size of each letter (-1 if unknown), or RuleError where two sizes disagree."""
    sizes: dict[str, int] = {}
    for i, (term, shape) in enumerate(zip(terms, shapes, strict=True)):
        for c, n in zip(term, shape, strict=True):
            known = sizes.setdefault(c, n)
            if known < 0:
                sizes[c] = n
            elif not same_size(known, n):
                raise RuleError(
                    f"inputs[{i}]", f"letter {c!r} has size {n} here and {sizes[c]} elsewhere"
                )
    return sizes


def _einsum_type(types: Sequence[TensorType], subscripts: str) -> TensorType:
    dtype = same_dtype(types, NUMERIC, "einsum")
    if any(t.shape is None for t in types):
        return TensorType(None, dtype)
    try:
        terms, out = parse_subscripts(subscripts, tuple(len(t.shape) for t in types))
    except ValueError as exc:
        raise RuleError("attrs.subscripts", f"{subscripts!r}: {exc}") from None
    sizes = letter_sizes(terms, [t.shape for t in types])
    return TensorType(tuple(sizes[c] for c in out), dtype)


define(
    "einsum",
    "operands ...",
    _einsum_type,
    "numpy einsum over one or more operands (explicit, implicit or '...' subscripts; a "
    "letter repeated within an operand takes a diagonal)",
    attrs={"subscripts": AttrSpec("string", required=True, doc="numpy's, e.g. 'ij,jk->ik'")},
    sdk=False,  # gs.einsum(subscripts, *operands), numpy's signature (composites.py)
)
