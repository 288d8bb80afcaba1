"""Every fact and convention of shared/reference/derivative-facts.md, one test each.

Each fact is checked against its closed form in both modes: `jacobian(mode="forward")` and
`jacobian(mode="reverse")`, and also row by row through `vjp_values` and column by column
through `jvp_values` (so that the diagonal fast path of `jacobian` cannot hide a rule's bug).
"""

from __future__ import annotations

import numpy as np
import pytest
from gradserve.autodiff import (
    GraphDef,
    InputDef,
    NodeDef,
    Program,
    evaluate,
    jacobian,
    jvp_values,
    vjp,
    vjp_values,
)


class G:
    """A tiny graph builder: g.x = g.input(...); y = g("sin", x); g.build(y)."""

    def __init__(self) -> None:
        self.inputs: list[InputDef] = []
        self.nodes: list[NodeDef] = []

    def input(self, name: str, shape=(), dtype: str = "float64") -> str:
        self.inputs.append(InputDef(name, dtype, tuple(shape)))
        return name

    def const(self, value, dtype: str = "float64") -> str:
        name = f"c{len(self.nodes)}"
        self.nodes.append(NodeDef(name, "constant", (), {"value": np.asarray(value, dtype)}))
        return name

    def __call__(self, op: str, *args, name: str | None = None, **attrs) -> str:
        names = tuple(a if isinstance(a, str) else self.const(a) for a in args)
        name = name or f"n{len(self.nodes)}"
        self.nodes.append(NodeDef(name, op, names, attrs))
        return name

    def build(self, *outputs: str) -> Program:
        return Program.build(GraphDef(tuple(self.inputs), tuple(self.nodes), outputs))


def jac_by_rows_and_columns(p: Program, feeds, of: str, wrt: str) -> tuple[np.ndarray, ...]:
    """J assembled from one vjp_values per output element and one jvp_values per input element."""
    y_shape, x_shape = p.types[of].shape, p.types[wrt].shape
    m, n = int(np.prod(y_shape)), int(np.prod(x_shape))
    rows = np.zeros((m, n))
    for i in range(m):
        u = np.zeros(m)
        u[i] = 1
        _, grads = vjp_values(p, feeds, {of: u.reshape(y_shape)}, [wrt])
        rows[i] = grads[wrt].ravel()
    cols = np.zeros((m, n))
    for j in range(n):
        v = np.zeros(n)
        v[j] = 1
        _, tangents = jvp_values(p, feeds, {wrt: v.reshape(x_shape)}, [of])
        cols[:, j] = tangents[of].ravel()
    return rows.reshape(y_shape + x_shape), cols.reshape(y_shape + x_shape)


def assert_jacobian(p: Program, feeds, of: str, wrt: str, expected, rtol=1e-12, atol=1e-12):
    """J[of][wrt] equals `expected` (closed form) in both modes, with the layout of.shape +
    wrt.shape, and never NaN."""
    expected = np.asarray(expected, dtype=np.float64)
    assert expected.shape == p.types[of].shape + p.types[wrt].shape
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, feeds, [of], [wrt], mode=mode)
        got = jac[of][wrt]
        assert got.shape == expected.shape, mode
        assert not np.any(np.isnan(got)), mode
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=mode)
    rows, cols = jac_by_rows_and_columns(p, feeds, of, wrt)
    np.testing.assert_allclose(rows, expected, rtol=rtol, atol=atol, err_msg="vjp rows")
    np.testing.assert_allclose(cols, expected, rtol=rtol, atol=atol, err_msg="jvp columns")


X = np.array([-2.0, -0.5, 0.3, 1.0, 2.5])  # points for scalar rules, applied element-wise


def scalar_fact(build, derivative, x=X):
    """Check d/dx f(x) = derivative(x), with f applied element-wise to a vector of points (the
    Jacobian is then diag(f'(x))) and at each point as a scalar (a 0-d Jacobian)."""
    g = G()
    y = build(g, g.input("x", x.shape))
    p = g.build(y)
    assert_jacobian(p, {"x": x}, y, "x", np.diag(derivative(x)))
    for xi in x[:2]:
        g = G()
        y = build(g, g.input("x"))
        assert_jacobian(g.build(y), {"x": np.array(xi)}, y, "x", derivative(xi))


# ---- scalar rules ------------------------------------------------------------------------------


