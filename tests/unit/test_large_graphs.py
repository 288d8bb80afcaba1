"""A 100,000-node chain validates, differentiates and runs with no recursion anywhere.

The recursion limit is lowered to 200 while the core works, so any recursive walk (validation,
the transforms, the executor, the Jacobian) fails loudly instead of passing by luck.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from gradserve.autodiff import (
    GraphDef,
    InputDef,
    NodeDef,
    Program,
    evaluate,
    jacobian,
    jvp,
    jvp_values,
    vjp,
    vjp_values,
)
from gradserve.autodiff.executor import compile_program

N = 100_000
SHORT = 10_000
C = 0.9999  # sin then multiply by C keeps the values and derivatives in range
X = np.array([0.3, -0.7, 1.1])


@pytest.fixture
def low_recursion_limit():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def chain_graph(n: int) -> GraphDef:
    """x -> sin -> *C -> sin -> *C ... (n nodes, plus one constant), output 'y'."""
    nodes = [NodeDef("c", "constant", (), {"value": np.array(C)})]
    prev = "x"
    for i in range(n):
        name = "y" if i == n - 1 else f"n{i}"
        if i % 2 == 0:
            nodes.append(NodeDef(name, "sin", (prev,)))
        else:
            nodes.append(NodeDef(name, "multiply", (prev, "c")))
        prev = name
    return GraphDef((InputDef("x", "float64", X.shape),), tuple(nodes), ("y",))


def chain_reference(n: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, d value / dx element-wise), computed by a plain loop."""
    v, d = x.copy(), np.ones_like(x)
    for i in range(n):
        if i % 2 == 0:
            d = d * np.cos(v)
            v = np.sin(v)
        else:
            d = d * C
            v = v * C
    return v, d


class Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[label] = time.perf_counter() - start
        return out


def test_100k_chain_validates_differentiates_and_runs(low_recursion_limit, capsys):
    t = Timer()
    graph = t("build graphdef", chain_graph, N)
    p = t("Program.build", Program.build, graph)
    assert len(p.nodes) == N + 1 and p.types["y"].shape == X.shape
    d_rev = t("vjp transform", vjp, p, ("y",), ("x",))
    d_fwd = t("jvp transform", jvp, p, ("x",), ("y",))
    assert len(d_rev.program.nodes) > N and len(d_fwd.program.nodes) > N
    t("compile", compile_program, p)

    value, deriv = chain_reference(N, X)
    out = t("evaluate", evaluate, p, {"x": X})
    np.testing.assert_allclose(out["y"], value, rtol=1e-10)

    u = np.array([1.0, -2.0, 0.5])
    _, grads = t("vjp_values", vjp_values, p, {"x": X}, {"y": u}, ["x"])
    np.testing.assert_allclose(grads["x"], u * deriv, rtol=1e-8)
    _, tangents = t("jvp_values", jvp_values, p, {"x": X}, {"x": u}, ["y"])
    np.testing.assert_allclose(tangents["y"], u * deriv, rtol=1e-8)
    for mode in ("forward", "reverse"):
        _, jac = t(f"jacobian {mode}", jacobian, p, {"x": X}, ["y"], ["x"], mode=mode)
        np.testing.assert_allclose(jac["y"]["x"], np.diag(deriv), rtol=1e-8, atol=1e-300)
    with capsys.disabled():
        total = sum(t.times.values())
        print(
            f"\n100k chain (total {total:.2f} s): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in t.times.items())
        )


def test_second_derivative_of_a_10k_chain(low_recursion_limit, capsys):
    t = Timer()
    p = t("Program.build", Program.build, chain_graph(SHORT))
    first = t("vjp transform", vjp, p, ("y",), ("x",))
    feeds = {"x": X, first.seeds[0]: np.ones(X.shape)}
    grad = first.results[0]
    # The Hessian of sum(y): diagonal, d²y/dx² element-wise.
    _, hess_r = t(
        "hessian reverse-over-reverse",
        jacobian,
        first.program,
        feeds,
        [grad],
        ["x"],
        mode="reverse",
    )
    _, hess_f = t(
        "hessian forward-over-reverse",
        jacobian,
        first.program,
        feeds,
        [grad],
        ["x"],
        mode="forward",
    )
    np.testing.assert_allclose(hess_r[grad]["x"], hess_f[grad]["x"], rtol=1e-10, atol=1e-300)
    h = 1e-5
    _, d_hi = chain_reference(SHORT, X + h)
    _, d_lo = chain_reference(SHORT, X - h)
    np.testing.assert_allclose(np.diag(hess_r[grad]["x"]), (d_hi - d_lo) / (2 * h), rtol=1e-5)
    with capsys.disabled():
        print(
            "\n10k chain second derivative: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in t.times.items())
        )


def test_10k_chain_batched_jacobians_both_modes(low_recursion_limit):
    # Ending in a sum, the Jacobian is not diagonal: each mode pushes a real batch.
    g = chain_graph(SHORT)
    nodes = (*g.nodes, NodeDef("s", "sum", ("y",)), NodeDef("z", "multiply", ("y", "s")))
    p = Program.build(GraphDef(g.inputs, nodes, ("z",)))
    value, deriv = chain_reference(SHORT, X)
    total = value.sum()
    expected = np.diag(deriv * total) + np.outer(value, deriv)
    for mode in ("forward", "reverse"):
        for chunk in (None, 1):
            _, jac = jacobian(p, {"x": X}, ["z"], ["x"], mode=mode, chunk_size=chunk)
            np.testing.assert_allclose(jac["z"]["x"], expected, rtol=1e-8, err_msg=mode)


def test_wide_fan_in_and_deep_tree_without_recursion(low_recursion_limit):
    # x used by 10,000 nodes, summed pairwise down a deep left-leaning tree of adds.
    nodes = []
    prev = None
    for i in range(10_000):
        nodes.append(NodeDef(f"s{i}", "sin" if i % 2 else "cos", ("x",)))
        if prev is None:
            prev = f"s{i}"
        else:
            nodes.append(NodeDef(f"a{i}", "add", (prev, f"s{i}")))
            prev = f"a{i}"
    p = Program.build(GraphDef((InputDef("x", "float64", X.shape),), tuple(nodes), (prev,)))
    _, grads = vjp_values(p, {"x": X}, {prev: np.ones(3)}, ["x"])
    expected = 5_000 * (np.cos(X) - np.sin(X))
    np.testing.assert_allclose(grads["x"], expected, rtol=1e-9)
