"""Reductions: forward against numpy, derivatives against central differences, conventions."""

import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, op_program
from gradserve.autodiff import GraphError, evaluate, jacobian, jvp_values, vjp_values

REDUCTIONS = ["sum", "mean", "max", "min", "prod", "var", "std", "logsumexp"]

# (shape, attrs): negative, multiple and absent axes, with and without keepdims.
CASES = [
    ((5,), {}),
    ((5,), {"axis": [0], "keepdims": 1}),
    ((3, 4), {"axis": [1]}),
    ((3, 4), {"axis": [-2], "keepdims": 1}),
    ((3, 4), {"axis": [0, -1]}),
    ((2, 3, 4), {"axis": [0, 2], "keepdims": 1}),
    ((2, 3, 4), {"axis": [-1, 1]}),
    ((2, 3, 2), {"keepdims": 1}),
    ((), {}),
]


def sample(name, shape, seed=0):
    rng = np.random.default_rng(seed)
    if name == "prod":  # away from 0 and of both signs, so the values stay O(1)
        return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    return rng.standard_normal(shape)


def numpy_reduction(name, x, attrs):
    axis = tuple(attrs["axis"]) if "axis" in attrs else None
    keepdims = bool(attrs.get("keepdims", 0))
    kw = {"ddof": attrs["ddof"]} if "ddof" in attrs else {}
    if name == "logsumexp":
        m = np.max(x, axis=axis, keepdims=True)
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else np.squeeze(out, axis=axis)
    return getattr(np, name)(x, axis=axis, keepdims=keepdims, **kw)


def ones_grad(name, x, attrs, dtype="float64"):
    """The gradient of sum(op(x)) via one VJP."""
    p = op_program(name, [x.shape], attrs, dtype)
    _, grads = vjp_values(p, {"x0": x}, {"y": np.ones(p.types["y"].shape, dtype)}, ["x0"])
    return grads["x0"]


@pytest.mark.parametrize("shape,attrs", CASES)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_forward_matches_numpy(name, shape, attrs):
    x = sample(name, shape)
    got = evaluate(op_program(name, [shape], attrs), {"x0": x})["y"]
    want = numpy_reduction(name, x, attrs)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("shape,attrs", CASES)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_derivatives(name, shape, attrs):
    check_derivatives(op_program(name, [shape], attrs), {"x0": sample(name, shape)})


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("attrs", [{"ddof": 1}, {"axis": [-1], "ddof": 2, "keepdims": 1}])
def test_var_std_ddof(name, attrs):
    x = sample(name, (3, 4))
    p = op_program(name, [(3, 4)], attrs)
    np.testing.assert_allclose(evaluate(p, {"x0": x})["y"], numpy_reduction(name, x, attrs))
    check_derivatives(p, {"x0": x})


@pytest.mark.parametrize(
    "shape,attrs", [((3, 4), {"axis": [1]}), ((2, 3), {}), ((2, 2, 3), {"axis": [0, -1]})]
)
@pytest.mark.parametrize("name", ["sum", "mean", "var", "std", "logsumexp", "max"])
def test_second_derivatives(name, shape, attrs):
    check_second_derivatives(op_program(name, [shape], attrs), {"x0": sample(name, shape, 3)})


def test_var_second_derivative_with_ddof():
    p = op_program("var", [(2, 4)], {"axis": [-1], "ddof": 1})
    check_second_derivatives(p, {"x0": sample("var", (2, 4), 4)})


# ---- conventions -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("error")
def test_max_min_ties_split_evenly():
    x = np.array([1.0, 3.0, 3.0, 2.0])
    np.testing.assert_array_equal(ones_grad("max", x, {}), [0, 0.5, 0.5, 0])
    x = np.array([[4.0, 1.0, 1.0, 1.0], [2.0, 5.0, 2.0, 7.0]])
    np.testing.assert_array_equal(
        ones_grad("min", x, {"axis": [1]}), [[0, 1 / 3, 1 / 3, 1 / 3], [0.5, 0, 0.5, 0]]
    )
    np.testing.assert_array_equal(
        ones_grad("max", x, {"axis": [0], "keepdims": 1}), [[1, 0, 0, 0], [0, 1, 1, 1]]
    )


def test_max_ties_in_forward_mode_and_jacobian():
    x = np.array([[2.0, 2.0], [1.0, 0.0]])
    p = op_program("max", [(2, 2)])
    _, tangents = jvp_values(p, {"x0": x}, {"x0": np.array([[1.0, 3.0], [5.0, 7.0]])}, ["y"])
    assert tangents["y"] == 2.0  # the mean of the tied elements' tangents
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, {"x0": x}, ["y"], ["x0"], mode=mode)
        np.testing.assert_array_equal(jac["y"]["x0"], [[0.5, 0.5], [0, 0]])


@pytest.mark.filterwarnings("error")
def test_prod_with_zeros():
    np.testing.assert_array_equal(ones_grad("prod", np.array([2.0, 0.0, 3.0]), {}), [0, 6, 0])
    np.testing.assert_array_equal(ones_grad("prod", np.array([0.0, 4.0, 0.0]), {}), [0, 0, 0])
    x = np.array([[[0.0, 2.0], [3.0, 5.0]], [[1.0, 2.0], [3.0, 4.0]]])
    want = np.array([[[30, 0], [0, 0]], [[24, 12], [8, 6]]], dtype=float)
    np.testing.assert_array_equal(ones_grad("prod", x, {"axis": [-2, 2]}), want)
    # prod is a polynomial: central differences are exact enough at a zero too.
    check_derivatives(op_program("prod", [(2, 2, 2)], {"axis": [0, -1]}), {"x0": x})


