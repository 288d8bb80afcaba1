"""matmul, dot, outer: forward vs numpy over every rank pairing, derivatives vs central
differences (plain and batched), second order, nested batching, float32, validation errors."""

import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, op_program, program
from gradserve.autodiff import GraphError, evaluate, vjp_values
from gradserve.autodiff.transforms import jvp, vjp

RNG = np.random.default_rng(0)

MATMUL = [
    ((3,), (3,)),
    ((3,), (3, 2)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((4, 2, 3), (3,)),
    ((3,), (4, 3, 2)),
    ((2, 3), (4, 3, 2)),
    ((4, 2, 3), (3, 2)),
    ((2, 2, 3), (2, 3, 1)),
    ((5, 1, 2, 3), (4, 3, 2)),  # stack dimensions broadcast: (5, 1) with (4,)
    ((1, 2, 3), (3, 3, 2)),
]
DOT = [
    ((), (3,)),
    ((2, 3), ()),
    ((), ()),
    ((3,), (3,)),
    ((3,), (3, 2)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((2, 2, 3), (3,)),
    ((3,), (4, 3, 2)),
    ((2, 2, 3), (4, 3, 2)),
    ((2, 3), (2, 3, 2)),
]
OUTER = [((3,), (2,)), ((2, 3), (4,)), ((), (2, 2)), ((1,), ())]
CASES = (
    [("matmul", a, b) for a, b in MATMUL]
    + [("dot", a, b) for a, b in DOT]
    + [("outer", a, b) for a, b in OUTER]
)


def feeds_for(*shapes, dtype="float64"):
    return {f"x{i}": RNG.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}


def case_id(case):
    return f"{case[0]}-{list(case[1])}-{list(case[2])}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_derivatives(case):
    name, a, b = case
    p = op_program(name, [a, b])
    feeds = feeds_for(a, b)
    y = evaluate(p, feeds)["y"]
    expected = getattr(np, name)(feeds["x0"], feeds["x1"])
    assert isinstance(y, np.ndarray) and p.types["y"].shape == y.shape == np.shape(expected)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    check_derivatives(p, feeds)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_in_float32_out(case):
    name, a, b = case
    p = op_program(name, [a, b], dtype="float32")
    feeds = feeds_for(a, b, dtype="float32")
    y = evaluate(p, feeds)["y"]
    assert y.dtype == np.float32
    ct = np.ones(p.types["y"].shape, "float32")
    _, grads = vjp_values(p, feeds, {"y": ct}, ["x0", "x1"])
    assert grads["x0"].dtype == grads["x1"].dtype == np.float32


@pytest.mark.parametrize("name", ["matmul", "dot"])
def test_integer_forward(name):
    p = op_program(name, [(2, 3), (3, 2)], dtype="int64")
    a, b = np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)
    y = evaluate(p, {"x0": a, "x1": b})["y"]
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, a @ b)


def composed(name, a, b, after="sin"):
    """y = after(name(x0, x1)): keeps the Hessian of a bilinear op from being trivially 0."""
    return program({"x0": a, "x1": b}, [("m", name, ["x0", "x1"]), ("y", after, ["m"])], ["y"])


@pytest.mark.parametrize(
    "case",
    [
        ("matmul", (2, 3), (3, 2)),
        ("matmul", (3,), (3, 2)),
        ("matmul", (2, 3), (3,)),
        ("matmul", (3,), (3,)),
        ("matmul", (2, 1, 3), (2, 3, 2)),
        ("dot", (2, 2, 3), (2, 3, 2)),
        ("dot", (), (3,)),
        ("outer", (2,), (3,)),
    ],
    ids=case_id,
)
@pytest.mark.parametrize("wrt", ["x0", "x1"])
def test_second_derivatives(case, wrt):
    name, a, b = case
    p = composed(name, a, b)
    check_second_derivatives(p, feeds_for(a, b), wrt=wrt)


@pytest.mark.parametrize("name", ["matmul", "dot", "outer"])
def test_second_derivatives_of_a_square(name):
    """sum(x @ x) is quadratic in x: its Hessian is constant and non-zero, with no sin."""
    shape = (3,) if name == "outer" else (3, 3)
    p = program({"x0": shape}, [("y", name, ["x0", "x0"])], ["y"])
    check_second_derivatives(p, feeds_for(shape))
    p = program({"x0": shape}, [("m", name, ["x0", "x0"]), ("y", "square", ["m"])], ["y"])
    check_second_derivatives(p, feeds_for(shape))


