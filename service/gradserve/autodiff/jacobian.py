"""Jacobians in one batched pass per chunk, never a Python loop over rows.

Reverse mode pushes a batch of one-hot cotangents (rows of J), forward mode a batch of one-hot
tangents (columns of J). `mode="auto"` pushes whichever batch is smaller. Chunks bound the work
memory: peak memory stays near the result plus one chunk.

Structure first: each block's sparsity pattern is detected from the graph (`sparsity.py`) and
coloured (`colouring.py`); when the colours are at most half the dense passes (a diagonal J
takes one pass, a tridiagonal one three), one pass per colour computes a compressed J, which
is decompressed into CSR. Pattern and colouring are cached with the program.

A `part` (index, count) runs one share of those passes, so that several calls (processes,
replicas) compute one Jacobian together: the chunks are those of the whole computation, so the
shares' entries are bit for bit the whole one's, and the other shares' entries are left zero
(dense) or out (CSR).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

from gradserve.autodiff.api import Arrays, check_inputs
from gradserve.autodiff.cache import cached, entry_bytes
from gradserve.autodiff.colouring import colour_columns, colour_rows, star_colouring
from gradserve.autodiff.executor import FOLD_MAX_ELEMENTS, Executable, compile_program
from gradserve.autodiff.ir import Cancel, GraphError, InputDef, Program
from gradserve.autodiff.registry import OPS
from gradserve.autodiff.simplify import bind
from gradserve.autodiff.sparsity import PatternTooLarge, read_only, structural_pattern
from gradserve.autodiff.transforms import (
    Derivative,
    active_values,
    check_targets,
    jvp,
    select,
    vjp,
)

MODES = ("auto", "forward", "reverse")
# Work per chunk, in elements of the widest value times the batch; see `chunk_rows`.
MAX_CHUNK_ELEMENTS = 1 << 22
MIN_CHUNK_ELEMENTS = 1 << 16
# A dense request with fewer passes than this is not worth a pattern detection (a walk of the
# graph with sparse-matrix work per node) to save some of them, unless it is diagonal.
MIN_PASSES_TO_COLOUR = 16
# `sparse_rows` reads the plan of this many entries at a time to find which chunks runs read.
SLAB_ENTRIES = 1 << 18

#: A share of the passes: (index, count), index in [0, count); None is the whole computation.
Part: TypeAlias = "tuple[int, int] | None"


def choose_mode(program: Program, of: Sequence[str], wrt: Sequence[str], mode: str) -> str:
    if mode not in MODES:
        raise GraphError("", "mode", f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    m = sum(program.types[o].size for o in of)
    n = sum(program.types[w].size for w in wrt)
    return "forward" if n < m else "reverse"


def chunk_rows(
    program: Program, of: Sequence[str], wrt: Sequence[str], batch: int, result_elements: int
) -> int:
    """How many (co)tangents to push at once. Each carries one copy of every value between
    `wrt` and `of`; that work stays within a quarter of the result (so peak memory is near
    result + one chunk), or MIN_CHUNK_ELEMENTS for small results, and MAX_CHUNK_ELEMENTS."""
    widest = _widest(program, tuple(of), tuple(wrt))
    budget = min(MAX_CHUNK_ELEMENTS, max(MIN_CHUNK_ELEMENTS, result_elements // 4))
    return max(1, min(batch, budget // max(widest, 1)))


@cached
def _widest(program: Program, of: tuple[str, ...], wrt: tuple[str, ...]) -> int:
    """The size of the widest value between `wrt` and `of` (a walk of the program: cached)."""
    return max((program.types[v].size for v in active_values(program, of, wrt)), default=1)


@cached
def is_diagonal(program: Program, of: str, wrt: str) -> bool:
    """True when d of / d wrt is diagonal: only element-wise ops on wrt-shaped values between.
    A walk of the nodes, no sparse work: the pattern of the commonest structure, for free."""
    shape = program.types[wrt].shape
    if program.types[of].shape != shape or program.types[wrt].size < 2:
        return False
    active = {wrt}
    for node in program.nodes:
        if not any(s in active for s in node.inputs):
            continue
        opdef = OPS[node.op]
        if not opdef.differentiable:
            continue
        if opdef.partials is None or program.types[node.name].shape != shape:
            return False
        active.add(node.name)
    return of in active


def chunk_starts(total: int, step: int, part: Part = None) -> range:
    """The first (co)tangent of each chunk of `step` out of `total` that `part` runs: the
    chunks split into `count` contiguous runs, run `index` (every chunk without a part)."""
    starts = range(0, total, step)
    if part is None:
        return starts
    index, count = part
    return starts[len(starts) * index // count : len(starts) * (index + 1) // count]


def _one_hot(start: int, rows: int, width: int, dtype: str) -> np.ndarray:
    seeds = np.zeros((rows, width), dtype)
    seeds[np.arange(rows), np.arange(start, start + rows)] = 1
    return seeds


@dataclass(frozen=True, slots=True, eq=False)
class ColourPlan:
    """How to compute one block by colouring: its pattern, the direction (forward: colours of
    columns, one tangent each; reverse: colours of rows, one cotangent each) and the colours.

    `colours` (the smallest dtype that holds them) colour the seeded indices (columns in forward
    mode, rows in reverse); `gather` says where each stored entry of the pattern, in CSR order,
    is read from the stacked results: colour * their width + index, so that a chunk of colours
    [a, b) is the index range [a * width, b * width). A symmetric plan
    (`colouring.star_colouring`) reads some entries across the diagonal."""

    pattern: sp.csr_array
    forward: bool
    count: int
    colours: np.ndarray
    gather: np.ndarray

    @property
    def nbytes(self) -> int:
        return entry_bytes(self.pattern) + self.colours.nbytes + self.gather.nbytes


def _plan(
    pattern: sp.csr_array, forward: bool, colours: np.ndarray, hubs: np.ndarray | None = None
) -> ColourPlan:
    """The plan of a colouring (`hubs`: the rows of a symmetric pattern whose entries off the
    hub columns are read across the diagonal, from the hub's own column)."""
    pattern = read_only(pattern)  # cached with the plan, its structure shared by results
    m, n = pattern.shape
    count = 0 if pattern.nnz == 0 else int(colours.max()) + 1
    read = m if forward else n
    index = np.int32 if max(count, 1) * max(m, n) < 2**31 and pattern.nnz < 2**31 else np.int64
    colours = colours.astype(index)
    rows = np.repeat(np.arange(m, dtype=index), np.diff(pattern.indptr))
    cols = pattern.indices.astype(index, copy=False)
    own, target = (cols, rows) if forward else (rows, cols)
    gather = colours[own]
    gather *= read
    gather += target
    if hubs is not None:  # symmetric: (i, j), i a hub row and j not a hub, is (j, i)
        across = hubs[rows] & ~hubs[cols]
        gather[across] = colours[rows[across]] * read + cols[across]
    return ColourPlan(pattern, forward, count, colours.astype(np.min_scalar_type(count)), gather)


@cached
def colour_plan(
    program: Program, of: str, wrt: str, mode: str = "auto", *, cancel: Cancel = None
) -> ColourPlan:
    """The pattern of d of / d wrt and its colouring in `mode`'s direction (in auto, the one
    with fewer colours), cached with the program: a second call pays only the passes. A
    diagonal block is one JVP whichever the mode (one pass either way, and the forward one is
    what other calls on the block share)."""
    if is_diagonal(program, of, wrt):
        n = program.types[wrt].size
        pattern = sp.csr_array(sp.eye_array(n, dtype=bool, format="csr"))
        return _plan(pattern, True, np.zeros(n, np.intp))
    pattern = structural_pattern(program, of, wrt, cancel=cancel)
    candidates = []
    if mode != "reverse":
        candidates.append((True, colour_columns(pattern, cancel)))
    if mode != "forward":
        candidates.append((False, colour_rows(pattern, cancel)))
    forward, colours = min(candidates, key=lambda c: c[1].max(initial=-1))
    return _plan(pattern, forward, colours)


@cached
def symmetric_plan(program: Program, of: str, wrt: str, *, cancel: Cancel = None) -> ColourPlan:
    """The plan of a block known to be symmetric (the Hessian d grad / d wrt, `of` the gradient
    of wrt): forward, star-coloured, each entry read where one pass holds it alone."""
    if is_diagonal(program, of, wrt):
        return colour_plan(program, of, wrt, "forward")
    pattern = structural_pattern(program, of, wrt, cancel=cancel)
    pattern = sp.csr_array(pattern + pattern.T)  # detection may be conservative on one side
    pattern.sum_duplicates()
    colours, hubs = star_colouring(pattern, cancel)
    return _plan(pattern, True, colours, hubs)


def block_plan(
    program: Program,
    of: str,
    wrt: str,
    mode: str = "auto",
    symmetric: bool = False,
    *,
    cancel: Cancel = None,
) -> ColourPlan:
    """The plan a block is computed by colouring: `symmetric_plan` for a block known to be
    symmetric, else `colour_plan` in `mode`'s direction. Its pattern is the block's sparse
    result's (`jacobian(sparse=True)`), known before any pass runs."""
    if symmetric:
        return symmetric_plan(program, of, wrt, cancel=cancel)
    return colour_plan(program, of, wrt, mode, cancel=cancel)


@dataclass(frozen=True, slots=True)
class LinearHead:
    """`wrt` feeds only `value = matrix @ wrt` (or `wrt @ matrix`), a 1-D wrt and a matrix
    that does not depend on it: then J[of][wrt] = J[of][value] @ J[value][wrt], and the second
    factor is the matrix itself (transposed on the left), never computed. `program` is the
    original with `value` made an input, for J[of][value]."""

    value: str
    matrix: str
    transposed: bool
    program: Program


@cached
def linear_head(program: Program, wrt: str) -> LinearHead | None:
    users = [node for node in program.nodes if wrt in node.inputs]
    if len(users) != 1 or users[0].op != "matmul" or program.types[wrt].ndim != 1:
        return None
    node = users[0]
    a, b = node.inputs
    matrix, transposed = (a, False) if b == wrt else (b, True)
    if matrix == wrt or program.types[matrix].ndim != 2:
        return None
    value = InputDef(node.name, program.types[node.name].dtype, program.types[node.name].shape)
    nodes = tuple(n for n in program.nodes if n is not node)
    cut = Program((*program.inputs, value), nodes, program.outputs, program.types)
    return LinearHead(node.name, matrix, transposed, cut)


def _colours_through_head(inner: ColourPlan, n: int, mode: str) -> int:
    """What `colour_plan` would count for J[of][wrt] (n columns) through a linear head, without
    detecting its pattern (of.size x n entries for a dense block: M1's 20000 x 20 took more
    memory than the result). Detection sees the matrix as dense, so a row of J is full where
    the inner block's row has any entry and empty elsewhere: n colours of columns, and one
    colour of rows per non-empty row."""
    rows = int(np.count_nonzero(np.diff(inner.pattern.indptr)))
    columns = n if rows else 0
    return columns if mode == "forward" else rows if mode == "reverse" else min(columns, rows)


def _through_linear_head(
    program: Program,
    feeds: Arrays,
    of: str,
    head: LinearHead,
    plan: ColourPlan,
    chunk_size: int | None,
    cancel: Cancel,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(value of `of`, J[of][wrt] as an (of.size, wrt.size) array) by the chain rule at the
    head: J[of][value] by colouring, times the matrix (a structured seed: no identity is ever
    pushed through the matmul)."""
    matrix, y = compile_program(select(program, (head.matrix, head.value)), cancel=cancel).run(
        feeds, cancel
    )
    value, inner = _coloured_block(
        head.program, {**feeds, head.value: y}, of, head.value, plan, chunk_size, cancel
    )
    return value, np.asarray(inner @ (matrix.T if head.transposed else matrix))


def _with_data(pattern: sp.csr_array, data: np.ndarray) -> sp.csr_array:
    """The CSR array of `pattern`'s structure holding `data` (in its order): a shallow copy of
    the pattern with its data replaced. It skips the constructor's checks of the structure
    (most of the cost of a warm sparse result's assembly), which was checked when made. Its
    `indices` and `indptr` are the cached pattern's, read-only: the server serialises them, and
    `LocalClient` copies them before handing the result to its user."""
    out = copy.copy(pattern)
    out.data = data
    return out


def _pass_program(
    program: Program, of: str, wrt: str, forward: bool, batch: int, cancel: Cancel = None
) -> Derivative:
    """The derivative program of one pass of `batch` (co)tangents. One needs no batch axis,
    and the transform without a batch argument is the one other calls have cached (the
    program cache keys f(a) and f(a, None) apart)."""
    axis = (batch,) if batch > 1 else ()
    if forward:
        return jvp(program, (wrt,), (of,), *axis, cancel=cancel)
    return vjp(program, (of,), (wrt,), *axis, cancel=cancel)


def _seeds(d: Derivative, plan: ColourPlan, start: int, batch: int) -> np.ndarray:
    """The seeds of colours [start, start + batch): each the sum of its colour's unit vectors."""
    seed = d.program.types[d.seeds[0]]
    seeds = np.zeros((batch, plan.colours.size), seed.dtype)
    chosen = np.flatnonzero((plan.colours >= start) & (plan.colours < start + batch))
    seeds[plan.colours[chosen] - start, chosen] = 1
    return seeds.reshape(seed.shape)


@cached
def _seeded_pass(
    program: Program,
    of: str,
    wrt: str,
    plan: ColourPlan,
    start: int,
    batch: int,
    *,
    cancel: Cancel = None,
) -> Executable:
    """The pass of colours [start, start + batch) with its seeds bound as a constant: what
    depends on the seeds alone (the tangents of the linear ops next to wrt, or the cotangents
    next to of: slices, concatenations, scalings) is folded at compile time, so a warm pass
    runs only the work that depends on the inputs' values."""
    d = _pass_program(program, of, wrt, plan.forward, batch, cancel)
    seeds = _seeds(d, plan, start, batch)
    return Executable(bind(d.program, {d.seeds[0]: seeds}), cancel=cancel)


def _chunk(program: Program, of: str, wrt: str, plan: ColourPlan, chunk_size: int | None) -> int:
    """The colours one pass pushes (`chunk_rows` of the result's stored entries)."""
    return chunk_size or chunk_rows(program, (of,), (wrt,), plan.count, plan.pattern.nnz)


def _passes(
    program: Program,
    feeds: Arrays,
    of: str,
    wrt: str,
    plan: ColourPlan,
    step: int,
    starts: Sequence[int],
    cancel: Cancel,
) -> Iterator[tuple[int, np.ndarray | None, np.ndarray]]:
    """`_pass` of each chunk of `step` colours from each of `starts`; the value of `of` comes
    with the last chunk only, so that no older one lives through a pass."""
    for start in starts:
        batch = min(step, plan.count - start)
        # Yielded unnamed: a suspended generator holds nothing of a pass.
        yield _pass(program, feeds, of, wrt, plan, start, batch, start == starts[-1], cancel)


def _pass(
    program: Program,
    feeds: Arrays,
    of: str,
    wrt: str,
    plan: ColourPlan,
    start: int,
    batch: int,
    value: bool,
    cancel: Cancel,
) -> tuple[int, np.ndarray | None, np.ndarray]:
    """(batch, value of `of` if `value`, the stacked results flattened: colour * their width +
    index, from colour `start`) of one batched pass over colours [start, start + batch), each
    (co)tangent the sum of its colour's unit vectors: bound into the compiled pass when the
    seeds are small (`_seeded_pass`), else fed."""
    if batch * plan.colours.size <= FOLD_MAX_ELEMENTS:
        pass_ = _seeded_pass(program, of, wrt, plan, start, batch, cancel=cancel)
        out, compressed = pass_.run(feeds, cancel)
    else:
        d = _pass_program(program, of, wrt, plan.forward, batch, cancel)
        seeds = _seeds(d, plan, start, batch)
        out, compressed = compile_program(d.program, cancel=cancel).run(
            {**feeds, d.seeds[0]: seeds}, cancel
        )
        del seeds
    return batch, out if value else None, compressed.reshape(-1)


def _coloured_block(
    program: Program,
    feeds: Arrays,
    of: str,
    wrt: str,
    plan: ColourPlan,
    chunk_size: int | None,
    cancel: Cancel,
    part: Part = None,
) -> tuple[np.ndarray | None, sp.csr_array]:
    """(value of `of`, or None when nothing ran; J[of][wrt] as CSR (of.size, wrt.size)): one
    batched pass per chunk of colours; with a `part`, the entries of its chunks only."""
    types = program.types
    pattern = plan.pattern
    m, n = pattern.shape
    data = np.empty(pattern.nnz, types[of].dtype)
    read = m if plan.forward else n
    step = _chunk(program, of, wrt, plan, chunk_size)
    value = None
    starts = chunk_starts(plan.count, step, part)
    passes = _passes(program, feeds, of, wrt, plan, step, starts, cancel)
    for start in starts:
        # Not `zip(starts, passes)`: zip keeps its last result tuple for reuse, and with it
        # this chunk's results through the next pass (one colour of a 10^6 result, 8 MB).
        batch, value, compressed = next(passes)  # the value is the last chunk's (None before)
        if batch == plan.count:  # one chunk holds every entry
            # "clip" never clips (the plan's offsets are in range) and, unlike "raise", writes
            # straight into `out` without a buffer.
            np.take(compressed, plan.gather, out=data, mode="clip")
        else:
            which = (plan.gather >= start * read) & (plan.gather < (start + batch) * read)
            offsets = plan.gather[which]
            offsets -= start * read
            data[which] = compressed[offsets]
            del which, offsets
        del compressed
    if part is not None:  # only the entries of this share's chunks of colours
        first, stop = (starts[0], min(starts[-1] + step, plan.count)) if starts else (0, 0)
        mine = (plan.gather >= first * read) & (plan.gather < stop * read)
        rows = np.repeat(np.arange(m), np.diff(pattern.indptr))[mine]
        indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=m))))
        return value, sp.csr_array((data[mine], pattern.indices[mine], indptr), shape=(m, n))
    return value, _with_data(pattern, data)