def test_constant_rule_d_99_is_0():
    scalar_fact(lambda g, x: g("add", g.const(99.0), g("multiply", x, 0.0)), np.zeros_like)
    # And a constant output that does not depend on x at all.
    g = G()
    g.input("x", (3,))
    c = g.const(99.0)
    assert_jacobian(g.build(c), {"x": np.ones(3)}, c, "x", np.zeros(3))


def test_constant_multiple_rule_d_3x_is_3():
    scalar_fact(lambda g, x: g("multiply", 3.0, x), lambda x: np.full_like(x, 3.0))


def test_power_rule_d_x3_is_3x2():
    x = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 2.5])
    scalar_fact(lambda g, x: g("power", x, 3.0), lambda x: 3 * x**2, x)


def test_sum_rule_x2_plus_3x_is_2x_plus_3():
    scalar_fact(lambda g, x: g("add", g("square", x), g("multiply", 3.0, x)), lambda x: 2 * x + 3)


def test_difference_rule_x2_minus_3x_is_2x_minus_3():
    scalar_fact(
        lambda g, x: g("subtract", g("square", x), g("multiply", 3.0, x)), lambda x: 2 * x - 3
    )


def test_product_rule_x2_times_x_is_3x2():
    scalar_fact(lambda g, x: g("multiply", g("square", x), x), lambda x: 3 * x**2)


def test_chain_rule_ln_x2_is_2_over_x():
    scalar_fact(lambda g, x: g("log", g("square", x)), lambda x: 2 / x)


def test_9_times_x_plus_x2_is_9_plus_18x():
    scalar_fact(lambda g, x: g("multiply", 9.0, g("add", x, g("square", x))), lambda x: 9 + 18 * x)


# ---- partial derivatives, gradients, Jacobians -------------------------------------------------

XY = [(0.5, 1.5), (-1.2, 0.7), (2.0, -1.1)]


def _f_and_g():
    g = G()
    x, y = g.input("x"), g.input("y")
    f = g("multiply", g("multiply", 3.0, g("square", x)), y, name="f")  # 3x²y
    h = g("add", g("multiply", 2.0, x), g("power", y, 8.0), name="g")  # 2x + y⁸
    return g.build(f, h)


@pytest.mark.parametrize("x, y", XY)
def test_gradient_of_3x2y_is_6yx_3x2(x, y):
    p = _f_and_g()
    feeds = {"x": np.array(x), "y": np.array(y)}
    assert_jacobian(p, feeds, "f", "x", 6 * y * x)
    assert_jacobian(p, feeds, "f", "y", 3 * x**2)


@pytest.mark.parametrize("x, y", XY)
def test_gradient_of_2x_plus_y8_is_2_8y7(x, y):
    p = _f_and_g()
    feeds = {"x": np.array(x), "y": np.array(y)}
    assert_jacobian(p, feeds, "g", "x", 2.0)
    assert_jacobian(p, feeds, "g", "y", 8 * y**7, rtol=1e-12)


@pytest.mark.parametrize("x, y", XY)
def test_jacobian_stacks_the_gradients(x, y):
    expected = np.array([[6 * y * x, 3 * x**2], [2, 8 * y**7]])
    # As scalars: J assembled from jacobian(of=[f, g], wrt=[x, y]).
    p = _f_and_g()
    feeds = {"x": np.array(x), "y": np.array(y)}
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, feeds, ["f", "g"], ["x", "y"], mode=mode)
        got = np.array([[jac[o][w] for w in ("x", "y")] for o in ("f", "g")])
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    # As vectors: v = [x, y], out = [f(v), g(v)], a 2x2 Jacobian in one call.
    g = G()
    v = g.input("v", (2,))
    vx = g("reshape", g("slice", v, index="0:1"), shape=())
    vy = g("reshape", g("slice", v, index="1:2"), shape=())
    f = g("multiply", g("multiply", 3.0, g("square", vx)), vy)
    h = g("add", g("multiply", 2.0, vx), g("power", vy, 8.0))
    out = g("stack", f, h, axis=0)
    assert_jacobian(g.build(out), {"v": np.array([x, y])}, out, "v", expected)


