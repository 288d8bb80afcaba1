"""take and take_along_axis: forward against numpy, JVP and VJP (scatter-adds) against central
differences in both modes, repeated and negative indices, out-of-range conventions, second
derivatives, errors."""

import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, program
from gradserve.autodiff import GraphError, evaluate, vjp_values

RNG = np.random.default_rng(0)


def take_program(a_shape, i_shape, axis=None, op="take", i_dtype="int64", dtype="float64"):
    attrs = {} if axis is None else {"axis": axis}
    return program(
        {"a": (a_shape, dtype), "i": (i_shape, i_dtype)}, [("y", op, ["a", "i"], attrs)], ["y"]
    )


TAKE = [
    ((5,), (3,), None),
    ((5, 3), (2, 2), 0),  # an embedding lookup with a (batch, time) of ids
    ((2, 5, 3), (4,), 1),
    ((2, 3, 4), (), -1),  # a scalar index drops the axis
    ((4, 2), (2, 3), -2),
]


@pytest.mark.parametrize("a_shape,i_shape,axis", TAKE)
def test_take_forward_and_derivatives(a_shape, i_shape, axis):
    size = a_shape[axis or 0]
    # Repeated and negative indices: the scatter-add must sum the repeats.
    ids = RNG.integers(-size, size, i_shape)
    if ids.size > 1:
        ids.flat[1] = ids.flat[0]
    feeds = {"a": RNG.standard_normal(a_shape), "i": ids}
    p = take_program(a_shape, i_shape, axis)
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], np.take(feeds["a"], ids, axis=axis or 0))
    check_derivatives(p, feeds)


def test_take_gradient_sums_repeated_ids():
    table = np.zeros((4, 2))
    ids = np.array([[1, 1], [3, -3]], np.int32)  # -3 is row 1 too
    p = take_program((4, 2), (2, 2), 0, i_dtype="int32")
    _, grads = vjp_values(p, {"a": table, "i": ids}, {"y": np.ones((2, 2, 2))}, ["a"])
    np.testing.assert_array_equal(grads["a"], [[0, 0], [3, 3], [0, 0], [1, 1]])


def test_take_second_derivatives():
    p = program(
        {"a": (4, 2), "i": ((3,), "int64")},
        [("t", "take", ["a", "i"]), ("y", "sin", ["t"])],
        ["y"],
    )
    check_second_derivatives(
        p, {"a": RNG.standard_normal((4, 2)), "i": np.array([0, 2, 0])}, wrt="a"
    )


@pytest.mark.filterwarnings("error")
def test_take_out_of_range_is_nan_for_floats_and_an_error_for_integers():
    p = take_program((3, 2), (3,), 0)
    feeds = {"a": np.ones((3, 2)), "i": np.array([0, 3, -4])}
    y = evaluate(p, feeds)["y"]
    np.testing.assert_array_equal(y[0], [1, 1])
    assert np.isnan(y[1:]).all()
    _, grads = vjp_values(p, feeds, {"y": np.ones((3, 2))}, ["a"])
    np.testing.assert_array_equal(grads["a"], [[1, 1], [0, 0], [0, 0]])
    q = take_program((3,), (1,), 0, dtype="int64")
    with pytest.raises(GraphError) as info:
        evaluate(q, {"a": np.arange(3), "i": np.array([5])})
    assert info.value.field == "inputs" and "(5) is out of range" in info.value.reason
    assert info.value.__notes__ == ['node "y" (take)']  # the executor's (ir.at_node)


ALONG = [
    ((3, 4), (3, 2), 1),
    ((3, 4), (2, 4), 0),
    ((2, 3, 4), (2, 1, 4), 1),
    ((2, 3, 4), (1, 3, 2), -1),  # indices broadcast over axis 0
    ((3, 1), (3, 4), 1),  # and the operand over axis 1... of size 1 along the indexed axis
]