def _structured(
    program: Program,
    feeds: Arrays,
    of: str,
    wrt: str,
    mode: str,
    passes: int,
    sparse: bool,
    chunk_size: int | None,
    cancel: Cancel,
    symmetric: bool,
    part: Part = None,
) -> tuple[np.ndarray | None, np.ndarray | sp.csr_array] | None:
    """(value of `of` or None, the block) through a linear head or by colouring, or None
    when neither saves half of the dense computation's `passes` and `sparse` is not asked.
    The chain rule at a linear head mixes the inner block's columns, so with a `part` the
    first share computes that block whole and the others leave it out."""
    shape = program.types[of].shape + program.types[wrt].shape
    head = linear_head(program, wrt) if of != wrt and not symmetric else None
    inner = head and colour_plan(head.program, of, head.value, mode, cancel=cancel)
    n = program.types[wrt].size
    if inner and 2 * inner.count <= min(passes, _colours_through_head(inner, n, mode)):
        if part is not None and part[0] > 0:
            empty = sp.csr_array((program.types[of].size, n), dtype=program.types[of].dtype)
            return None, empty if sparse else np.zeros(shape, program.types[of].dtype)
        value, flat = _through_linear_head(program, feeds, of, head, inner, chunk_size, cancel)
        if not sparse:
            return value, flat.reshape(shape)
        # On the detected pattern, numerically zero entries included.
        pattern = structural_pattern(program, of, wrt, cancel=cancel)
        data = flat[np.repeat(np.arange(flat.shape[0]), np.diff(pattern.indptr)), pattern.indices]
        return value, _with_data(pattern, data)
    plan = block_plan(program, of, wrt, mode, symmetric, cancel=cancel)
    if sparse or 2 * plan.count <= passes:
        value, block = _coloured_block(program, feeds, of, wrt, plan, chunk_size, cancel, part)
        return value, block if sparse else block.toarray().reshape(shape)
    return None