@pytest.mark.parametrize(
    "case",
    [
        ("matmul", (3,), (4, 3, 2)),
        ("matmul", (2, 3), (3,)),
        ("matmul", (5, 1, 2, 3), (4, 3, 2)),
        ("dot", (2, 2, 3), (4, 3, 2)),
        ("dot", (), (3,)),
        ("outer", (2, 2), (3,)),
    ],
    ids=case_id,
)
def test_derivatives_of_batched_derivative_programs(case):
    """Differentiating a batched VJP/JVP program pushes a second batch axis through rules
    whose operands already carry one (as a Hessian of a Jacobian would)."""
    name, a, b = case
    inner = composed(name, a, b)
    feeds = feeds_for(a, b)
    y_shape = inner.types["y"].shape
    back = vjp(inner, ("y",), ("x0", "x1"), 2)
    fwd = jvp(inner, ("x0", "x1"), ("y",), 2)
    seed = {back.seeds[0]: RNG.standard_normal((2, *y_shape))}
    for result in back.results:
        check_derivatives(back.program, {**feeds, **seed}, of=result)
    seeds = {
        s: RNG.standard_normal((2, *inner.types[w].shape))
        for s, w in zip(fwd.seeds, ("x0", "x1"), strict=True)
    }
    check_derivatives(fwd.program, {**feeds, **seeds}, of=fwd.results[0])


ERRORS = [
    ("matmul", [(), (3,)], "inputs[0]"),
    ("matmul", [(3,), ()], "inputs[1]"),
    ("matmul", [(2, 3), (2, 3)], "inputs[1]"),
    ("matmul", [(3,), (2,)], "inputs[1]"),
    ("matmul", [(2, 2, 3), (3, 3, 2)], "inputs"),
    ("matmul", [(2, 3), ((3, 2), "float32")], "inputs[1]"),
    ("matmul", [((2, 3), "bool"), ((3, 2), "bool")], "inputs[0]"),
    ("dot", [(2, 3), (2, 3)], "inputs[1]"),
    ("dot", [(2, 2, 3), (2, 2, 3)], "inputs[1]"),
    ("dot", [(), ((3,), "int64")], "inputs[1]"),
    ("outer", [(2,), ((3,), "float32")], "inputs[1]"),
    ("outer", [((2,), "bool"), ((3,), "bool")], "inputs[0]"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_validation_errors_name_the_field(case):
    name, shapes, field = case
    inputs = {f"x{i}": s for i, s in enumerate(shapes)}
    with pytest.raises(GraphError) as info:
        program(inputs, [("y", name, list(inputs))], ["y"])
    assert info.value.field == field, str(info.value)
    assert info.value.node == "y"


def test_attributes_are_rejected():
    with pytest.raises(GraphError) as info:
        program({"a": (2,), "b": (2,)}, [("y", "dot", ["a", "b"], {"axis": 0})], ["y"])
    assert info.value.field == "attrs.axis"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((4, 2, 3), (3, 5)),
        ((4, 2, 3), (3,)),
        ((2, 4, 1, 3), (3, 2)),
        ((5, 3), (4, 3, 2)),
        ((3,), (4, 3, 2)),
        ((5, 3), (4, 3, 1)),
        ((5, 3), (2, 4, 3, 2)),
        ((0, 2, 3), (3, 2)),
        ((5, 3), (0, 3, 2)),
        ((4, 2, 0), (0, 2)),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_matmul_folds_a_stack_times_a_matrix_exactly_like_numpy(a, b, layout):
    """The forward folds a stack times one plain matrix into one GEMM when the stack's memory
    allows it (else it falls back to np.matmul): same shape, same values, any layout."""
    from gradserve.autodiff.ops.linalg import _matmul

    def make(shape):
        x = RNG.standard_normal(shape[::-1] if layout == "transposed" else shape)
        return x.T if layout == "transposed" else x  # a non-contiguous view when transposed

    x, y = make(a), make(b)
    got, expected = _matmul(x, y), np.matmul(x, y)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    xi, yi = (np.arange(np.prod(s), dtype=np.int64).reshape(s) for s in (a, b))
    np.testing.assert_array_equal(_matmul(xi, yi), np.matmul(xi, yi))


@pytest.mark.parametrize(
    ("a", "b"), [((5, 1), (1, 4)), ((2, 5, 1), (1, 4)), ((3, 1, 5, 1), (2, 1, 4))]
)
def test_matmul_with_an_inner_dimension_of_one_is_the_broadcast_product(a, b):
    from gradserve.autodiff.ops.linalg import _matmul

    x, y = RNG.standard_normal(a), RNG.standard_normal(b)
    got = _matmul(x, y)
    assert got.shape == np.matmul(x, y).shape
    np.testing.assert_array_equal(got, x * y)
    np.testing.assert_allclose(got, np.matmul(x, y), rtol=1e-15)
