"""Structure ops: reshape, broadcast_to, transpose, expand_dims, squeeze, concatenate, stack,
slice (and the internal slice_grad), pad (and pad_grad), flip, tile, repeat, cumsum, astype,
argmax and argmin: forward vs numpy, derivatives vs central differences,
second order, nested batching, float32, and validation errors that name the field."""

import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, op_program, program
from gradserve.autodiff import GraphError, evaluate, jacobian, vjp_values
from gradserve.autodiff.transforms import jvp, vjp
from gradserve_client.opset.structure import parse_index


def _exclusive(inclusive, axis):
    """An inclusive cumulative sum shifted by one along `axis`: the exclusive one."""
    zero = np.zeros_like(np.take(inclusive, [0], axis))
    return np.concatenate([zero, np.delete(inclusive, -1, axis)], axis)


CASES = [
    # (op, operand shapes, attrs, numpy reference)
    ("reshape", [(2, 3)], {"shape": (3, 2)}, lambda x: x.reshape(3, 2)),
    ("reshape", [(2, 3, 2)], {"shape": (-1, 4)}, lambda x: x.reshape(-1, 4)),
    ("reshape", [(1,)], {"shape": ()}, lambda x: x.reshape(())),
    ("broadcast_to", [(3, 1)], {"shape": (2, 3, 4)}, lambda x: np.broadcast_to(x, (2, 3, 4))),
    ("broadcast_to", [()], {"shape": (2, 2)}, lambda x: np.broadcast_to(x, (2, 2))),
    ("transpose", [(2, 3, 4)], {}, np.transpose),
    ("transpose", [(2, 3, 4)], {"axes": (1, -1, 0)}, lambda x: np.transpose(x, (1, -1, 0))),
    ("expand_dims", [(2, 3)], {"axis": 0}, lambda x: np.expand_dims(x, 0)),
    ("expand_dims", [(2, 3)], {"axis": (-1, 1)}, lambda x: np.expand_dims(x, (-1, 1))),
    ("expand_dims", [()], {"axis": (0, 1)}, lambda x: np.expand_dims(x, (0, 1))),
    ("squeeze", [(2, 1, 3, 1)], {}, np.squeeze),
    ("squeeze", [(2, 1, 3, 1)], {"axis": -1}, lambda x: np.squeeze(x, -1)),
    ("squeeze", [(1, 3, 1)], {"axis": (0, 2)}, lambda x: np.squeeze(x, (0, 2))),
    ("concatenate", [(2, 3), (1, 3)], {}, lambda *xs: np.concatenate(xs)),
    (
        "concatenate",
        [(2, 3), (2, 1), (2, 2)],
        {"axis": -1},
        lambda *xs: np.concatenate(xs, -1),
    ),
    ("concatenate", [(2, 2, 1), (2, 3, 1)], {"axis": 1}, lambda *xs: np.concatenate(xs, 1)),
    ("concatenate", [(4,)], {}, lambda *xs: np.concatenate(xs)),
    ("stack", [(2, 3), (2, 3)], {}, lambda *xs: np.stack(xs)),
    ("stack", [(2, 3), (2, 3), (2, 3)], {"axis": -1}, lambda *xs: np.stack(xs, -1)),
    ("stack", [(2, 3), (2, 3)], {"axis": 1}, lambda *xs: np.stack(xs, 1)),
    ("stack", [(), ()], {}, lambda *xs: np.stack(xs)),
    ("stack", [(3,)], {"axis": -1}, lambda *xs: np.stack(xs, -1)),
    ("pad", [(2, 3)], {"pads": (1, 0, 2, 3)}, lambda x: np.pad(x, ((1, 2), (0, 3)))),
    (
        "pad",
        [(4,)],
        {"pads": (0, 2), "constant_value": 1.5},
        lambda x: np.pad(x, (0, 2), constant_values=1.5),
    ),
    (
        "pad",
        [(3, 4)],
        {"pads": (1, 2, 2, 3), "mode": "reflect"},
        lambda x: np.pad(x, ((1, 2), (2, 3)), mode="reflect"),
    ),
    (
        "pad",
        [(2, 3)],
        {"pads": (2, 1, 0, 4), "mode": "edge"},
        lambda x: np.pad(x, ((2, 0), (1, 4)), mode="edge"),
    ),
    (
        "pad",
        [(1, 2)],
        {"pads": (3, 0, 2, 0), "mode": "edge"},
        lambda x: np.pad(x, ((3, 2), (0, 0)), mode="edge"),
    ),
    (
        "pad",
        [(2, 3)],
        {"pads": (1, 2, 3, 4), "mode": "wrap"},
        lambda x: np.pad(x, ((1, 3), (2, 4)), mode="wrap"),  # pads beyond the axis size wrap on
    ),
    ("flip", [(2, 3, 4)], {}, np.flip),
    ("flip", [(2, 3, 4)], {"axis": (0, -1)}, lambda x: np.flip(x, (0, -1))),
    ("tile", [(2, 3)], {"reps": (2, 1)}, lambda x: np.tile(x, (2, 1))),
    ("tile", [(3,)], {"reps": (2, 2)}, lambda x: np.tile(x, (2, 2))),
    ("tile", [(2, 3)], {"reps": (3,)}, lambda x: np.tile(x, 3)),
    ("repeat", [(2, 3)], {"repeats": 2, "axis": 1}, lambda x: np.repeat(x, 2, 1)),
    ("repeat", [(2, 3)], {"repeats": 3, "axis": -2}, lambda x: np.repeat(x, 3, -2)),
    ("cumsum", [(2, 3)], {"axis": 1}, lambda x: np.cumsum(x, 1)),
    ("cumsum", [(3, 4)], {"axis": 0, "exclusive": 1}, lambda x: _exclusive(np.cumsum(x, 0), 0)),
    ("cumsum", [(3, 4)], {"axis": -1, "reverse": 1}, lambda x: np.cumsum(x[:, ::-1], 1)[:, ::-1]),
    (
        "cumsum",
        [(2, 4)],
        {"axis": 1, "exclusive": 1, "reverse": 1},
        lambda x: _exclusive(np.cumsum(x[:, ::-1], 1), 1)[:, ::-1],
    ),
]