def test_jacobian_of_identity_is_I():
    g = G()
    x = g.input("x", (4,))
    p = g.build(x)
    assert_jacobian(p, {"x": np.arange(4.0)}, x, "x", np.eye(4))
    g = G()
    x = g.input("x", (2, 3))
    p = g.build(x)
    assert_jacobian(p, {"x": np.ones((2, 3))}, x, "x", np.eye(6).reshape(2, 3, 2, 3))


# ---- element-wise binary operators: diagonal Jacobians -----------------------------------------

W_ = np.array([1.5, -2.0, 0.5, 3.0])
X_ = np.array([0.5, 1.25, -4.0, 2.0])


def _binary(op):
    g = G()
    y = g(op, g.input("w", (4,)), g.input("x", (4,)), name="y")
    return g.build(y), {"w": W_, "x": X_}


def test_elementwise_add_jacobians_are_I_and_I():
    p, feeds = _binary("add")
    assert_jacobian(p, feeds, "y", "w", np.eye(4))
    assert_jacobian(p, feeds, "y", "x", np.eye(4))


def test_elementwise_subtract_jacobians_are_I_and_minus_I():
    p, feeds = _binary("subtract")
    assert_jacobian(p, feeds, "y", "w", np.eye(4))
    assert_jacobian(p, feeds, "y", "x", -np.eye(4))


def test_elementwise_product_jacobians_are_diag_x_and_diag_w():
    p, feeds = _binary("multiply")
    assert_jacobian(p, feeds, "y", "w", np.diag(X_))
    assert_jacobian(p, feeds, "y", "x", np.diag(W_))


def test_elementwise_quotient_jacobians_are_diag_1_over_x_and_minus_w_over_x2():
    p, feeds = _binary("divide")
    assert_jacobian(p, feeds, "y", "w", np.diag(1 / X_))
    assert_jacobian(p, feeds, "y", "x", np.diag(-W_ / X_**2))