def jacobian(
    program: Program,
    inputs: Arrays,
    of: Sequence[str],
    wrt: Sequence[str],
    mode: str = "auto",
    chunk_size: int | None = None,
    cancel: Cancel = None,
    sparse: bool = False,
    symmetric: Collection[tuple[str, str]] = (),
    part: Part = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray | sp.csr_array]]]:
    """(values of `of`, J[of][wrt] with shape of.shape + wrt.shape), or with `sparse` as CSR
    arrays of shape (of.size, wrt.size). A block whose pattern needs at most half the passes
    of the dense computation (of MIN_PASSES_TO_COLOUR or more) is computed by colouring, and
    densified unless `sparse`. The (of, wrt) blocks in `symmetric` are known to be symmetric
    (a Hessian's, `hessian.py`): they are star-coloured and computed forward. With a `part`,
    only that share's entries (see the module docstring)."""
    check_targets(program, of, wrt)
    requested = mode
    mode = choose_mode(program, of, wrt, mode)
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise GraphError("", "chunk_size", f"must be a positive integer, got {chunk_size!r}")
    feeds = check_inputs(program, inputs)
    types = program.types
    values: dict[str, np.ndarray] = {}
    result: dict[str, dict[str, np.ndarray | sp.csr_array]] = {o: {} for o in of}
    dense: list[tuple[str, str]] = []
    for o in of:
        for w in wrt:
            passes = types[w].size if mode == "forward" else types[o].size
            found = None
            if sparse or passes >= MIN_PASSES_TO_COLOUR or is_diagonal(program, o, w):
                try:
                    found = _structured(
                        program,
                        feeds,
                        o,
                        w,
                        requested,
                        passes,
                        sparse,
                        chunk_size,
                        cancel,
                        (o, w) in symmetric,
                        part,
                    )
                except PatternTooLarge:
                    if sparse:  # asked for a sparse result of a dense block: over the limit
                        raise
                    # dense: colouring would not save passes, computed as dense below
            if found is None:
                empty = np.empty if part is None else np.zeros  # a share leaves the rest zero
                result[o][w] = empty(types[o].shape + types[w].shape, types[o].dtype)
                dense.append((o, w))
                continue
            value, result[o][w] = found
            if value is not None:
                values[o] = value
    if mode == "reverse":
        for o in dict.fromkeys(o for o, _ in dense):
            ws = [w for o2, w in dense if o2 == o]
            m = types[o].size
            for start, rows, value, grads in _reverse_blocks(
                program, feeds, o, ws, chunk_size, cancel, part
            ):
                values[o] = value
                for w in ws:
                    result[o][w].reshape(m, -1)[start : start + rows] = grads[w].reshape(rows, -1)
    else:
        for w in dict.fromkeys(w for _, w in dense):
            os_ = [o for o, w2 in dense if w2 == w]
            n = types[w].size
            step = chunk_size or chunk_rows(
                program, os_, (w,), n, n * sum(types[o].size for o in os_)
            )
            for start in chunk_starts(n, step, part):
                rows = min(step, n - start)
                d = jvp(program, (w,), tuple(os_), rows, cancel=cancel)
                seeds = _one_hot(start, rows, n, types[w].dtype).reshape((rows, *types[w].shape))
                out = compile_program(d.program, cancel=cancel).run(
                    {**feeds, d.seeds[0]: seeds}, cancel
                )
                for o, value, tangent in zip(os_, out, out[len(os_) :], strict=False):
                    values[o] = value
                    m = types[o].size
                    result[o][w].reshape(m, n)[:, start : start + rows] = tangent.reshape(rows, m).T
    missing = tuple(o for o in of if o not in values)
    if missing:  # only when there is nothing to differentiate (an empty wrt)
        values.update(
            zip(
                missing,
                compile_program(select(program, missing), cancel=cancel).run(feeds, cancel),
                strict=True,
            )
        )
    return values, result