INDEXES = [
    ("1:3,:,0", np.s_[1:3, :, 0]),
    ("...,::-2", np.s_[..., ::-2]),
    ("None,-1,...,1:", np.s_[None, -1, ..., 1:]),
    ("::2,None,1", np.s_[::2, None, 1]),
    ("-3:-1:1, 2", np.s_[-3:-1:1, 2]),
    ("3:0:-2", np.s_[3:0:-2]),
    ("", ()),
    ("...", np.s_[...]),
    ("0,-1,1", np.s_[0, -1, 1]),
    ("0,None,...,None", np.s_[0, None, ..., None]),
    ("10:", np.s_[10:]),
    ("1:1", np.s_[1:1]),
]

RNG = np.random.default_rng(0)


def feeds_for(shapes, dtype="float64"):
    return {f"x{i}": RNG.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}


def case_id(case):
    return f"{case[0]}-{case[1]}-{case[2]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_derivatives(case):
    name, shapes, attrs, ref = case
    p = op_program(name, shapes, attrs)
    feeds = feeds_for(shapes)
    y = evaluate(p, feeds)["y"]
    np.testing.assert_array_equal(y, ref(*feeds.values()))
    assert p.types["y"].shape == y.shape
    check_derivatives(p, feeds)


@pytest.mark.parametrize(("index", "key"), INDEXES, ids=[i for i, _ in INDEXES])
def test_slice(index, key):
    p = op_program("slice", [(4, 3, 2)], {"index": index})
    feeds = feeds_for([(4, 3, 2)])
    y = evaluate(p, feeds)["y"]
    expected = feeds["x0"][key]
    assert isinstance(y, np.ndarray)
    assert p.types["y"].shape == y.shape == np.shape(expected)
    np.testing.assert_array_equal(y, expected)
    if y.size:
        check_derivatives(p, feeds)