def test_broadcast_operand_gradient_is_sum_over_broadcast_axes():
    g = G()
    y = g("multiply", g.input("a", (3, 2)), g.input("b", (1, 2)), name="y")
    p = g.build(y)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((1, 2))
    u = rng.standard_normal((3, 2))
    _, grads = vjp_values(p, {"a": a, "b": b}, {"y": u}, ["a", "b"])
    np.testing.assert_allclose(grads["b"], np.sum(u * a, axis=0, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(grads["a"], u * b, rtol=1e-14)
    expected = np.zeros((3, 2, 1, 2))
    for i in range(3):
        for j in range(2):
            expected[i, j, 0, j] = a[i, j]
    assert_jacobian(p, {"a": a, "b": b}, "y", "b", expected)


# ---- scalar expansion --------------------------------------------------------------------------


def test_scalar_expansion_add_jacobians_are_I_and_ones():
    g = G()
    y = g("add", g.input("x", (4,)), g.input("z"), name="y")
    feeds = {"x": X_, "z": np.array(1.5)}
    p = g.build(y)
    assert_jacobian(p, feeds, "y", "x", np.eye(4))
    assert_jacobian(p, feeds, "y", "z", np.ones(4))  # a column: shape y.shape


def test_scalar_expansion_multiply_jacobians_are_Iz_and_x():
    g = G()
    y = g("multiply", g.input("x", (4,)), g.input("z"), name="y")
    feeds = {"x": X_, "z": np.array(1.5)}
    p = g.build(y)
    assert_jacobian(p, feeds, "y", "x", np.eye(4) * 1.5)
    assert_jacobian(p, feeds, "y", "z", X_)


# ---- reductions --------------------------------------------------------------------------------


def test_sum_gradient_is_a_row_of_ones():
    g = G()
    y = g("sum", g.input("x", (4,)), name="y")
    assert_jacobian(g.build(y), {"x": X_}, "y", "x", np.ones(4))


def test_sum_of_x_times_z_gradients_are_z_and_sum_x():
    g = G()
    y = g("sum", g("multiply", g.input("x", (4,)), g.input("z")), name="y")
    p = g.build(y)
    feeds = {"x": X_, "z": np.array(-0.75)}
    assert_jacobian(p, feeds, "y", "x", np.full(4, -0.75))
    assert_jacobian(p, feeds, "y", "z", np.sum(X_))


def test_dot_product_gradients_are_w_and_x():
    g = G()
    y = g("dot", g.input("w", (4,)), g.input("x", (4,)), name="y")
    p = g.build(y)
    feeds = {"w": W_, "x": X_}
    np.testing.assert_allclose(evaluate(p, feeds)["y"], W_ @ X_)
    assert_jacobian(p, feeds, "y", "x", W_)
    assert_jacobian(p, feeds, "y", "w", X_)


# ---- chain rules -------------------------------------------------------------------------------


def test_chain_rule_sin_x2_is_2x_cos_x2():
    scalar_fact(lambda g, x: g("sin", g("square", x)), lambda x: 2 * x * np.cos(x**2))


def test_chain_rule_ln_sin_x3_squared_is_6x2_cos_x3_over_sin_x3():
    scalar_fact(
        lambda g, x: g("log", g("square", g("sin", g("power", x, 3.0)))),
        lambda x: 6 * x**2 * np.cos(x**3) / np.sin(x**3),
        np.array([-1.3, -0.4, 0.2, 0.7, 1.1]),
    )


def test_total_derivative_x_plus_x2_is_1_plus_2x():
    scalar_fact(lambda g, x: g("add", x, g("square", x)), lambda x: 1 + 2 * x)
    # The naive single-path chain rule would give 2x: make sure we are not that.
    g = G()
    y = g("add", g.input("x"), g("square", "x"), name="y")
    _, jac = jacobian(g.build(y), {"x": np.array(0.7)}, ["y"], ["x"])
    assert jac["y"]["x"] != pytest.approx(2 * 0.7)


def test_total_derivative_sin_x_plus_x2():
    scalar_fact(
        lambda g, x: g("sin", g("add", x, g("square", x))),
        lambda x: np.cos(x + x**2) * (1 + 2 * x),
    )


def test_total_derivative_x_times_x2_is_3x2():
    scalar_fact(lambda g, x: g("multiply", x, g("square", x)), lambda x: 3 * x**2)


MASK = np.array([True, False])


def _g_of_x(g, x):
    """g(x) = [x², 3x] for a scalar x."""
    xb = g("broadcast_to", x, shape=(2,))
    return g("where", g.const(MASK, "bool"), g("square", xb), g("multiply", 3.0, xb))


def _f_of_g(g, v):
    """f(g) = [ln g₁, sin g₂]; the untaken ln of 3x < 0 must not leak."""
    return g("where", g.const(MASK, "bool"), g("log", v), g("sin", v))


@pytest.mark.parametrize("x", [0.4, -1.3, 2.0])
def test_vector_chain_rule_ln_x2_sin_3x(x):
    g = G()
    y = _f_of_g(g, _g_of_x(g, g.input("x")))
    p = g.build(y)
    expected = np.array([2 / x, 3 * np.cos(3 * x)])  # a column: shape y.shape
    assert_jacobian(p, {"x": np.array(x)}, y, "x", expected)
    # (∂f/∂g)(∂g/∂x) with ∂f/∂g = diag(1/g₁, cos g₂) and ∂g/∂x = [2x, 3]ᵀ.
    gv = np.array([x**2, 3 * x])
    pf = G()
    f = _f_of_g(pf, pf.input("g", (2,)))
    df_dg = np.diag([1 / gv[0], np.cos(gv[1])])
    assert_jacobian(pf.build(f), {"g": gv}, f, "g", df_dg)
    pg = G()
    gg = _g_of_x(pg, pg.input("x"))
    dg_dx = np.array([2 * x, 3.0])
    assert_jacobian(pg.build(gg), {"x": np.array(x)}, gg, "x", dg_dx)
    np.testing.assert_allclose(df_dg @ dg_dx, expected, rtol=1e-12)


def test_general_chain_rule_order_of_the_product_matters():
    # f(g(x)) with g(x) = A x and f = sin: J = diag(cos(A x)) A, not A diag(cos(A x)).
    rng = np.random.default_rng(1)
    a, x = rng.standard_normal((3, 3)), rng.standard_normal(3)
    g = G()
    y = g("sin", g("matmul", g.const(a), g.input("x", (3,))), name="y")
    expected = np.diag(np.cos(a @ x)) @ a
    assert_jacobian(g.build(y), {"x": x}, "y", "x", expected)
    assert not np.allclose(expected, a @ np.diag(np.cos(a @ x)))


# ---- the neuron and its loss -------------------------------------------------------------------

NW = np.array([0.5, -1.0, 2.0])
# Inputs chosen so that z = w·x + b is positive, negative and exactly zero (b = 0.25).
NEURON_XS = [np.array([1.0, 0.5, 0.75]), np.array([-1.0, 1.0, -0.5]), np.array([0.5, 0.5, 0.0])]
NB = 0.25


def _neuron():
    g = G()
    w, x, b = g.input("w", (3,)), g.input("x", (3,)), g.input("b")
    z = g("add", g("dot", w, x), b, name="z")
    g("relu", z, name="act")
    return g.build("z", "act")


@pytest.mark.parametrize("x", NEURON_XS)
def test_neuron_z_partials_are_x_and_1(x):
    p = _neuron()
    feeds = {"w": NW, "x": x, "b": np.array(NB)}
    assert_jacobian(p, feeds, "z", "w", x)
    assert_jacobian(p, feeds, "z", "b", 1.0)


@pytest.mark.parametrize("x", NEURON_XS)
def test_neuron_activation_partials_zero_where_z_le_0(x):
    p = _neuron()
    feeds = {"w": NW, "x": x, "b": np.array(NB)}
    z = NW @ x + NB
    assert_jacobian(p, feeds, "act", "w", x if z > 0 else np.zeros(3))
    assert_jacobian(p, feeds, "act", "b", 1.0 if z > 0 else 0.0)


def _loss_program(n, d):
    g = G()
    xs, ys = g.input("X", (n, d)), g.input("Y", (n,))
    w, b = g.input("w", (d,)), g.input("b")
    act = g("relu", g("add", g("matmul", xs, w), b))
    c = g("mean", g("square", g("subtract", ys, act)), name="C")
    return g.build(c)


def _loss_data():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((8, 3))
    xs[0] = [0.5, 0.5, 0.0]  # w·x + b = 0 exactly: the kink, counted as "≤ 0"
    ys = rng.standard_normal(8)
    z = xs @ NW + NB
    assert (z > 0).sum() >= 2 and (z < 0).sum() >= 2 and z[0] == 0
    return xs, ys


def _closed_form_loss_gradients(xs, ys, w, b):
    z = xs @ w + b
    e = z - ys
    on = z > 0
    n = len(ys)
    dw = (2 / n) * np.sum(np.where(on[:, None], e[:, None] * xs, 0.0), axis=0)
    db = (2 / n) * np.sum(np.where(on, e, 0.0))
    return dw, db


def test_neuron_mse_loss_gradients():
    xs, ys = _loss_data()
    p = _loss_program(*xs.shape)
    feeds = {"X": xs, "Y": ys, "w": NW, "b": np.array(NB)}
    c = np.mean((ys - np.maximum(0, xs @ NW + NB)) ** 2)
    np.testing.assert_allclose(evaluate(p, feeds)["C"], c, rtol=1e-14)
    dw, db = _closed_form_loss_gradients(xs, ys, NW, NB)
    assert_jacobian(p, feeds, "C", "w", dw)
    assert_jacobian(p, feeds, "C", "b", db)


def test_gradient_descent_step():
    xs, ys = _loss_data()
    p = _loss_program(*xs.shape)
    eta = 0.1
    feeds = {"X": xs, "Y": ys, "w": NW, "b": np.array(NB)}
    c0, grads = vjp_values(p, feeds, {"C": np.array(1.0)}, ["w", "b"])
    w1, b1 = NW - eta * grads["w"], NB - eta * grads["b"]
    dw, db = _closed_form_loss_gradients(xs, ys, NW, NB)
    np.testing.assert_allclose(w1, NW - eta * dw, rtol=1e-12)
    np.testing.assert_allclose(b1, NB - eta * db, rtol=1e-12)
    c1 = evaluate(p, {**feeds, "w": w1, "b": b1})["C"]
    assert c1 < c0["C"]


# ---- conventions -------------------------------------------------------------------------------


def test_convention_relu_derivative_at_0_is_0():
    scalar_fact(lambda g, x: g("relu", x), lambda x: (x > 0) * 1.0, np.array([0.0, -1.0, 1.0]))
    # d/dz max(0, z) written with maximum is a tie at z = 0, which splits: relu is the op
    # whose derivative at 0 is 0.


def test_convention_abs_derivative_at_0_is_0():
    scalar_fact(lambda g, x: g("abs", x), np.sign, np.array([0.0, -2.0, 3.0]))


def test_convention_sign_derivative_is_0_everywhere():
    scalar_fact(lambda g, x: g("sign", x), np.zeros_like, np.array([0.0, -2.0, 3.0, 1e-300]))


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_convention_maximum_minimum_tie_splits_half_each(op):
    g = G()
    y = g(op, g.input("a", (3,)), g.input("b", (3,)), name="y")
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0])
    win_a = (a > b) if op == "maximum" else (a < b)
    da = np.where(a == b, 0.5, win_a * 1.0)
    p = g.build(y)
    assert_jacobian(p, {"a": a, "b": b}, y, "a", np.diag(da))
    assert_jacobian(p, {"a": a, "b": b}, y, "b", np.diag(1 - da))
    # Same operand on both sides: maximum(x, x) has derivative ½ + ½ = 1.
    g = G()
    y = g(op, g.input("x", (2,)), "x", name="y")
    assert_jacobian(g.build(y), {"x": np.array([1.0, -2.0])}, y, "x", np.eye(2))


