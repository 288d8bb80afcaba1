"""Hessians, Hessian-vector products and derivative programs.

Hessians are checked against closed forms (Rosenbrock), against the Jacobian of the gradient
computed independently (reverse over reverse, dense), for symmetry, and sparse against dense;
HVPs against H v; derivative programs by running them.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from gradserve.autodiff import (
    GraphDef,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    derivative_program,
    evaluate,
    hessian,
    hvp,
    jacobian,
    jvp_values,
    vjp,
    vjp_values,
)
from gradserve.autodiff.colouring import colour_columns, star_colouring
from gradserve.autodiff.jacobian import colour_plan, symmetric_plan
from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, programs

from bench.sparse import rosenbrock, rosenbrock_hessian


def test_rosenbrock_hessian_matches_its_closed_form_dense_and_sparse():
    x = np.random.default_rng(0).uniform(-2, 2, 30)
    p = rosenbrock(30)
    value, dense = hessian(p, {"x": x}, "f", ["x"])
    np.testing.assert_allclose(value, evaluate(p, {"x": x})["f"])
    expected = rosenbrock_hessian(x)
    np.testing.assert_allclose(dense["x"]["x"], expected, rtol=1e-12, atol=1e-12)
    _, sparse = hessian(p, {"x": x}, "f", ["x"], sparse=True)
    block = sparse["x"]["x"]
    assert isinstance(block, sp.csr_array) and block.nnz == 3 * 30 - 2
    np.testing.assert_array_equal(block.toarray(), dense["x"]["x"])


def test_banded_hessians_cost_passes_in_the_bandwidth_not_the_size():
    for n in (10, 1000):
        d = vjp(rosenbrock(n), ("f",), ("x",))
        assert colour_plan(d.program, d.results[0], "x", "forward").count == 3


def test_sparse_hessian_of_1e5_variables():
    n = 100_000
    x = np.random.default_rng(1).uniform(-2, 2, n)
    _, h = hessian(rosenbrock(n), {"x": x}, "f", ["x"], sparse=True)
    block = h["x"]["x"]
    assert block.nnz == 3 * n - 2
    main = np.r_[1200 * x[:-1] ** 2 - 400 * x[1:] + 2, 0] + np.r_[0, np.full(n - 1, 200.0)]
    np.testing.assert_allclose(block.diagonal(), main, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(block.diagonal(1), -400 * x[:-1], rtol=1e-12)
    np.testing.assert_allclose(block.diagonal(-1), -400 * x[:-1], rtol=1e-12)


def _scalar(case) -> tuple[Program, str]:
    """The case's program with sum(out) added: a scalar to take the Hessian of."""
    p = case.program
    graph = GraphDef(p.inputs, (*p.nodes, NodeDef("loss", "sum", (case.out,))), ("loss",))
    return Program.build(graph), "loss"


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_hessians_are_symmetric_and_the_jacobian_of_the_gradient(case, seed):
    p, loss = _scalar(case)
    wrt = list(p.input_names)
    _, h = hessian(p, case.feeds, loss, wrt)
    _, hs = hessian(p, case.feeds, loss, wrt, sparse=True)
    # Independently: the dense Jacobian of the gradient program, in reverse mode.
    d = vjp(p, (loss,), tuple(wrt))
    feeds = {**case.feeds, d.seeds[0]: np.ones(())}
    _, jac = jacobian(d.program, feeds, list(d.results), wrt, mode="reverse")
    rng = np.random.default_rng(seed)
    v = {w: rng.standard_normal(p.types[w].shape) for w in wrt}
    _, hv = hvp(p, case.feeds, loss, wrt, v)
    for wi, gi in zip(wrt, d.results, strict=True):
        si = p.types[wi].size
        product = np.zeros(si)
        for wj in wrt:
            sj = p.types[wj].size
            block = h[wi][wj]
            assert block.shape == p.types[wi].shape + p.types[wj].shape
            np.testing.assert_allclose(block, jac[gi][wj], rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(
                block.reshape(si, sj), h[wj][wi].reshape(sj, si).T, rtol=1e-9, atol=1e-11
            )
            # Sparse and dense may push different batches (BLAS sums in another order).
            np.testing.assert_allclose(
                hs[wi][wj].toarray(), block.reshape(si, sj), rtol=1e-14, atol=1e-16
            )
            product += block.reshape(si, sj) @ v[wj].ravel()
        np.testing.assert_allclose(hv[wi].ravel(), product, rtol=1e-9, atol=1e-10)


def test_hvp_of_rosenbrock_is_h_times_v_and_never_forms_h():
    n = 200
    x = np.random.default_rng(3).uniform(-2, 2, n)
    v = np.random.default_rng(4).standard_normal(n)
    p = rosenbrock(n)
    value, hv = hvp(p, {"x": x}, "f", ["x"], {"x": v})
    np.testing.assert_allclose(value, evaluate(p, {"x": x})["f"])
    np.testing.assert_allclose(hv["x"], rosenbrock_hessian(x) @ v, rtol=1e-11)
    program = derivative_program(p, "f", "x", "hvp")
    assert all(p2.size <= n for p2 in program.types.values())  # no n x n value anywhere


def test_hvp_of_an_mlp_is_the_gradients_difference_and_computes_no_gradient(monkeypatch):
    # H2's shape: of the hvp program's large products, the gradient's own (h1^T delta) feeds
    # only the gradient, an output that hvp does not return, so it is not run.
    hessian_module = sys.modules["gradserve.autodiff.hessian"]  # the package exports hessian()
    rng = np.random.default_rng(7)
    shapes = {"X": (32, 8), "W1": (8, 16), "W2": (16, 16), "W3": (16, 1), "Y": (32, 1)}
    feeds = {k: rng.standard_normal(s) / np.sqrt(s[0]) for k, s in shapes.items()}
    nodes = [
        ("z1", "matmul", ("X", "W1")),
        ("h1", "tanh", ("z1",)),
        ("z2", "matmul", ("h1", "W2")),
        ("h2", "tanh", ("z2",)),
        ("z3", "matmul", ("h2", "W3")),
        ("loss", "mse", ("z3", "Y")),
    ]
    p = Program.build(
        GraphDef(
            tuple(InputDef(k, "float64", s) for k, s in shapes.items()),
            tuple(NodeDef(*n) for n in nodes),
            ("loss",),
        )
    )
    v = rng.standard_normal(shapes["W2"])
    run = []
    real = hessian_module.compile_program
    monkeypatch.setattr(
        hessian_module, "compile_program", lambda q, **kw: run.append(q) or real(q, **kw)
    )
    value, hv = hvp(p, feeds, "loss", ["W2"], {"W2": v})
    np.testing.assert_allclose(value, evaluate(p, feeds)["loss"], rtol=1e-15)

    def grad(w2: np.ndarray) -> np.ndarray:
        return vjp_values(p, {**feeds, "W2": w2}, {"loss": np.array(1.0)}, ["W2"])[1]["W2"]

    eps = 1e-5
    central = (grad(feeds["W2"] + eps * v) - grad(feeds["W2"] - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv["W2"], central, rtol=1e-6, atol=1e-9)
    (program,) = run
    full = derivative_program(p, "loss", "W2", "hvp")
    assert len(program.outputs) == 2 and len(full.outputs) == 4
    matmuls = [sum(n.op == "matmul" for n in q.nodes) for q in (program, full)]
    assert matmuls[0] == matmuls[1] - 1


def test_derivative_programs_run_to_what_the_api_returns():
    p = rosenbrock(5)
    x = np.linspace(-1, 1, 5)
    t = np.arange(5.0)
    jvp_program = derivative_program(p, "f", "x", "jvp")
    seed = jvp_program.input_names[-1]
    out = evaluate(jvp_program, {"x": x, seed: t})
    _, tangents = jvp_values(p, {"x": x}, {"x": t}, ["f"])
    np.testing.assert_allclose(out[jvp_program.outputs[1]], tangents["f"])
    vjp_program = derivative_program(p, ["f"], ["x"], "vjp")
    out = evaluate(vjp_program, {"x": x, vjp_program.input_names[-1]: np.array(2.0)})
    _, grads = vjp_values(p, {"x": x}, {"f": np.array(2.0)}, ["x"])
    np.testing.assert_allclose(out[vjp_program.outputs[1]], grads["x"])
    hvp_program = derivative_program(p, "f", "x", "hvp")
    ct, tan = hvp_program.input_names[-2:]
    out = evaluate(hvp_program, {"x": x, ct: np.array(1.0), tan: t})
    np.testing.assert_allclose(out[hvp_program.outputs[-1]], rosenbrock_hessian(x) @ t, rtol=1e-12)
    assert "%" in repr(hvp_program)  # readable, one line per node


def test_second_order_errors_name_the_field():
    p = rosenbrock(4)
    x = {"x": np.zeros(4)}
    two = Program.build(
        GraphDef((InputDef("x", "float64", (2,)),), (NodeDef("y", "sin", ("x",)),), ("y",))
    )
    with pytest.raises(GraphError, match="y: of: must be a scalar"):
        hessian(two, {"x": np.zeros(2)}, "y", ["x"])
    with pytest.raises(GraphError, match="nope: wrt: not an input"):
        hessian(p, x, "f", ["nope"])
    with pytest.raises(GraphError, match="y: v: not one of wrt"):
        hvp(p, x, "f", ["x"], {"x": np.zeros(4), "y": np.zeros(4)})
    with pytest.raises(GraphError, match="x: v: missing a vector for this wrt"):
        hvp(p, x, "f", ["x"], {})
    with pytest.raises(GraphError, match=re.escape("x: v.shape: got [3], expected [4]")):
        hvp(p, x, "f", ["x"], {"x": np.zeros(3)})
    with pytest.raises(GraphError, match="kind: unknown kind 'hess'"):
        derivative_program(p, "f", "x", "hess")
    with pytest.raises(GraphError, match="y: of: must be a scalar"):
        derivative_program(two, "y", "x", "hvp")


# ---- symmetry: star colouring ------------------------------------------------------------------


def _graph(n: int, nodes: list[tuple]) -> Program:
    return Program.build(
        GraphDef(
            (InputDef("x", "float64", (n,)),),
            tuple(NodeDef(*node) for node in nodes),
            ("f",),
        )
    )


def banded(n: int, b: int) -> Program:
    """f = sum over k = 1..b of sum(sin(x[k:] * x[:-k])): a Hessian of half-bandwidth b."""
    nodes: list[tuple] = []
    for k in range(1, b + 1):
        nodes += [
            (f"a{k}", "slice", ("x",), {"index": f"{k}:"}),
            (f"b{k}", "slice", ("x",), {"index": f":-{k}"}),
            (f"p{k}", "multiply", (f"a{k}", f"b{k}")),
            (f"s{k}", "sin", (f"p{k}",)),
            (f"t{k}" if k > 1 else "f1", "sum", (f"s{k}",)),
        ]
        if k > 1:
            nodes.append((f"f{k}", "add", (f"f{k - 1}", f"t{k}")))
    nodes.append(("f", "multiply", (f"f{b}", "one")))
    nodes.insert(0, ("one", "constant", (), {"value": np.array(1.0)}))
    return _graph(n, nodes)


def arrowhead(n: int) -> Program:
    """f = sum_j (x_j - x_0)^2 x_j over j >= 1: x_0 meets every other variable."""
    return _graph(
        n,
        [
            ("x0", "slice", ("x",), {"index": "0"}),
            ("rest", "slice", ("x",), {"index": "1:"}),
            ("d", "subtract", ("rest", "x0")),
            ("d2", "square", ("d",)),
            ("t", "multiply", ("d2", "rest")),
            ("f", "sum", ("t",)),
        ],
    )


def arrowhead_hessian(x: np.ndarray) -> np.ndarray:
    h = np.zeros((x.size, x.size))
    j = np.arange(1, x.size)
    h[j, j] = 2 * x[1:] + 4 * (x[1:] - x[0])
    h[j, 0] = h[0, j] = -2 * x[1:] - 2 * (x[1:] - x[0])
    h[0, 0] = 2 * x[1:].sum()
    return h


def _recovers_directly(pattern: sp.csr_array, colours: np.ndarray, hubs: np.ndarray) -> bool:
    """Every entry (i, j) is alone in its pass where the plan reads it: column j's colour in row
    i, or (i a hub row, j not a hub) column i's colour in row j."""
    dense = pattern.toarray()
    for i, j in zip(*np.nonzero(dense), strict=True):
        row, col = (j, i) if hubs[i] and not hubs[j] else (i, j)
        if np.count_nonzero(dense[row] & (colours == colours[col])) != 1:
            return False
    return True


@pytest.mark.parametrize("b", [1, 2, 3, 5])
def test_banded_hessians_take_2b_plus_1_passes_and_are_exact(b):
    n = 40
    p = banded(n, b)
    d = vjp(p, ("f",), ("x",))
    plan = symmetric_plan(d.program, d.results[0], "x")
    assert plan.count == 2 * b + 1  # the lower bound: a row holds 2b + 1 entries
    colours, hubs = star_colouring(plan.pattern)
    assert _recovers_directly(plan.pattern, colours, hubs)
    x = np.random.default_rng(b).uniform(-1, 1, n)
    _, sparse = hessian(p, {"x": x}, "f", ["x"], sparse=True)
    # Independently: reverse over reverse, one row at a time, no colouring.
    feeds = {"x": x, d.seeds[0]: np.ones(())}
    _, dense = jacobian(d.program, feeds, [d.results[0]], ["x"], mode="reverse", chunk_size=1)
    np.testing.assert_allclose(sparse["x"]["x"].toarray(), dense[d.results[0]]["x"], rtol=1e-13)
    assert sparse["x"]["x"].nnz == n * (2 * b + 1) - b * (b + 1)


def test_an_arrowhead_hessian_takes_two_passes_not_n():
    n = 300
    p = arrowhead(n)
    d = vjp(p, ("f",), ("x",))
    of = d.results[0]
    assert colour_plan(d.program, of, "x", "forward").count == n  # distance-2: row 0 is full
    plan = symmetric_plan(d.program, of, "x")
    assert plan.count == 2
    colours, hubs = star_colouring(plan.pattern)
    assert hubs.nonzero()[0].tolist() == [0]
    assert _recovers_directly(plan.pattern, colours, hubs)
    x = np.random.default_rng(7).uniform(-1, 1, n)
    expected = arrowhead_hessian(x)
    _, sparse = hessian(p, {"x": x}, "f", ["x"], sparse=True)
    np.testing.assert_allclose(sparse["x"]["x"].toarray(), expected, rtol=1e-12, atol=1e-12)
    _, dense = hessian(p, {"x": x}, "f", ["x"])
    np.testing.assert_allclose(dense["x"]["x"], expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(st.integers(2, 40), st.integers(0, 3), st.floats(0.0, 0.3), st.integers(0, 2**16))
def test_star_colourings_recover_every_entry_of_random_symmetric_patterns(n, hubs, p, seed):
    rng = np.random.default_rng(seed)
    upper = rng.random((n, n)) < p
    upper[rng.integers(0, n, hubs)] = True  # dense rows (and, symmetrised, columns)
    dense = upper | upper.T | np.eye(n, dtype=bool)
    pattern = sp.csr_array(dense)
    colours, hub_mask = star_colouring(pattern)
    assert _recovers_directly(pattern, colours, hub_mask)
    assert colours.max() + 1 <= colour_columns(pattern).max() + 1  # never worse than distance-2