def test_slice_of_a_scalar_and_to_a_scalar():
    p = op_program("slice", [()], {"index": "None,..."})
    np.testing.assert_array_equal(evaluate(p, {"x0": np.array(2.0)})["y"], [2.0])
    check_derivatives(p, {"x0": np.array(2.0)})
    p = op_program("slice", [(2, 3)], {"index": "1,-1"})
    x = feeds_for([(2, 3)])["x0"]
    y = evaluate(p, {"x0": x})["y"]
    assert isinstance(y, np.ndarray) and y.shape == () and y == x[1, -1]


def test_parse_index_is_strict_and_cached():
    assert parse_index("1:3, :,0,None,...") == (slice(1, 3), slice(None), 0, None, Ellipsis)
    assert parse_index("::-1") == (slice(None, None, -1), Ellipsis)
    assert parse_index("-2") == (-2, Ellipsis)
    assert parse_index("0:4") is parse_index("0:4")  # parsed once per distinct string


def test_slice_grad_is_linear_and_differentiable():
    p = op_program("slice_grad", [(2, 3)], {"index": "1:5:2,0,:", "shape": (6, 1, 3)})
    feeds = feeds_for([(2, 3)])
    expected = np.zeros((6, 1, 3))
    expected[1:5:2, 0, :] = feeds["x0"]
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], expected)
    check_derivatives(p, feeds)


def test_partial_tangents_use_zeros():
    """Only one operand differentiated: the other operand's tangent is a symbolic zero."""
    for name, attrs in (("concatenate", {"axis": -1}), ("stack", {"axis": 1})):
        p = op_program(name, [(2, 3), (2, 3)], attrs)
        feeds = feeds_for([(2, 3), (2, 3)])
        check_derivatives(p, feeds, wrt=["x1"])


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_integer_and_bool_operands(dtype):
    p = op_program("stack", [(2,), (2,)], {"axis": -1}, dtype=dtype)
    a, b = np.array([1, 0], dtype), np.array([0, 1], dtype)
    y = evaluate(p, {"x0": a, "x1": b})["y"]
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.stack([a, b], -1))


SECOND_ORDER = [
    # (op, attrs, operand shape, elementwise op after it): Hessians of sum(f(op(x, x)))
    ("slice", {"index": "1:,None,::-1"}, (3, 2), "sin"),
    ("concatenate", {"axis": -1}, (2, 3), "square"),
    ("stack", {"axis": 1}, (2, 3), "sin"),
    ("expand_dims", {"axis": (0, -1)}, (2, 3), "sin"),
    ("squeeze", {}, (2, 1), "square"),
    ("transpose", {"axes": (1, 0)}, (2, 3), "sin"),
    ("broadcast_to", {"shape": (2, 2, 3)}, (2, 3), "sin"),
    ("reshape", {"shape": (3, 2)}, (2, 3), "sin"),
    ("pad", {"pads": (1, 2, 2, 1), "mode": "reflect"}, (3, 3), "sin"),
    ("pad", {"pads": (0, 1, 2, 0), "mode": "edge"}, (2, 3), "square"),
    ("pad", {"pads": (2, 1, 1, 4), "mode": "wrap"}, (2, 3), "sin"),
    ("flip", {"axis": (1,)}, (2, 3), "sin"),
    ("tile", {"reps": (2, 1, 2)}, (2, 3), "sin"),
    ("repeat", {"repeats": 2, "axis": 0}, (2, 3), "sin"),
    ("cumsum", {"axis": -1, "exclusive": 1}, (2, 3), "sin"),
]