@pytest.mark.parametrize("op", ["max", "min"])
def test_convention_max_min_reduction_ties_split_evenly(op):
    g = G()
    y = g(op, g.input("x", (6,)), name="y")
    x = np.array([1.0, 3.0, 3.0, -2.0, 3.0, 0.0]) * (1 if op == "max" else -1)
    assert_jacobian(g.build(y), {"x": x}, y, "x", np.array([0, 1, 1, 0, 1, 0]) / 3)
    # Along an axis: each row splits among its own ties.
    g = G()
    y = g(op, g.input("x", (2, 3)), axis=(1,), name="y")
    x = np.array([[2.0, 2.0, 1.0], [0.0, 5.0, 4.0]]) * (1 if op == "max" else -1)
    expected = np.zeros((2, 2, 3))
    expected[0, 0] = [0.5, 0.5, 0]
    expected[1, 1] = [0, 1, 0]
    assert_jacobian(g.build(y), {"x": x}, y, "x", expected)


def test_convention_where_untaken_branch_contributes_exact_zero():
    x = np.array([-1.0, 0.0, 2.0])
    g = G()
    xin = g.input("x", (3,))
    v = g("where", g("greater", xin, 0.0), g("log", xin), 0.0, name="v")
    s = g("sum", v, name="s")
    p = g.build(s, v)
    feeds = {"x": x}
    _, grads = vjp_values(p, feeds, {"s": np.array(1.0)}, ["x"])
    np.testing.assert_array_equal(grads["x"], [0.0, 0.0, 0.5])  # exactly, no NaN
    assert_jacobian(p, feeds, "s", "x", [0.0, 0.0, 0.5], rtol=0, atol=0)
    assert_jacobian(p, feeds, "v", "x", np.diag([0.0, 0.0, 0.5]), rtol=0, atol=0)
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, feeds, ["s"], ["x"], mode=mode)
        np.testing.assert_array_equal(jac["s"]["x"], [0.0, 0.0, 0.5])


