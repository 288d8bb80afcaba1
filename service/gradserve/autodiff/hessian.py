"""Second derivatives of a scalar: Hessians (dense or sparse) and Hessian-vector products.

Both are forward-over-reverse, the order the JAX autodiff cookbook recommends: the gradient is
a program (`transforms.vjp`), and a Hessian is the Jacobian of that program, pushed forward.
`hessian` therefore inherits everything `jacobian` does: the pattern of the gradient program's
Jacobian is detected and coloured (a banded Hessian costs O(bandwidth) passes, dense or
sparse), and cached; its diagonal blocks d grad_w / d w are symmetric, so they are
star-coloured (`colouring.star_colouring`: an arrowhead Hessian takes 2 passes, not n).
`hvp` is one JVP of the gradient program: H is never formed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from gradserve.autodiff.api import Arrays, check_array, check_inputs
from gradserve.autodiff.executor import compile_program
from gradserve.autodiff.ir import Cancel, GraphError, Program
from gradserve.autodiff.jacobian import ColourPlan, Part, block_plan, jacobian, sparse_rows
from gradserve.autodiff.transforms import Derivative, gradient, hvp_transform, jvp, select


def _feeds(program: Program, d: Derivative, inputs: Arrays) -> dict[str, np.ndarray]:
    feeds = check_inputs(program, inputs)
    feeds[d.seeds[0]] = np.ones((), program.types[d.values[0]].dtype)
    return feeds


def hessian(
    program: Program,
    inputs: Arrays,
    of: str,
    wrt: Sequence[str],
    sparse: bool = False,
    cancel: Cancel = None,
    part: Part = None,
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray | sp.csr_array]]]:
    """(value of `of`, {wi: {wj: d2 of / d wi d wj}}): dense blocks of shape wi.shape +
    wj.shape, or with `sparse` CSR arrays of shape (wi.size, wj.size); with a `part`, that
    share of the gradient's Jacobian (`jacobian.jacobian`)."""
    d = gradient(program, of, wrt, cancel=cancel)
    feeds = _feeds(program, d, inputs)
    _, blocks = jacobian(
        d.program,
        feeds,
        d.results,
        tuple(wrt),
        mode="forward",
        cancel=cancel,
        sparse=sparse,
        symmetric=tuple(zip(d.results, wrt, strict=True)),
        part=part,
    )
    (value,) = compile_program(select(d.program, d.values), cancel=cancel).run(feeds, cancel)
    return value, {wi: blocks[g] for wi, g in zip(wrt, d.results, strict=True)}


def hvp(
    program: Program,
    inputs: Arrays,
    of: str,
    wrt: Sequence[str],
    v: Mapping[str, np.ndarray],
    cancel: Cancel = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(value of `of`, {w: (H v)[w]}), H the Hessian of the scalar `of` over `wrt` and v one
    vector per `wrt`: one forward-over-reverse pass."""
    d = gradient(program, of, wrt, cancel=cancel)
    for name in v:
        if name not in wrt:
            raise GraphError(name, "v", "not one of wrt")
    for w in wrt:
        if w not in v:
            raise GraphError(w, "v", "missing a vector for this wrt")
    h = hvp_transform(program, of, wrt, cancel=cancel)
    feeds = _feeds(program, d, inputs)
    for w, seed in zip(wrt, h.seeds, strict=True):
        feeds[seed] = check_array(w, v[w], program.types[w], "v")
    # Only the value of `of` and H v: the gradient and the directional derivative, outputs of
    # the hvp program, are not needed here, and `select` drops their work (for an MLP, one of
    # the four large products). results[0] is the tangent of `of` itself.
    value, *products = compile_program(select(h.program, (of, *h.results[1:])), cancel=cancel).run(
        feeds, cancel
    )
    return value, dict(zip(wrt, products, strict=True))


def hessian_rows(
    program: Program,
    inputs: Arrays,
    of: str,
    wrt: Sequence[str],
    rows: str,
    cols: str,
    rows_per_block: int,
    cancel: Cancel = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Row blocks of H[rows][cols] (shape (count,) + cols.shape, `rows` and `cols` among
    `wrt`), one forward-over-reverse pass per block, so that a Hessian larger than one message
    can be streamed. By symmetry, row r of H[rows][cols] is the tangent of the gradient by
    `cols` along the unit vector r of `rows`."""
    d = gradient(program, of, wrt, cancel=cancel)
    feeds = _feeds(program, d, inputs)
    grad = d.results[list(wrt).index(cols)]
    n = program.types[rows].size
    dtype = program.types[rows].dtype
    for start in range(0, n, rows_per_block):
        count = min(rows_per_block, n - start)
        t = jvp(d.program, (rows,), (grad,), count, cancel=cancel)
        seeds = np.zeros((count, n), dtype)
        seeds[np.arange(count), np.arange(start, start + count)] = 1
        seeds = seeds.reshape((count, *program.types[rows].shape))
        # The tangents alone: the gradient's value, the JVP's other output, is not needed.
        plan = compile_program(select(t.program, t.results), cancel=cancel)
        (tangents,) = plan.run({**feeds, t.seeds[0]: seeds}, cancel)
        yield start, tangents


def hessian_plans(
    program: Program, of: str, wrt: Sequence[str], cancel: Cancel = None
) -> dict[tuple[str, str], ColourPlan]:
    """{(wi, wj): the plan of d2 of / d wi d wj} as `hessian(sparse=True)` computes it (the
    block d grad_wi / d wj, star-coloured when wi is wj): detection and colouring only, so that
    its stored entries (the plans' patterns) are known before any pass."""
    d = gradient(program, of, wrt, cancel=cancel)
    return {
        (wi, wj): block_plan(d.program, g, wj, "forward", wi == wj, cancel=cancel)
        for wi, g in zip(wrt, d.results, strict=True)
        for wj in wrt
    }


def hessian_sparse_rows(
    program: Program,
    inputs: Arrays,
    of: str,
    wrt: Sequence[str],
    rows: str,
    cols: str,
    plan: ColourPlan,
    bounds: Sequence[int],
    cancel: Cancel = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """`jacobian.sparse_rows` of H[rows][cols] by its plan (`hessian_plans`): runs of CSR rows
    computed and yielded one after another, never the whole block."""
    d = gradient(program, of, wrt, cancel=cancel)
    grad = d.results[list(wrt).index(rows)]
    feeds = _feeds(program, d, inputs)
    return sparse_rows(d.program, feeds, grad, cols, plan, bounds, cancel)