@pytest.mark.parametrize("case", SECOND_ORDER, ids=lambda c: c[0])
def test_second_derivatives(case):
    name, attrs, shape, after = case
    variadic = name in ("concatenate", "stack")
    p = program(
        {"x0": shape},
        [
            ("s", "sin", ["x0"]),
            ("t", name, ["x0", "s"] if variadic else ["x0"], attrs),
            ("y", after, ["t"]),
        ],
        ["y"],
    )
    check_second_derivatives(p, {"x0": RNG.uniform(-1, 1, shape)})


@pytest.mark.parametrize(
    "case",
    [
        ("slice", [(4, 3)], {"index": "None,1:3,::-2"}),
        ("concatenate", [(2, 3), (2, 1)], {"axis": -1}),
        ("stack", [(2, 3), (2, 3)], {"axis": -2}),
        ("squeeze", [(3, 1)], {}),
        ("expand_dims", [(3,)], {"axis": -1}),
        ("pad", [(3, 4)], {"pads": (1, 2, 2, 0), "mode": "reflect"}),
        ("pad", [(2, 3)], {"pads": (1, 0, 0, 2), "constant_value": 2.0}),
        ("pad", [(2, 3)], {"pads": (0, 3, 1, 1), "mode": "wrap"}),
        ("flip", [(2, 3)], {}),
        ("tile", [(2, 3)], {"reps": (2, 1, 2)}),
        ("repeat", [(2, 3)], {"repeats": 2, "axis": -1}),
        ("cumsum", [(2, 3)], {"axis": 0, "reverse": 1}),
    ],
    ids=lambda c: f"{c[0]}{c[2]}",
)
def test_derivatives_of_batched_derivative_programs(case):
    """A batched VJP/JVP program holds these ops (and slice_grad) on batched values;
    differentiating it again pushes a second batch axis through their rules."""
    name, shapes, attrs = case
    inner = program(
        {f"x{i}": s for i, s in enumerate(shapes)},
        [("t", name, [f"x{i}" for i in range(len(shapes))], attrs), ("y", "sin", ["t"])],
        ["y"],
    )
    feeds = feeds_for(shapes)
    y_shape = inner.types["y"].shape
    back = vjp(inner, ("y",), ("x0",), 2)
    fwd = jvp(inner, ("x0",), ("y",), 2)
    check_derivatives(
        back.program,
        {**feeds, back.seeds[0]: RNG.standard_normal((2, *y_shape))},
        of=back.results[0],
        wrt=["x0", back.seeds[0]],
    )
    check_derivatives(
        fwd.program,
        {**feeds, fwd.seeds[0]: RNG.standard_normal((2, *shapes[0]))},
        of=fwd.results[0],
        wrt=["x0", fwd.seeds[0]],
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_in_float32_out(case):
    name, shapes, attrs, _ = case
    p = op_program(name, shapes, attrs, dtype="float32")
    feeds = feeds_for(shapes, "float32")
    assert evaluate(p, feeds)["y"].dtype == np.float32
    _, grads = vjp_values(p, feeds, {"y": np.ones(p.types["y"].shape, "float32")}, ["x0"])
    assert grads["x0"].dtype == np.float32


def test_float32_slice():
    p = op_program("slice", [(3, 2)], {"index": "::-1,1"}, dtype="float32")
    feeds = feeds_for([(3, 2)], "float32")
    assert evaluate(p, feeds)["y"].dtype == np.float32
    _, grads = vjp_values(p, feeds, {"y": np.ones(3, "float32")}, ["x0"])
    assert grads["x0"].dtype == np.float32
    np.testing.assert_array_equal(grads["x0"], [[0, 1]] * 3)


ERRORS = [
    # (op, operand shapes or (shape, dtype), attrs, field)
    ("reshape", [(2, 3)], {"shape": (4, 2)}, "attrs.shape"),
    ("reshape", [(2, 3)], {}, "attrs.shape"),
    ("broadcast_to", [(2, 3)], {"shape": (3, 3)}, "attrs.shape"),
    ("transpose", [(2, 3)], {"axes": (0, 0)}, "attrs.axes"),
    ("expand_dims", [(2, 3)], {"axis": 3}, "attrs.axis"),
    ("expand_dims", [(2, 3)], {"axis": (0, -4)}, "attrs.axis"),
    ("expand_dims", [(2, 3)], {"axis": 1.5}, "attrs.axis"),
    ("squeeze", [(2, 1)], {"axis": 0}, "attrs.axis"),
    ("squeeze", [(2, 1)], {"axis": 2}, "attrs.axis"),
    ("concatenate", [(2, 3), (3, 2)], {}, "inputs[1]"),
    ("concatenate", [(2, 3), (2, 3), (2,)], {}, "inputs[2]"),
    ("concatenate", [(2, 3), ((2, 3), "float32")], {}, "inputs[1]"),
    ("concatenate", [(), ()], {}, "inputs[0]"),
    ("concatenate", [(2, 3), (2, 3)], {"axis": 2}, "attrs.axis"),
    ("concatenate", [(2, 3), (2, 3)], {"axis": "0"}, "attrs.axis"),
    ("concatenate", [], {}, "inputs"),
    ("stack", [(2, 3), (3, 2)], {}, "inputs[1]"),
    ("stack", [(2, 3), ((2, 3), "int64")], {}, "inputs[1]"),
    ("stack", [(2, 3), (2, 3)], {"axis": -4}, "attrs.axis"),
    ("slice", [(2, 3)], {}, "attrs.index"),
    ("slice", [(2, 3)], {"index": 1}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "2"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "0,-4"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "0,0,0"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "...,..."}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "::0"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "1:2:3:4"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "1.5"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "1_0"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "0 1"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "0,,1"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "x"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "__import__('os')"}, "attrs.index"),
    ("slice", [(2, 3)], {"index": "[0, 1]"}, "attrs.index"),
    ("slice_grad", [(2,)], {"index": "0:2", "shape": (3, 2)}, "inputs[0]"),
    ("slice_grad", [(2,)], {"index": "5", "shape": (3, 2)}, "attrs.index"),
    ("pad", [(2, 3)], {"pads": (1, 1)}, "attrs.pads"),
    ("pad", [(2, 3)], {"pads": (1, -1, 0, 0)}, "attrs.pads"),
    ("pad", [(2, 3)], {"pads": (2, 0, 0, 0), "mode": "reflect"}, "attrs.pads"),
    ("pad", [(0, 3)], {"pads": (1, 0, 0, 0), "mode": "edge"}, "attrs.pads"),
    ("pad", [(0, 3)], {"pads": (1, 0, 0, 0), "mode": "wrap"}, "attrs.pads"),
    ("pad", [(2, 3)], {"pads": (1, 0, 0, 0), "mode": "symmetric"}, "attrs.mode"),
    ("pad_grad", [(2, 3)], {"pads": (2, 0, 1, 0)}, "attrs.pads"),
    ("flip", [(2, 3)], {"axis": (2,)}, "attrs.axis"),
    ("tile", [(2, 3)], {"reps": (2, -1)}, "attrs.reps"),
    ("tile", [(2, 3)], {}, "attrs.reps"),
    ("repeat", [(2, 3)], {"repeats": -1, "axis": 0}, "attrs.repeats"),
    ("repeat", [(2, 3)], {"repeats": 2}, "attrs.axis"),
    ("cumsum", [(2, 3)], {"axis": 2}, "attrs.axis"),
    ("cumsum", [(2, 3)], {"axis": 0, "exclusive": 2}, "attrs.exclusive"),
    ("cumsum", [((2, 3), "bool")], {"axis": 0}, "inputs[0]"),
    ("astype", [(2, 3)], {"dtype": "float16"}, "attrs.dtype"),
    ("astype", [(2, 3)], {}, "attrs.dtype"),
    ("argmax", [(2, 3)], {"axis": 2}, "attrs.axis"),
    ("argmin", [(2, 0)], {"axis": 1}, "attrs.axis"),
    ("argmax", [((2, 3), "bool")], {"axis": 0}, "inputs[0]"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_validation_errors_name_the_field(case):
    name, shapes, attrs, field = case
    inputs = {f"x{i}": s for i, s in enumerate(shapes)}
    nodes = [("y", name, list(inputs), attrs)]
    with pytest.raises(GraphError) as info:
        program(inputs, nodes, ["y"])
    assert info.value.field == field, str(info.value)
    assert info.value.node == "y"


# ---- astype, argmax, argmin --------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), [("float64", "float32"), ("float32", "float64")])
def test_astype_between_floats_passes_derivatives_cast(source, target):
    # x -> astype(target) -> astype(source): the Jacobian is the identity, exactly, in both
    # modes, and each cast's (co)tangent has the dtype of its own side.
    p = program(
        {"x": ((2, 3), source)},
        [("t", "astype", ["x"], {"dtype": target}), ("y", "astype", ["t"], {"dtype": source})],
        ["y", "t"],
    )
    x = RNG.standard_normal((2, 3)).astype(source)
    values = evaluate(p, {"x": x})
    assert values["t"].dtype == target and values["y"].dtype == source
    np.testing.assert_array_equal(values["t"], x.astype(target))
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, {"x": x}, ["y", "t"], ["x"], mode=mode)
        assert jac["t"]["x"].dtype == target and jac["y"]["x"].dtype == source
        np.testing.assert_array_equal(jac["y"]["x"].reshape(6, 6), np.eye(6))