def test_prod_second_derivative_is_a_clear_error():
    p = op_program("prod", [(3,)])
    with pytest.raises(GraphError, match=r"prod_others has no .* rule"):
        check_second_derivatives(p, {"x0": np.array([1.0, 2.0, 3.0])})


@pytest.mark.filterwarnings("error")
def test_std_gradient_is_zero_at_constant_input():
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    p = op_program("std", [(2, 3)], {"axis": [1]})
    assert evaluate(p, {"x0": x})["y"][0] == 0
    grad = ones_grad("std", x, {"axis": [1]})
    np.testing.assert_array_equal(grad[0], [0, 0, 0])
    np.testing.assert_allclose(grad[1], (x[1] - x[1].mean()) / (3 * x[1].std()))
    np.testing.assert_array_equal(ones_grad("std", np.full(4, 5.0), {"ddof": 1}), np.zeros(4))
    _, tangents = jvp_values(p, {"x0": x}, {"x0": np.ones((2, 3))}, ["y"])
    assert np.all(np.isfinite(tangents["y"]))


@pytest.mark.filterwarnings("error")
def test_logsumexp_all_neg_inf_slice():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, -np.inf], [1000.0, 1000.0, 999.0]])
    p = op_program("logsumexp", [(3, 3)], {"axis": [-1]})
    y = evaluate(p, {"x0": x})["y"]
    assert y[0] == -np.inf
    np.testing.assert_allclose(y[1:], [np.logaddexp(0, 1), 1000 + np.log(2 + np.exp(-1))])
    grad = ones_grad("logsumexp", x, {"axis": [-1]})
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0], [0, 0, 0])
    np.testing.assert_allclose(grad[1], [1 / (1 + np.e), np.e / (1 + np.e), 0])
    np.testing.assert_allclose(grad.sum(axis=1), [0, 1, 1])
    _, tangents = jvp_values(p, {"x0": x}, {"x0": np.ones((3, 3))}, ["y"])
    np.testing.assert_allclose(tangents["y"], [0, 1, 1])


@pytest.mark.parametrize("name", REDUCTIONS)
def test_float32_stays_float32(name):
    x = sample(name, (3, 4)).astype(np.float32)
    p = op_program(name, [(3, 4)], {"axis": [1]}, "float32")
    y = evaluate(p, {"x0": x})["y"]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, numpy_reduction(name, x.astype(np.float64), {"axis": [1]}), 1e-5)
    grad = ones_grad(name, x, {"axis": [1]}, "float32")
    assert grad.dtype == np.float32
    _, jac = jacobian(p, {"x0": x}, ["y"], ["x0"], mode="forward")
    assert jac["y"]["x0"].dtype == np.float32


@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("name", ["sum", "max", "min", "prod"])
def test_integer_inputs_keep_their_dtype(name, dtype):
    x = np.arange(1, 7, dtype=dtype).reshape(2, 3)
    p = op_program(name, [(2, 3)], {"axis": [0]}, dtype)
    y = evaluate(p, {"x0": x})["y"]
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, getattr(np, name)(x, axis=0))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "name,want", [("sum", 0.0), ("mean", np.nan), ("prod", 1.0), ("logsumexp", -np.inf)]
)
def test_empty_axes(name, want):
    p = op_program(name, [(2, 0)], {"axis": [1]})
    x = np.zeros((2, 0))
    np.testing.assert_array_equal(evaluate(p, {"x0": x})["y"], [want, want])
    assert ones_grad(name, x, {"axis": [1]}).shape == (2, 0)


def test_sum_of_bool_counts_as_int64():
    p = op_program("sum", [(4,)], {}, "bool")
    y = evaluate(p, {"x0": np.array([True, False, True, True])})["y"]
    assert y.dtype == np.int64 and y == 3


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,shape,attrs,dtype,field",
    [
        ("sum", (3, 4), {"axis": [2]}, "float64", "attrs.axis"),
        ("mean", (3, 4), {"axis": [-3]}, "float64", "attrs.axis"),
        ("max", (3, 4), {"axis": [1, -1]}, "float64", "attrs.axis"),
        ("sum", (3,), {"axis": "0"}, "float64", "attrs.axis"),
        ("min", (3, 0), {"axis": [1]}, "float64", "attrs.axis"),
        ("prod", (3,), {"keepdims": 2}, "float64", "attrs.keepdims"),
        ("var", (3,), {"ddof": 3}, "float64", "attrs.ddof"),
        ("std", (2, 0), {"axis": [1]}, "float64", "attrs.axis"),
        ("std", (3,), {"ddof": -1}, "float64", "attrs.ddof"),
        ("var", (3,), {"ddof": 1.5}, "float64", "attrs.ddof"),
        ("sum", (3,), {"ddof": 1}, "float64", "attrs.ddof"),
        ("mean", (3,), {}, "int64", "inputs[0]"),
        ("logsumexp", (3,), {}, "int32", "inputs[0]"),
        ("std", (3,), {}, "bool", "inputs[0]"),
    ],
)
def test_validation_errors_name_their_field(name, shape, attrs, dtype, field):
    with pytest.raises(GraphError) as info:
        op_program(name, [shape], attrs, dtype)
    assert info.value.field == field
    assert info.value.node == "y"