@pytest.mark.parametrize(
    "op, safe_domain",
    [
        ("log", lambda x: x > 0),
        ("sqrt", lambda x: x > 0),
        ("reciprocal", lambda x: x != 0),
        ("arcsin", lambda x: np.abs(x) < 1),
        ("arccos", lambda x: np.abs(x) < 1),
        ("arctanh", lambda x: np.abs(x) < 1),
        ("arccosh", lambda x: x > 1),
        ("log1p", lambda x: x > -1),
    ],
)
def test_convention_where_never_leaks_singular_derivatives(op, safe_domain):
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    mask = safe_domain(x)
    g = G()
    xin = g.input("x", (6,))
    v = g("where", g.const(mask, "bool"), g(op, xin), 0.0, name="v")
    p = g.build(v)
    eps = 1e-7
    hi = evaluate(p, {"x": x + eps})["v"]
    lo = evaluate(p, {"x": x - eps})["v"]
    expected = np.diag(np.where(mask, (hi - lo) / (2 * eps), 0.0))
    assert_jacobian(p, {"x": x}, v, "x", expected, rtol=1e-6, atol=1e-8)


def test_convention_where_divide_and_power_do_not_leak():
    # where(x != 0, 1/x, 0) and where(x > 0, x ** 0.5, 0) at 0.
    x = np.array([0.0, 2.0])
    g = G()
    xin = g.input("x", (2,))
    a = g("where", g("not_equal", xin, 0.0), g("divide", 1.0, xin), 0.0, name="a")
    b = g("where", g("greater", xin, 0.0), g("power", xin, 0.5), 0.0, name="b")
    p = g.build(a, b)
    assert_jacobian(p, {"x": x}, a, "x", np.diag([0.0, -0.25]), rtol=1e-14)
    assert_jacobian(p, {"x": x}, b, "x", np.diag([0.0, 0.25 * 2**0.5]), rtol=1e-14)