@pytest.mark.parametrize("a_shape,i_shape,axis", ALONG)
def test_take_along_axis_forward_and_derivatives(a_shape, i_shape, axis):
    size = a_shape[axis]
    feeds = {"a": RNG.standard_normal(a_shape), "i": RNG.integers(-size, size, i_shape)}
    p = take_program(a_shape, i_shape, axis, op="take_along_axis")
    expected = np.take_along_axis(feeds["a"], feeds["i"], axis=axis)
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], expected)
    check_derivatives(p, feeds)


def test_take_along_axis_second_derivatives():
    p = program(
        {"a": (3, 4), "i": ((3, 2), "int64")},
        [("t", "take_along_axis", ["a", "i"], {"axis": 1}), ("y", "square", ["t"])],
        ["y"],
    )
    feeds = {"a": RNG.standard_normal((3, 4)), "i": np.array([[0, 0], [3, 1], [2, -1]])}
    check_second_derivatives(p, feeds, wrt="a")


def test_internal_scatter_ops_have_their_own_rules():
    # take_grad and take_along_axis_grad are linear: their derivatives are take and
    # take_along_axis, checked here as ops of their own.
    ids = np.array([[2, 0], [2, 1]])
    p = program(
        {"g": (3, 2, 2, 5), "i": ((2, 2), "int64")},
        [("y", "take_grad", ["g", "i"], {"axis": -2, "size": 4})],
        ["y"],
    )
    check_derivatives(p, {"g": RNG.standard_normal((3, 2, 2, 5)), "i": ids})
    q = program(
        {"g": (2, 2), "i": ((2, 2), "int64")},
        [("y", "take_along_axis_grad", ["g", "i"], {"axis": -1, "shape": [2, 3]})],
        ["y"],
    )
    check_derivatives(q, {"g": RNG.standard_normal((2, 2)), "i": ids})


@pytest.mark.parametrize(
    "op,a_shape,i_shape,attrs,i_dtype,field",
    [
        ("take", (3, 2), (2,), {"axis": 2}, "int64", "attrs.axis"),
        ("take", (3, 2), (2,), {"axis": -3}, "int64", "attrs.axis"),
        ("take", (3, 2), (2,), {}, "float64", "inputs[1]"),  # non-integer indices
        ("take", (), (2,), {}, "int64", "inputs[0]"),
        ("take", (0, 2), (2,), {}, "int64", "inputs[1]"),
        ("take_along_axis", (3, 2), (3,), {"axis": 0}, "int64", "inputs[1]"),  # rank
        ("take_along_axis", (3, 2), (3, 3), {"axis": 0}, "int64", "inputs[1]"),  # broadcast
        ("take_along_axis", (3, 2), (3, 2), {"axis": 2}, "int64", "attrs.axis"),
        ("take_along_axis", (3, 2), (3, 2), {"axis": 0}, "bool", "inputs[1]"),
        ("take_along_axis", (3, 2), (3, 2), {}, "int64", "attrs.axis"),  # required
    ],
)
def test_errors_name_the_node_and_field(op, a_shape, i_shape, attrs, i_dtype, field):
    with pytest.raises(GraphError) as info:
        program({"a": a_shape, "i": (i_shape, i_dtype)}, [("y", op, ["a", "i"], attrs)], ["y"])
    assert info.value.node == "y" and info.value.field == field, info.value


def test_integer_tables_and_float32():
    p = take_program((4,), (2,), 0, dtype="int64")
    np.testing.assert_array_equal(
        evaluate(p, {"a": np.arange(4) * 10, "i": np.array([3, -1])})["y"], [30, 30]
    )
    q = take_program((4, 3), (2,), 0, dtype="float32")
    a = RNG.standard_normal((4, 3)).astype(np.float32)
    feeds = {"a": a, "i": np.array([1, 1])}
    _, grads = vjp_values(q, feeds, {"y": np.ones((2, 3), np.float32)}, ["a"])
    assert grads["a"].dtype == np.float32
    np.testing.assert_array_equal(grads["a"][1], [2, 2, 2])