def _reverse_blocks(
    program: Program,
    feeds: Arrays,
    of: str,
    wrt: Sequence[str],
    chunk_size: int | None,
    cancel: Cancel,
    part: Part = None,
) -> Iterator[tuple[int, int, np.ndarray, dict[str, np.ndarray]]]:
    """(first row, row count, value of `of`, {wrt: rows of J}) for consecutive row blocks
    (those of `part`)."""
    m = program.types[of].size
    n = sum(program.types[w].size for w in wrt)
    step = chunk_size or chunk_rows(program, (of,), wrt, m, m * n)
    for start in chunk_starts(m, step, part):
        rows = min(step, m - start)
        d = vjp(program, (of,), tuple(wrt), rows, cancel=cancel)
        seeds = _one_hot(start, rows, m, program.types[of].dtype)
        seeds = seeds.reshape((rows, *program.types[of].shape))
        out = compile_program(d.program, cancel=cancel).run({**feeds, d.seeds[0]: seeds}, cancel)
        yield start, rows, out[0], dict(zip(wrt, out[1:], strict=True))


def jacobian_rows(
    program: Program,
    inputs: Arrays,
    of: str,
    wrt: str,
    rows_per_block: int,
    cancel: Cancel = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Row blocks of J[of][wrt] (shape (rows,) + wrt.shape), computed in reverse mode one block
    at a time, so a Jacobian larger than memory for one message can be streamed."""
    feeds = check_inputs(program, inputs)
    for start, _, _, grads in _reverse_blocks(program, feeds, of, (wrt,), rows_per_block, cancel):
        yield start, grads[wrt]


def sparse_rows(
    program: Program,
    inputs: Arrays,
    of: str,
    wrt: str,
    plan: ColourPlan,
    bounds: Sequence[int],
    cancel: Cancel = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first row, end row, values) of J[of][wrt] computed by `plan` (`block_plan`), for each
    run of rows between consecutive `bounds` (0, ..., rows), in order: the values of the run's
    stored entries of `plan.pattern`, in CSR order, bit for bit those of
    `jacobian(sparse=True)`.

    No whole result is held, and nothing larger than it: the passes run chunk by chunk of
    colours, as the runs need them, and each run is yielded as soon as every chunk its entries
    are read from has run. A chunk's results are kept until no run left reads them when they
    are about as small as the entries read from them (a banded block's: a forward pass gives a
    column of every row, so its runs come after the last chunk, and the chunks are the values);
    otherwise the entries of the runs not yet sent are copied out (into one array, at most
    the values) and the chunk dropped. How
    early runs come depends on the colouring: a reverse pass gives whole rows, those of its
    colours (a diagonal or block-diagonal block: every run from one chunk)."""
    feeds = check_inputs(program, inputs)
    pattern, gather = plan.pattern, plan.gather
    read = pattern.shape[0] if plan.forward else pattern.shape[1]
    step = _chunk(program, of, wrt, plan, None)
    width = step * read  # the stacked results of one chunk
    dtype = program.types[of].dtype
    runs = list(itertools.pairwise(bounds))
    chunks = -(-plan.count // step)
    reads = np.zeros(chunks, np.int64)  # per chunk: the entries read from it
    # Per run, the first and last chunk its entries are read from (none: (chunks, -1)), found
    # for runs of about SLAB_ENTRIES entries at a time (a temporary array that size).
    entries = pattern.indptr[np.asarray(bounds)]
    firsts, lasts = np.full(len(runs), chunks), np.full(len(runs), -1)
    k = 0
    while k < len(runs):
        j = int(np.searchsorted(entries, entries[k] + SLAB_ENTRIES, side="right")) - 1
        j = min(max(j, k + 1), len(runs))
        chunk = gather[entries[k] : entries[j]] // width  # the chunk each entry is read from
        reads += np.bincount(chunk, minlength=chunks)
        some = np.flatnonzero(entries[k + 1 : j + 1] > entries[k:j])
        if some.size:  # runs tile the entries: a run's segment ends where the next one starts
            starts = entries[k + some] - entries[k]
            firsts[k + some] = np.minimum.reduceat(chunk, starts)
            lasts[k + some] = np.maximum.reduceat(chunk, starts)
        del chunk
        k = j
    spans = list(zip(firsts.tolist(), lasts.tolist(), strict=True))
    # needed[k]: the first chunk that run k or a later one reads; older chunks are dropped.
    needed = np.minimum.accumulate(firsts[::-1])[::-1]
    passes = _passes(program, feeds, of, wrt, plan, step, range(0, plan.count, step), cancel)
    kept: dict[int, np.ndarray] = {}  # chunk -> its results
    copied, base = None, 0  # the entries from `base` on, of the chunks not kept
    computed = 0
    for k, ((start, end), (first, last)) in enumerate(zip(runs, spans, strict=True)):
        for old in [c for c in kept if c < needed[k]]:
            del kept[old]
        lo, hi = pattern.indptr[start], pattern.indptr[end]
        while computed <= last:
            results = next(passes)[2]
            if results.size <= 2 * reads[computed]:
                kept[computed] = results
            else:  # the entries of this run and the later ones, at most the values
                if copied is None:
                    copied, base = np.empty(pattern.nnz - lo, dtype), lo
                _gather(copied[lo - base :], {computed: results}, gather[lo:], width)
            del results
            computed += 1
        values = np.empty(hi - lo, dtype) if copied is None else copied[lo - base : hi - base]
        _gather(
            values, {c: kept[c] for c in range(first, last + 1) if c in kept}, gather[lo:hi], width
        )
        yield start, end, values
        del values  # only the caller holds the run's values while it sends them


def _gather(
    into: np.ndarray, chunks: Mapping[int, np.ndarray], offsets: np.ndarray, width: int
) -> None:
    """Set the entries of `into` read from `chunks` (their results, by chunk): a plan's gather
    `offsets` of chunk c are in [c * width, (c + 1) * width)."""
    for c, results in chunks.items():
        mine = (offsets >= c * width) & (offsets < (c + 1) * width)
        if mine.all():
            np.take(results, offsets - c * width, out=into)
        elif mine.any():
            into[mine] = results[offsets[mine] - c * width]