def _softmax_ref(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


LARGE = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -999.0]])
NEG_INF_ROW = np.array([[0.5, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])


def _reduction_program(op, shape, **attrs):
    g = G()
    y = g(op, g.input("x", shape), name="y", **attrs)
    return g.build(y)


def _assert_finite_gradients(p, x):
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, {"x": x}, ["y"], ["x"], mode=mode)
        assert np.all(np.isfinite(jac["y"]["x"])), mode
    u = np.ones(p.types["y"].shape)
    _, grads = vjp_values(p, {"x": x}, {"y": u}, ["x"])
    assert np.all(np.isfinite(grads["x"]))
    _, tangents = jvp_values(p, {"x": x}, {"x": np.ones(x.shape)}, ["y"])
    assert np.all(np.isfinite(tangents["y"]))


def test_convention_softmax_is_stable_and_all_neg_inf_row_has_finite_gradients():
    p = _reduction_program("softmax", (2, 3), axis=-1)
    s = _softmax_ref(LARGE)
    np.testing.assert_allclose(evaluate(p, {"x": LARGE})["y"], s, rtol=1e-14)
    expected = np.zeros((2, 3, 2, 3))
    for r in range(2):
        expected[r, :, r, :] = np.diag(s[r]) - np.outer(s[r], s[r])
    assert_jacobian(p, {"x": LARGE}, "y", "x", expected, rtol=1e-10, atol=1e-14)
    y = evaluate(p, {"x": NEG_INF_ROW})["y"]
    np.testing.assert_allclose(y[0], _softmax_ref(NEG_INF_ROW[:1])[0], rtol=1e-14)
    _assert_finite_gradients(p, NEG_INF_ROW)


def test_convention_log_softmax_is_stable_and_all_neg_inf_row_has_finite_gradients():
    p = _reduction_program("log_softmax", (2, 3), axis=-1)
    s = _softmax_ref(LARGE)
    ref = LARGE - LARGE.max(-1, keepdims=True)
    ref = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    np.testing.assert_allclose(evaluate(p, {"x": LARGE})["y"], ref, rtol=1e-12)
    expected = np.zeros((2, 3, 2, 3))
    for r in range(2):
        expected[r, :, r, :] = np.eye(3) - s[r][None, :]
    assert_jacobian(p, {"x": LARGE}, "y", "x", expected, rtol=1e-10, atol=1e-14)
    _assert_finite_gradients(p, NEG_INF_ROW)


def test_convention_logsumexp_is_stable_and_all_neg_inf_row_has_finite_gradients():
    p = _reduction_program("logsumexp", (2, 3), axis=(-1,))
    m = LARGE.max(-1)
    ref = m + np.log(np.exp(LARGE - m[:, None]).sum(-1))
    np.testing.assert_allclose(evaluate(p, {"x": LARGE})["y"], ref, rtol=1e-14)
    s = _softmax_ref(LARGE)
    expected = np.zeros((2, 2, 3))
    for r in range(2):
        expected[r, r] = s[r]
    assert_jacobian(p, {"x": LARGE}, "y", "x", expected, rtol=1e-10, atol=1e-14)
    y = evaluate(p, {"x": NEG_INF_ROW})["y"]
    assert y[1] == -np.inf
    _assert_finite_gradients(p, NEG_INF_ROW)


# ---- layout ------------------------------------------------------------------------------------


