"""Jacobians in one batched pass per chunk, never a Python loop over rows.

Reverse mode pushes a batch of one-hot cotangents (rows of J), forward mode a batch of one-hot
tangents (columns of J). `mode="auto"` pushes whichever batch is smaller. Chunks bound the work
memory: peak memory stays near the result plus one chunk. When every op between `wrt` and `of`
is element-wise on unbroadcast values, J is diagonal and one unbatched JVP gives it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from gradserve.autodiff.api import Arrays, Cancel, check_inputs
from gradserve.autodiff.executor import compile_program
from gradserve.autodiff.ir import GraphError, Program
from gradserve.autodiff.registry import OPS
from gradserve.autodiff.transforms import active_values, jvp, select, vjp

MODES = ("auto", "forward", "reverse")
# Work per chunk, in elements of the widest value times the batch; see `chunk_rows`.
MAX_CHUNK_ELEMENTS = 1 << 22
MIN_CHUNK_ELEMENTS = 1 << 16


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
    widest = max((program.types[v].size for v in active_values(program, of, wrt)), default=1)
    budget = min(MAX_CHUNK_ELEMENTS, max(MIN_CHUNK_ELEMENTS, result_elements // 4))
    return max(1, min(batch, budget // max(widest, 1)))


def is_diagonal(program: Program, of: str, wrt: str) -> bool:
    """True when d of / d wrt is diagonal: only element-wise ops on wrt-shaped values between."""
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


def _one_hot(start: int, rows: int, width: int, dtype: str) -> np.ndarray:
    seeds = np.zeros((rows, width), dtype)
    seeds[np.arange(rows), np.arange(start, start + rows)] = 1
    return seeds


def jacobian(
    program: Program,
    inputs: Arrays,
    of: Sequence[str],
    wrt: Sequence[str],
    mode: str = "auto",
    chunk_size: int | None = None,
    cancel: Cancel = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """(values of `of`, J[of][wrt] with shape of.shape + wrt.shape)."""
    mode = choose_mode(program, of, wrt, mode)
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise GraphError("", "chunk_size", f"must be a positive integer, got {chunk_size!r}")
    feeds = check_inputs(program, inputs)
    types = program.types
    values: dict[str, np.ndarray] = {}
    result: dict[str, dict[str, np.ndarray]] = {o: {} for o in of}
    dense: list[tuple[str, str]] = []
    for o in of:
        for w in wrt:
            shape = types[o].shape + types[w].shape
            if is_diagonal(program, o, w):
                d = jvp(program, (w,), (o,))
                ones = np.ones(types[w].shape, types[w].dtype)
                values[o], tangent = compile_program(d.program).run(
                    {**feeds, d.seeds[0]: ones}, cancel
                )
                result[o][w] = np.zeros(shape, types[o].dtype)
                np.fill_diagonal(result[o][w].reshape(tangent.size, -1), tangent.ravel())
            else:
                result[o][w] = np.empty(shape, types[o].dtype)
                dense.append((o, w))
    if mode == "reverse":
        for o in dict.fromkeys(o for o, _ in dense):
            ws = [w for o2, w in dense if o2 == o]
            m = types[o].size
            for start, rows, value, grads in _reverse_blocks(
                program, feeds, o, ws, chunk_size, cancel
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
            for start in range(0, n, step):
                rows = min(step, n - start)
                d = jvp(program, (w,), tuple(os_), rows)
                seeds = _one_hot(start, rows, n, types[w].dtype).reshape((rows, *types[w].shape))
                out = compile_program(d.program).run({**feeds, d.seeds[0]: seeds}, cancel)
                for o, value, tangent in zip(os_, out, out[len(os_) :], strict=False):
                    values[o] = value
                    m = types[o].size
                    result[o][w].reshape(m, n)[:, start : start + rows] = tangent.reshape(rows, m).T
    missing = tuple(o for o in of if o not in values)
    if missing:  # only when there is nothing to differentiate (an empty wrt)
        values.update(
            zip(missing, compile_program(select(program, missing)).run(feeds, cancel), strict=True)
        )
    return values, result


def _reverse_blocks(
    program: Program,
    feeds: Arrays,
    of: str,
    wrt: Sequence[str],
    chunk_size: int | None,
    cancel: Cancel,
) -> Iterator[tuple[int, int, np.ndarray, dict[str, np.ndarray]]]:
    """(first row, row count, value of `of`, {wrt: rows of J}) for consecutive row blocks."""
    m = program.types[of].size
    n = sum(program.types[w].size for w in wrt)
    step = chunk_size or chunk_rows(program, (of,), wrt, m, m * n)
    for start in range(0, m, step):
        rows = min(step, m - start)
        d = vjp(program, (of,), tuple(wrt), rows)
        seeds = _one_hot(start, rows, m, program.types[of].dtype)
        seeds = seeds.reshape((rows, *program.types[of].shape))
        out = compile_program(d.program).run({**feeds, d.seeds[0]: seeds}, cancel)
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