def test_astype_float64_to_float64_against_central_differences():
    p = op_program("astype", [(2, 3)], {"dtype": "float64"})
    check_derivatives(p, feeds_for([(2, 3)]))


def test_astype_through_an_integer_stops_the_gradient():
    # round-trip through int64: piecewise constant, so the derivative is zero, not an error
    p = program(
        {"x": (4,)},
        [
            ("i", "astype", ["x"], {"dtype": "int64"}),
            ("f", "astype", ["i"], {"dtype": "float64"}),
            ("y", "multiply", ["f", "x"]),
        ],
        ["y"],
    )
    x = np.array([0.5, 1.5, 2.5, -1.5])
    np.testing.assert_array_equal(evaluate(p, {"x": x})["y"], x.astype(np.int64) * x)
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, {"x": x}, ["y"], ["x"], mode=mode)
        np.testing.assert_array_equal(jac["y"]["x"], np.diag(x.astype(np.int64) * 1.0))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize(("axis", "keepdims"), [(0, 0), (-1, 0), (1, 1)])
def test_argmax_argmin(name, axis, keepdims):
    x = np.array([[1.0, 3.0, 3.0], [2.0, -1.0, 2.0]])  # ties: the first index wins, as numpy
    p = op_program(name, [x.shape], {"axis": axis, "keepdims": keepdims})
    y = evaluate(p, {"x0": x})["y"]
    expected = getattr(np, name)(x, axis, keepdims=bool(keepdims))
    assert y.dtype == np.int64 and p.types["y"].shape == expected.shape
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(GraphError) as err:
        jacobian(p, {"x0": x}, ["y"], ["x0"])
    assert (err.value.node, err.value.field) == ("y", "of")


def test_argmax_selects_without_gradient_through_the_index():
    # take the max with one_hot(argmax): the gradient flows through the multiply only
    p = program(
        {"x": (2, 3)},
        [
            ("i", "argmax", ["x"], {"axis": -1}),
            ("h", "one_hot", ["i"], {"depth": 3}),
            ("m", "multiply", ["h", "x"]),
            ("y", "sum", ["m"], {"axis": (-1,)}),
        ],
        ["y"],
    )
    x = np.array([[0.1, 0.7, 0.2], [0.9, 0.3, 0.5]])
    np.testing.assert_array_equal(evaluate(p, {"x": x})["y"], x.max(-1))
    check_derivatives(p, {"x": x})
