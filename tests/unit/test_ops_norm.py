"""layer_norm and batch_norm (inference): forward against numpy formulas, JVP and VJP in every
operand against central differences in both modes, second derivatives, float32, errors."""

import numpy as np
import pytest
from gradcheck import (
    check_derivatives,
    check_graph_error,
    check_second_derivatives,
    op_program,
    program,
)
from gradserve.autodiff import evaluate, vjp_values

RNG = np.random.default_rng(0)


def ref_layer_norm(x, scale=None, bias=None, axis=-1, epsilon=1e-5):
    axes = tuple(range(axis % x.ndim, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)
    return y * (1 if scale is None else scale) + (0 if bias is None else bias)


LAYER = [
    ((3, 4), [], {}),
    ((3, 4), [(4,)], {}),
    ((3, 4), [(4,), (4,)], {"epsilon": 0.1}),
    ((2, 3, 4), [(3, 4), (4,)], {"axis": 1}),  # bias broadcasts over the normalised axes
    ((2, 3, 4), [(1, 4), (3, 1)], {"axis": -2}),
    ((5,), [(5,), (5,)], {"axis": 0}),
]


@pytest.mark.parametrize("x_shape,params,attrs", LAYER)
def test_layer_norm_forward_and_derivatives(x_shape, params, attrs):
    shapes = [x_shape, *params]
    feeds = {f"x{i}": RNG.standard_normal(s) for i, s in enumerate(shapes)}
    p = op_program("layer_norm", shapes, attrs)
    np.testing.assert_allclose(
        evaluate(p, feeds)["y"], ref_layer_norm(*feeds.values(), **attrs), atol=1e-12
    )
    check_derivatives(p, feeds, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("wrt", ["x0", "x1"])
def test_layer_norm_second_derivatives(wrt):
    p = program(
        {"x0": (2, 3), "x1": (3,), "x2": (3,)},
        [("h", "layer_norm", ["x0", "x1", "x2"]), ("y", "sin", ["h"])],
        ["y"],
    )
    feeds = {n: RNG.standard_normal(s) for n, s in (("x0", (2, 3)), ("x1", (3,)), ("x2", (3,)))}
    check_second_derivatives(p, feeds, wrt=wrt, rtol=1e-4, atol=1e-6)


def ref_batch_norm(x, scale, bias, mean, var, epsilon=1e-5):
    shape = (-1,) + (1,) * (x.ndim - 2)
    r = 1 / np.sqrt(var.reshape(shape) + epsilon)
    return (x - mean.reshape(shape)) * r * scale.reshape(shape) + bias.reshape(shape)


@pytest.mark.parametrize("x_shape", [(4, 3), (2, 3, 4), (2, 3, 2, 2)])
def test_batch_norm_forward_and_derivatives(x_shape):
    c = x_shape[1]
    feeds = {"x0": RNG.standard_normal(x_shape)}
    feeds |= {f"x{i}": RNG.standard_normal(c) for i in (1, 2, 3)}
    feeds["x4"] = RNG.uniform(0.5, 2.0, c)  # a variance
    p = op_program("batch_norm", [x_shape] + [(c,)] * 4, {"epsilon": 1e-3})
    np.testing.assert_allclose(
        evaluate(p, feeds)["y"], ref_batch_norm(*feeds.values(), epsilon=1e-3), atol=1e-12
    )
    check_derivatives(p, feeds, rtol=1e-5, atol=1e-7)


def test_batch_norm_second_derivatives():
    p = program(
        {f"x{i}": (2, 3, 2) if i == 0 else (3,) for i in range(5)},
        [("h", "batch_norm", [f"x{i}" for i in range(5)]), ("y", "tanh", ["h"])],
        ["y"],
    )
    feeds = {f"x{i}": RNG.standard_normal((2, 3, 2) if i == 0 else (3,)) for i in range(4)}
    feeds["x4"] = RNG.uniform(0.5, 2.0, 3)
    for wrt in ("x0", "x4"):
        check_second_derivatives(p, feeds, wrt=wrt, rtol=1e-4, atol=1e-6)


def test_float32_stays_float32():
    x = RNG.standard_normal((4, 8)).astype(np.float32)
    s = np.ones(8, np.float32)
    p = op_program("layer_norm", [(4, 8), (8,)], dtype="float32")
    y = evaluate(p, {"x0": x, "x1": s})["y"]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref_layer_norm(x, s), rtol=1e-5, atol=1e-5)
    _, grads = vjp_values(p, {"x0": x, "x1": s}, {"y": np.ones_like(y)}, ["x0", "x1"])
    assert grads["x0"].dtype == grads["x1"].dtype == np.float32
    q = op_program("batch_norm", [(2, 8)] + [(8,)] * 4, dtype="float32")
    y = evaluate(q, {"x0": x[:2], "x1": s, "x2": s, "x3": s, "x4": s})["y"]
    assert y.dtype == np.float32


@pytest.mark.parametrize(
    "op,shapes,attrs,field",
    [
        ("layer_norm", [(3, 4), (3,)], {}, "inputs[1]"),
        ("layer_norm", [(3, 4), (4,), (2, 4)], {}, "inputs[2]"),
        ("layer_norm", [(3, 4)], {"axis": 2}, "attrs.axis"),
        ("layer_norm", [()], {}, "inputs[0]"),
        ("layer_norm", [(3, 4)] * 4, {}, "inputs"),
        ("layer_norm", [(3, 4)], {"epsilon": -1.0}, "attrs.epsilon"),
        ("batch_norm", [(2, 3, 4), (4,), (3,), (3,), (3,)], {}, "inputs[1]"),
        ("batch_norm", [(2, 3, 4), (3,), (3,), (3,), (1,)], {}, "inputs[4]"),
        ("batch_norm", [(3,)] * 5, {}, "inputs[0]"),
    ],
)
def test_errors_name_the_node_and_field(op, shapes, attrs, field):
    check_graph_error(op, shapes, attrs, field)


def test_integer_operands_are_refused():
    check_graph_error("layer_norm", [(3, 4)], {}, "inputs[0]", dtype="int64")
