"""The pieces of streamed Jacobians and Hessians: the core's Hessian row blocks (StreamHessian's
dense rows) against the closed form, the core's CSR runs (`sparse_rows`, computed run by run)
against the whole sparse result, and the SDK's assembly of CSR runs of rows."""

from __future__ import annotations

import importlib
import itertools

import gradserve_client as gs
import numpy as np
import pytest
from gradserve.autodiff import GraphDef, InputDef, NodeDef, Program
from gradserve.autodiff.hessian import hessian, hessian_plans, hessian_rows, hessian_sparse_rows
from gradserve.rpc.codec import graph_from_proto
from gradserve_client._decode import JacobianAssembler
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto.tensor_codec import fill_tensor
from scipy import sparse as sp

RNG = np.random.default_rng(5)
# The module (the package's `jacobian` is the function).
jac = importlib.import_module("gradserve.autodiff.jacobian")


def coupled(n: int) -> Program:
    """f = sum(x**2 * y) + sum(sin x) * sum(y): H_xx = diag(2y - sin(x) sum(y)),
    H_xy = diag(2x) + cos(x) 1^T, H_yx = H_xy^T, H_yy = 0."""
    return Program.build(
        GraphDef(
            inputs=(InputDef("x", "float64", (n,)), InputDef("y", "float64", (n,))),
            nodes=(
                NodeDef("x2", "multiply", ("x", "x")),
                NodeDef("x2y", "multiply", ("x2", "y")),
                NodeDef("a", "sum", ("x2y",)),
                NodeDef("s", "sin", ("x",)),
                NodeDef("ss", "sum", ("s",)),
                NodeDef("sy", "sum", ("y",)),
                NodeDef("b", "multiply", ("ss", "sy")),
                NodeDef("f", "add", ("a", "b")),
            ),
            outputs=("f",),
        )
    )