def test_layout_jacobian_shape_is_y_shape_plus_x_shape():
    g = G()
    y = g("multiply", g.input("x", (4,)), g.input("z", (2, 3, 1)), name="y")
    p = g.build(y)
    rng = np.random.default_rng(5)
    x, z = rng.standard_normal(4), rng.standard_normal((2, 3, 1))
    ex = np.zeros((2, 3, 4, 4))
    ez = np.zeros((2, 3, 4, 2, 3, 1))
    for i in range(2):
        for j in range(3):
            ex[i, j] = np.diag(np.full(4, z[i, j, 0]))
            ez[i, j, :, i, j, 0] = x
    assert_jacobian(p, {"x": x, "z": z}, y, "x", ex)
    assert_jacobian(p, {"x": x, "z": z}, y, "z", ez)


def test_layout_scalar_over_vector_is_a_row_of_shape_x():
    g = G()
    y = g("sum", g("sin", g.input("x", (2, 3))), name="y")
    x = np.arange(6.0).reshape(2, 3)
    assert_jacobian(g.build(y), {"x": x}, y, "x", np.cos(x))


def test_layout_vector_over_scalar_is_a_column_of_shape_y():
    g = G()
    y = g("multiply", g.input("s"), g.const(np.arange(6.0).reshape(2, 3)), name="y")
    p = g.build(y)
    assert_jacobian(p, {"s": np.array(2.0)}, y, "s", np.arange(6.0).reshape(2, 3))


# name: (build y from x, the mask where the branch is taken, closed-form d²y/dx²)
SECOND_ORDER_SINGULAR = {
    "log": (lambda g, x: g("log", x), lambda x: x > 0, lambda x: -1 / x**2),
    "log2": (lambda g, x: g("log2", x), lambda x: x > 0, lambda x: -1 / (x**2 * np.log(2))),
    "log10": (lambda g, x: g("log10", x), lambda x: x > 0, lambda x: -1 / (x**2 * np.log(10))),
    "log1p": (lambda g, x: g("log1p", x), lambda x: x > -1, lambda x: -1 / (1 + x) ** 2),
    "sqrt": (lambda g, x: g("sqrt", x), lambda x: x > 0, lambda x: -0.25 * x**-1.5),
    "reciprocal": (lambda g, x: g("reciprocal", x), lambda x: x > 0, lambda x: 2 / x**3),
    "divide": (lambda g, x: g("divide", 1.0, x), lambda x: x > 0, lambda x: 2 / x**3),
    "power": (lambda g, x: g("power", x, 0.5), lambda x: x > 0, lambda x: -0.25 * x**-1.5),
    "arcsin": (lambda g, x: g("arcsin", x), lambda x: abs(x) < 1, lambda x: x / (1 - x**2) ** 1.5),
    "arccos": (
        lambda g, x: g("arccos", x),
        lambda x: abs(x) < 1,
        lambda x: -x / (1 - x**2) ** 1.5,
    ),
    "arctanh": (
        lambda g, x: g("arctanh", x),
        lambda x: abs(x) < 1,
        lambda x: 2 * x / (1 - x**2) ** 2,
    ),
    "arccosh": (lambda g, x: g("arccosh", x), lambda x: x > 1, lambda x: -x / (x**2 - 1) ** 1.5),
    "hypot": (lambda g, x: g("hypot", x, 0.0), lambda x: x > 0, lambda x: 0 * x),
    "power_exponent": (lambda g, x: g("power", 0.0, x), lambda x: x > 0, lambda x: 0 * x),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER_SINGULAR))
def test_convention_where_second_derivatives_never_leak_nan(name):
    # The Hessian of sum(where(mask, f(x), 0)): exactly 0 where the branch is not taken, in
    # forward-over-reverse and reverse-over-reverse, even at f's singular points.
    build, taken, second = SECOND_ORDER_SINGULAR[name]
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    mask = np.array([bool(taken(v)) for v in x])
    g = G()
    xin = g.input("x", x.shape)
    s = g("sum", g("where", g.const(mask, "bool"), build(g, xin), 0.0), name="s")
    first = vjp(g.build(s), ("s",), ("x",))
    feeds = {"x": x, first.seeds[0]: np.array(1.0)}
    grad = first.results[0]
    with np.errstate(all="ignore"):
        expected = np.diag(np.where(mask, second(np.where(mask, x, 0.5)), 0.0))
    for mode in ("forward", "reverse"):
        _, hess = jacobian(first.program, feeds, [grad], ["x"], mode=mode)
        assert not np.any(np.isnan(hess[grad]["x"])), mode
        np.testing.assert_allclose(hess[grad]["x"], expected, rtol=1e-12, atol=0, err_msg=mode)