def closed(x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    xy = np.diag(2 * x) + np.cos(x)[:, None] * np.ones(x.size)[None, :]
    return {
        "x": {"x": np.diag(2 * y - np.sin(x) * y.sum()), "y": xy},
        "y": {"x": xy.T, "y": np.zeros((x.size, x.size))},
    }


@pytest.mark.parametrize("per_block", [1, 3, 7, 50])
def test_hessian_rows_are_the_rows_of_the_hessian(per_block: int) -> None:
    n = 7
    program = coupled(n)
    x, y = RNG.normal(size=n), RNG.normal(size=n)
    want = closed(x, y)
    _, dense = hessian(program, {"x": x, "y": y}, "f", ["x", "y"])
    for a in "xy":
        for b in "xy":
            blocks = list(hessian_rows(program, {"x": x, "y": y}, "f", ["x", "y"], a, b, per_block))
            assert [start for start, _ in blocks] == list(range(0, n, per_block))
            assert all(rows.shape == (min(per_block, n - s), n) for s, rows in blocks)
            rows = np.concatenate([rows for _, rows in blocks])
            np.testing.assert_allclose(rows, want[a][b], atol=1e-12)
            np.testing.assert_allclose(rows, dense[a][b], atol=1e-12)


def test_hessian_rows_of_a_matrix_input_keep_its_shape() -> None:
    """f = sum(W**3): H = diag(6 W) over W flattened; each row has W's shape."""
    program = Program.build(
        GraphDef(
            inputs=(InputDef("W", "float64", (2, 3)),),
            nodes=(NodeDef("c", "multiply", ("W", "W")), NodeDef("d", "multiply", ("c", "W")),
                   NodeDef("f", "sum", ("d",))),
            outputs=("f",),
        )
    )  # fmt: skip
    W = RNG.normal(size=(2, 3))
    blocks = list(hessian_rows(program, {"W": W}, "f", ["W"], "W", "W", 4))
    assert [rows.shape for _, rows in blocks] == [(4, 2, 3), (2, 2, 3)]
    rows = np.concatenate([rows for _, rows in blocks]).reshape(6, 6)
    np.testing.assert_allclose(rows, np.diag(6 * W.ravel()), atol=1e-12)


# ---- the core's CSR runs ----------------------------------------------------------------------


def _program(graph: gs.Graph) -> Program:
    return Program.build(graph_from_proto(graph.to_proto(), max_nodes=1000, max_elements=10**6))


def _chain(n: int) -> Program:
    """r = [x_{i+1}**2 - x_i x_{i+2}, sum(x)]: a tridiagonal Jacobian and one dense row."""
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    t = x[1:-1] ** 2 - x[:-2] * x[2:]
    g.output("t", t)
    g.output("r", gs.concatenate([t, gs.sum(x, axis=0, keepdims=True)], axis=0))
    return _program(g)


def _csr(plan: jac.ColourPlan, runs: list[tuple[int, int, np.ndarray]]) -> sp.csr_array:
    """The runs as one CSR array on the plan's pattern, checking that they tile its rows."""
    assert [start for start, _, _ in runs] == [0] + [end for _, end, _ in runs[:-1]]
    assert runs[-1][1] == plan.pattern.shape[0]
    p = plan.pattern
    for start, end, values in runs:
        assert values.shape == (p.indptr[end] - p.indptr[start],)
    data = np.concatenate([values for _, _, values in runs])
    return sp.csr_array((data, p.indices, p.indptr), shape=p.shape)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("of", ["r", "t"])
@pytest.mark.parametrize("per_run", [1, 7, 1000])
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_sparse_rows_are_the_sparse_jacobian_bit_for_bit(
    mode: str, of: str, per_run: int, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run size (one row, a few, all) in both directions, and chunks of the default
    size, one or two colours (the forward plan of `t` reads every colour a row, and keeps its
    chunks; the dense row of `r` makes its forward chunks larger than the entries read from
    them, so that their entries are copied out). The plan is read 11 entries at a time, so
    that runs span several slabs, and a slab several runs."""
    monkeypatch.setattr(jac, "SLAB_ENTRIES", 11)
    if chunk is not None:
        monkeypatch.setattr(jac, "chunk_rows", lambda *args: chunk)
    n = 60
    program = _chain(n)
    x = RNG.normal(size=n)
    rows = program.types[of].size
    plan = jac.block_plan(program, of, "x", mode)
    _, whole = jac.jacobian(program, {"x": x}, [of], ["x"], mode, sparse=True)
    bounds = sorted({0, rows, *range(0, rows, per_run)})
    got, want = (
        _csr(plan, list(jac.sparse_rows(program, {"x": x}, of, "x", plan, bounds))),
        whole[of]["x"],
    )
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)  # the same passes: bit for bit


def test_a_run_comes_as_soon_as_the_chunks_it_reads_have_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reverse mode on a bidiagonal Jacobian: rows alternate between two colours, one chunk
    each. The first run (row 0) needs the first pass only; the whole result, both."""
    n = 50
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("y", x[1:] * x[:-1])
    program = _program(g)
    passes: list[int] = []
    one_pass = jac._pass

    def counted(*args: object) -> object:
        passes.append(1)
        return one_pass(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(jac, "_pass", counted)
    monkeypatch.setattr(jac, "chunk_rows", lambda *a: 1)  # one colour a pass
    plan = jac.block_plan(program, "y", "x", "reverse")
    assert (plan.forward, plan.count) == (False, 2)
    x = RNG.normal(size=n)
    runs = jac.sparse_rows(program, {"x": x}, "y", "x", plan, list(range(n)))
    start, end, values = next(runs)
    assert (start, end, len(passes)) == (0, 1, 1)
    np.testing.assert_array_equal(values, [x[1], x[0]])  # d y0 / d (x0, x1)
    rest = list(runs)
    assert len(passes) == 2 and len(rest) == n - 2


def test_hessian_sparse_rows_are_the_sparse_hessian() -> None:
    n = 9
    program = coupled(n)
    at = {"x": RNG.normal(size=n), "y": RNG.normal(size=n)}
    _, whole = hessian(program, at, "f", ["x", "y"], sparse=True)
    plans = hessian_plans(program, "f", ["x", "y"])
    for (a, b), plan in plans.items():
        assert plan.pattern.nnz == whole[a][b].nnz  # the bound is known before any pass
        runs = list(hessian_sparse_rows(program, at, "f", ["x", "y"], a, b, plan, [0, 4, n]))
        np.testing.assert_array_equal(_csr(plan, runs).toarray(), whole[a][b].toarray())


def _run(start: int, matrix: sp.csr_array, shape: tuple[int, ...]) -> pb.JacobianRowBlock:
    block = pb.JacobianRowBlock(of="y", wrt="x", shape=shape, row_start=start,
                                row_count=matrix.shape[0])  # fmt: skip
    block.sparse.rows, block.sparse.cols = matrix.shape
    fill_tensor(block.sparse.indptr, matrix.indptr.astype(np.int64))
    fill_tensor(block.sparse.indices, matrix.indices.astype(np.int64))
    fill_tensor(block.sparse.values, matrix.data)
    return block


def _runs(matrix: sp.csr_array, bounds: list[int], shape: tuple[int, ...]) -> list:
    return [_run(s, sp.csr_array(matrix[s:e]), shape) for s, e in itertools.pairwise(bounds)]


def test_csr_runs_assemble_into_one_csr_array_in_any_arrival_order() -> None:
    J = sp.random_array((40, 30), density=0.1, format="csr", rng=RNG)
    runs = _runs(J, [0, 5, 6, 19, 40], (40, 30))
    assembler = JacobianAssembler()
    for block in runs[::-1]:
        assembler.add(block)
    got = assembler.result(["y"], ["x"])["y"]["x"]
    assert isinstance(got, sp.csr_array) and got.shape == (40, 30)
    np.testing.assert_array_equal(got.toarray(), J.toarray())


def test_csr_runs_of_a_matrix_shaped_output_take_the_flattened_shape() -> None:
    J = sp.random_array((6, 8), density=0.3, format="csr", rng=RNG)
    assembler = JacobianAssembler()
    for block in _runs(J, [0, 4, 6], (2, 3, 8)):
        assembler.add(block)
    np.testing.assert_array_equal(assembler.result(["y"], ["x"])["y"]["x"].toarray(), J.toarray())


def test_a_stream_missing_rows_is_data_loss() -> None:
    J = sp.random_array((10, 10), density=0.3, format="csr", rng=RNG)
    runs = _runs(J, [0, 3, 7, 10], (10, 10))
    short = JacobianAssembler()
    for block in runs[:2]:
        short.add(block)
    with pytest.raises(gs.DataLoss, match="before all of dy/dx"):
        short.result(["y"], ["x"])
    gap = JacobianAssembler()
    for block in (runs[0], runs[1], runs[1]):  # enough rows, but rows 3..6 twice, 7..9 never
        gap.add(block)
    with pytest.raises(gs.DataLoss, match="not consecutive"):
        gap.result(["y"], ["x"])


def test_a_row_block_in_an_unknown_representation_is_an_error() -> None:
    with pytest.raises(gs.GradserveError, match="upgrade gradserve_client"):
        JacobianAssembler().add(pb.JacobianRowBlock(of="y", wrt="x", shape=[2, 2], row_count=2))


def test_dense_rows_where_a_sparse_result_was_asked_are_an_error() -> None:
    """An older server ignores `structured` on the stream: the SDK says so instead of handing
    back an ndarray where a csr_array was asked for."""
    block = pb.JacobianRowBlock(of="y", wrt="x", shape=[2, 2], row_count=2)
    fill_tensor(block.rows, np.eye(2))
    assembler = JacobianAssembler()
    assembler.add(block)
    np.testing.assert_array_equal(assembler.result(["y"], ["x"])["y"]["x"], np.eye(2))
    with pytest.raises(gs.GradserveError, match="older than this SDK"):
        assembler.result(["y"], ["x"], sparse=True)
