"""Every element-wise op: forward against numpy, first derivatives (VJP, JVP, both Jacobian
modes) against central differences on several shapes and the broadcasting pairs, and second
derivatives by differentiating the derivative program."""

import math

import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, op_program, program
from gradserve.autodiff import GraphError, evaluate, jacobian


def _stable_sigmoid(x):
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1 + e)
    return out


def _stable_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _away_from_zero(lo, hi):
    """Magnitudes in [lo, hi] with random signs: for ops with a kink or a pole at 0."""

    def draw(rng, shape):
        return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)

    return draw


def _uniform(lo, hi):
    return lambda rng, shape: rng.uniform(lo, hi, shape)


# name: (numpy reference, domain sampler)
UNARY = {
    "negative": (np.negative, _uniform(-2, 2)),
    "abs": (np.abs, _away_from_zero(0.2, 2)),
    "sign": (np.sign, _away_from_zero(0.2, 2)),
    "exp": (np.exp, _uniform(-2, 2)),
    "exp2": (np.exp2, _uniform(-2, 2)),
    "expm1": (np.expm1, _uniform(-2, 2)),
    "log": (np.log, _uniform(0.5, 3)),
    "log2": (np.log2, _uniform(0.5, 3)),
    "log10": (np.log10, _uniform(0.5, 3)),
    "log1p": (np.log1p, _uniform(-0.5, 2)),
    "sqrt": (np.sqrt, _uniform(0.5, 3)),
    "square": (np.square, _uniform(-2, 2)),
    "reciprocal": (np.reciprocal, _away_from_zero(0.5, 2)),
    "sin": (np.sin, _uniform(-2, 2)),
    "cos": (np.cos, _uniform(-2, 2)),
    "tan": (np.tan, _uniform(-1.2, 1.2)),
    "arcsin": (np.arcsin, _uniform(-0.8, 0.8)),
    "arccos": (np.arccos, _uniform(-0.8, 0.8)),
    "arctan": (np.arctan, _uniform(-2, 2)),
    "sinh": (np.sinh, _uniform(-2, 2)),
    "cosh": (np.cosh, _uniform(-2, 2)),
    "tanh": (np.tanh, _uniform(-2, 2)),
    "arcsinh": (np.arcsinh, _uniform(-2, 2)),
    "arccosh": (np.arccosh, _uniform(1.5, 3)),
    "arctanh": (np.arctanh, _uniform(-0.8, 0.8)),
    "sigmoid": (_stable_sigmoid, _uniform(-3, 3)),
    "relu": (lambda x: np.where(x > 0, x, 0.0), _away_from_zero(0.1, 2)),
    "softplus": (_stable_softplus, _uniform(-3, 3)),
    "erf": (np.vectorize(math.erf, otypes=[float]), _uniform(-2.5, 2.5)),
    "softsign": (lambda x: x / (1 + np.abs(x)), _away_from_zero(0.1, 2)),
}

# name: (numpy reference, sampler for x0, sampler for x1)
BINARY = {
    "add": (np.add, _uniform(-2, 2), _uniform(-2, 2)),
    "subtract": (np.subtract, _uniform(-2, 2), _uniform(-2, 2)),
    "multiply": (np.multiply, _uniform(-2, 2), _uniform(-2, 2)),
    "divide": (np.divide, _uniform(-2, 2), _away_from_zero(0.5, 2)),
    "power": (np.power, _uniform(0.5, 2), _uniform(-2, 2)),
    # _binary_feeds redraws until no broadcast pair is near a tie (the kink).
    "maximum": (np.maximum, _uniform(-2, 2), _uniform(-2, 2)),
    "minimum": (np.minimum, _uniform(-2, 2), _uniform(-2, 2)),
    "arctan2": (np.arctan2, _away_from_zero(0.5, 2), _away_from_zero(0.5, 2)),
    "hypot": (np.hypot, _away_from_zero(0.5, 2), _away_from_zero(0.5, 2)),
    "logaddexp": (np.logaddexp, _uniform(-2, 2), _uniform(-2, 2)),
    # _binary_feeds redraws until no x0 / x1 is near an integer (where they jump).
    "mod": (np.mod, _uniform(-3, 3), _away_from_zero(0.5, 2)),
    "fmod": (np.fmod, _uniform(-3, 3), _away_from_zero(0.5, 2)),
}

SHAPES = [(), (4,), (3, 2), (2, 3, 2)]
PAIRS = [((3, 2), (1, 2)), ((4,), ()), ((2, 3, 2), (3, 1))]
PAIRS_BOTH_ORDERS = PAIRS + [(b, a) for a, b in PAIRS]
COMPARISONS = ["less", "less_equal", "greater", "greater_equal", "equal", "not_equal"]


def _binary_feeds(name, shapes, seed):
    _, s0, s1 = BINARY[name]
    rng = np.random.default_rng(seed)
    feeds = {"x0": s0(rng, shapes[0]), "x1": s1(rng, shapes[1])}
    if name in ("maximum", "minimum"):
        # Keep every broadcast pair well away from a tie (the kink).
        a, b = np.broadcast_arrays(feeds["x0"], feeds["x1"])
        while np.min(np.abs(a - b), initial=1.0) < 1e-2:
            feeds = {"x0": s0(rng, shapes[0]), "x1": s1(rng, shapes[1])}
            a, b = np.broadcast_arrays(feeds["x0"], feeds["x1"])
    if name in ("mod", "fmod"):
        q = np.divide(*np.broadcast_arrays(feeds["x0"], feeds["x1"]))
        while np.min(np.abs(q - np.round(q)), initial=1.0) < 5e-2:
            feeds = {"x0": s0(rng, shapes[0]), "x1": s1(rng, shapes[1])}
            q = np.divide(*np.broadcast_arrays(feeds["x0"], feeds["x1"]))
    return feeds


def test_every_elementwise_op_is_covered():
    from gradserve.autodiff import OPS

    elementwise = {n for n, d in OPS.items() if d.elementwise and not d.internal}
    covered = set(UNARY) | set(BINARY) | set(COMPARISONS) | {"where", "safe_multiply", "clip"}
    covered |= {case[0] for case in WITH_ATTRS}
    assert elementwise - covered == set()


# ---- unary -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_forward(name, shape):
    ref, sample = UNARY[name]
    x = sample(np.random.default_rng(0), shape)
    y = evaluate(op_program(name, [shape]), {"x0": x})["y"]
    assert y.shape == shape and y.dtype == np.float64
    np.testing.assert_allclose(y, ref(np.asarray(x)), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_derivatives(name, shape):
    _, sample = UNARY[name]
    x = sample(np.random.default_rng(1), shape)
    check_derivatives(op_program(name, [shape]), {"x0": x})


@pytest.mark.parametrize("shape", [(), (3, 2)], ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_second_derivatives(name, shape):
    _, sample = UNARY[name]
    x = sample(np.random.default_rng(2), shape)
    check_second_derivatives(op_program(name, [shape]), {"x0": x})


def test_sigmoid_softplus_stable_in_the_tails():
    x = np.array([-800.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 800.0])
    for name in ("sigmoid", "softplus"):
        p = op_program(name, [x.shape])
        y = evaluate(p, {"x0": x})["y"]
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, UNARY[name][0](x), rtol=1e-14, atol=0)
        _, jac = jacobian(p, {"x0": x}, ["y"], ["x0"])
        assert np.all(np.isfinite(jac["y"]["x0"]))


# ---- binary ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [((3, 2), (3, 2)), *PAIRS_BOTH_ORDERS], ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_forward(name, shapes):
    feeds = _binary_feeds(name, shapes, 3)
    y = evaluate(op_program(name, shapes), feeds)["y"]
    expected = BINARY[name][0](feeds["x0"], feeds["x1"])
    assert y.shape == np.broadcast_shapes(*shapes)
    np.testing.assert_allclose(y, expected, rtol=1e-14)


@pytest.mark.parametrize("shapes", [((), ()), ((3, 2), (3, 2)), *PAIRS_BOTH_ORDERS], ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_derivatives(name, shapes):
    feeds = _binary_feeds(name, shapes, 4)
    check_derivatives(op_program(name, shapes), feeds)


@pytest.mark.parametrize("wrt", ["x0", "x1"])
@pytest.mark.parametrize("shapes", [((3, 2), (3, 2)), ((3, 2), (1, 2))], ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_second_derivatives(name, shapes, wrt):
    feeds = _binary_feeds(name, shapes, 5)
    check_second_derivatives(op_program(name, shapes), feeds, wrt=wrt)


def test_binary_same_operand_twice():
    # x * x, x / x, ...: both partials accumulate into one cotangent.
    x = np.random.default_rng(6).uniform(0.5, 2, (3,))
    for name in sorted(BINARY):
        p = program({"x": (3,)}, [("y", name, ["x", "x"])], ["y"])
        check_derivatives(p, {"x": x})
        check_second_derivatives(p, {"x": x}, wrt="x")


# ---- where and the comparisons -----------------------------------------------------------------


def _where_program(shapes):
    c, a, b = shapes
    return program({"c": (c, "bool"), "a": a, "b": b}, [("y", "where", ["c", "a", "b"])], ["y"])


@pytest.mark.parametrize(
    "shapes",
    [((3, 2),) * 3, ((3, 2), (1, 2), ()), ((2,), (3, 1), (3, 2)), ((), (4,), (4,))],
    ids=str,
)
def test_where(shapes):
    rng = np.random.default_rng(7)
    feeds = {
        "c": rng.random(shapes[0]) > 0.5,
        "a": rng.standard_normal(shapes[1]),
        "b": rng.standard_normal(shapes[2]),
    }
    p = _where_program(shapes)
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], np.where(*feeds.values()))
    check_derivatives(p, feeds, wrt=["a", "b"])
    for wrt in ("a", "b"):
        check_second_derivatives(p, feeds, wrt=wrt)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("zero", [0.0, -0.0, 1.0])
@pytest.mark.parametrize("c_shape", [(2, 3), (3,)], ids=str)
def test_where_zero_branch_is_exact(dtype, zero, c_shape):
    # A +0 branch takes the bit-mask path (`keep`): it must give np.where's values bit for bit,
    # the other branch's NaN, inf and -0.0 dropped where not taken; -0.0 and 1 take np.where.
    rng = np.random.default_rng(9)
    a = (rng.standard_normal((2, 3)) * 5).astype(dtype)
    if dtype != "int64":
        a[0] = [np.nan, np.inf, -0.0]
        a[1, 0] = -np.inf
    c = rng.random(c_shape) > 0.5
    z = np.array(zero).astype(dtype)
    for order in (("a", "z"), ("z", "a")):
        p = program(
            {"c": (c_shape, "bool"), "a": ((2, 3), dtype), "z": ((), dtype)},
            [("y", "where", ["c", *order])],
            ["y"],
        )
        got = evaluate(p, {"c": c, "a": a, "z": z})["y"]
        want = np.where(c, *({"a": a, "z": z}[k] for k in order))
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_where_condition_has_no_gradient():
    p = _where_program(((3,), (3,), (3,)))
    with pytest.raises(GraphError) as err:
        jacobian(p, {"c": np.ones(3, bool), "a": np.ones(3), "b": np.ones(3)}, ["y"], ["c"])
    assert (err.value.node, err.value.field) == ("c", "wrt")


@pytest.mark.parametrize("shapes", [((3, 2), (3, 2)), *PAIRS_BOTH_ORDERS], ids=str)
@pytest.mark.parametrize("name", COMPARISONS)
def test_comparison_forward(name, shapes):
    rng = np.random.default_rng(8)
    # Small integers so that ties (equal, less_equal, ...) happen.
    feeds = {"x0": rng.integers(0, 3, shapes[0]) * 1.0, "x1": rng.integers(0, 3, shapes[1]) * 1.0}
    y = evaluate(op_program(name, shapes), feeds)["y"]
    assert y.dtype == np.bool_
    np.testing.assert_array_equal(y, getattr(np, name)(feeds["x0"], feeds["x1"]))


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
@pytest.mark.parametrize("name", COMPARISONS)
def test_comparison_non_float_operands(name, dtype):
    a = np.array([0, 1, 2, 1]).astype(dtype)
    b = np.array([1, 1, 0, 0]).astype(dtype)
    y = evaluate(op_program(name, [(4,), (4,)], dtype=dtype), {"x0": a, "x1": b})["y"]
    np.testing.assert_array_equal(y, getattr(np, name)(a, b))


@pytest.mark.parametrize("name", COMPARISONS)
def test_comparison_has_no_gradient(name):
    p = op_program(name, [(3,), (3,)])
    feeds = {"x0": np.arange(3.0), "x1": np.ones(3)}
    with pytest.raises(GraphError) as err:
        jacobian(p, feeds, ["y"], ["x0"])
    assert (err.value.node, err.value.field) == ("y", "of")
    # Through a comparison into where, the mask carries no derivative: d where(x0 > x1, x0, x1).
    q = program(
        {"x0": (3,), "x1": (3,)},
        [("c", name, ["x0", "x1"]), ("y", "where", ["c", "x0", "x1"])],
        ["y"],
    )
    feeds = {"x0": np.array([0.0, 1.5, 3.0]), "x1": np.array([1.0, 0.5, 2.0])}
    check_derivatives(q, feeds)


# ---- activations, clip, mod ----------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[float])


def _kinks_avoided(*kinks):
    """Values in [-4, 4] at least 0.2 from every kink."""

    def draw(rng, shape):
        x = rng.uniform(-4, 4, shape)
        while any(np.min(np.abs(x - k), initial=1.0) < 0.2 for k in kinks):
            x = rng.uniform(-4, 4, shape)
        return x

    return draw


SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875
TANH_GELU = np.sqrt(2 / np.pi)

# (name, attrs, numpy reference, domain sampler): element-wise ops with attributes
WITH_ATTRS = [
    ("gelu", {}, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), _uniform(-3, 3)),
    (
        "gelu",
        {"approximate": "tanh"},
        lambda x: 0.5 * x * (1 + np.tanh(TANH_GELU * (x + 0.044715 * x**3))),
        _uniform(-3, 3),
    ),
    ("leaky_relu", {}, lambda x: np.where(x > 0, x, 0.01 * x), _away_from_zero(0.1, 2)),
    ("leaky_relu", {"alpha": 0.3}, lambda x: np.where(x > 0, x, 0.3 * x), _away_from_zero(0.1, 2)),
    ("elu", {}, lambda x: np.where(x > 0, x, np.expm1(x)), _away_from_zero(0.1, 2)),
    (
        "elu",
        {"alpha": 0.5},
        lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)),
        _away_from_zero(0.1, 2),
    ),
    (
        "selu",
        {},
        lambda x: SELU_GAMMA * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
        _away_from_zero(0.1, 2),
    ),
    ("hardsigmoid", {}, lambda x: np.clip(0.2 * x + 0.5, 0, 1), _kinks_avoided(-2.5, 2.5)),
    (
        "hardsigmoid",
        {"alpha": 0.5, "beta": 0.25},
        lambda x: np.clip(0.5 * x + 0.25, 0, 1),
        _kinks_avoided(-0.5, 1.5),
    ),
]


def _attrs_id(case):
    return f"{case[0]}{case[1] or ''}"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", WITH_ATTRS, ids=_attrs_id)
def test_with_attrs_forward_and_derivatives(case, shape):
    name, attrs, ref, sample = case
    x = sample(np.random.default_rng(9), shape)
    p = op_program(name, [shape], attrs)
    y = evaluate(p, {"x0": x})["y"]
    assert y.shape == shape
    np.testing.assert_allclose(y, ref(np.asarray(x)), rtol=1e-13, atol=1e-300)
    check_derivatives(p, {"x0": x})


@pytest.mark.parametrize("shape", [(), (3, 2)], ids=str)
@pytest.mark.parametrize("case", WITH_ATTRS, ids=_attrs_id)
def test_with_attrs_second_derivatives(case, shape):
    name, attrs, _, sample = case
    x = sample(np.random.default_rng(10), shape)
    check_second_derivatives(op_program(name, [shape], attrs), {"x0": x})


@pytest.mark.parametrize("case", WITH_ATTRS, ids=_attrs_id)
def test_with_attrs_float32(case):
    name, attrs, ref, sample = case
    x = sample(np.random.default_rng(11), (3, 2)).astype(np.float32)
    p = op_program(name, [(3, 2)], attrs, dtype="float32")
    y = evaluate(p, {"x0": x})["y"]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    _, jac = jacobian(p, {"x0": x}, ["y"], ["x0"])
    assert jac["y"]["x0"].dtype == np.float32


def test_kink_conventions_of_the_activations():
    """At 0: leaky_relu's slope is alpha, elu's alpha, selu's gamma * alpha; hardsigmoid's
    slope is 0 at its kinks (as torch's)."""
    x = np.array([0.0, -2.5, 2.5])
    for name, attrs, expected in [
        ("leaky_relu", {"alpha": 0.3}, [0.3, 0.3, 1.0]),
        ("elu", {"alpha": 0.5}, [0.5, 0.5 * np.exp(-2.5), 1.0]),
        ("selu", {}, [SELU_GAMMA * SELU_ALPHA, SELU_GAMMA * SELU_ALPHA * np.exp(-2.5), SELU_GAMMA]),
        ("hardsigmoid", {}, [0.2, 0.0, 0.0]),
    ]:
        p = op_program(name, [(3,)], attrs)
        for mode in ("forward", "reverse"):
            _, jac = jacobian(p, {"x0": x}, ["y"], ["x0"], mode=mode)
            np.testing.assert_allclose(np.diag(jac["y"]["x0"]), expected, rtol=1e-14)


def test_gelu_in_the_tails():
    x = np.array([-40.0, -10.0, 0.0, 10.0, 40.0])
    y = evaluate(op_program("gelu", [x.shape]), {"x0": x})["y"]
    # 0.5 x erfc(-x / sqrt 2) keeps the tiny left tail that 0.5 x (1 + erf(x / sqrt 2)) rounds
    # to 0: gelu(-10) = -10 Phi(-10) = -7.62e-23.
    np.testing.assert_allclose(y[1], -10 * 0.5 * math.erfc(10 / math.sqrt(2)), rtol=1e-13)
    np.testing.assert_allclose(y[2:], [0.0, 10.0, 40.0], rtol=1e-15)
    assert np.all(np.isfinite(y))


def _clip_feeds(shapes, seed, margin=0.05):
    """x, lo, hi with lo < hi and no broadcast x within `margin` of a bound."""
    rng = np.random.default_rng(seed)
    while True:
        lo = rng.uniform(-1.5, -0.2, shapes[1])
        hi = rng.uniform(0.2, 1.5, shapes[2])
        x = rng.uniform(-2, 2, shapes[0])
        bx, blo, bhi = np.broadcast_arrays(x, lo, hi)
        if min(np.min(np.abs(bx - blo)), np.min(np.abs(bx - bhi))) > margin:
            return {"x0": x, "x1": lo, "x2": hi}


CLIP_SHAPES = [((4,), (4,), (4,)), ((3, 2), (1, 2), ()), ((2,), (3, 1), (3, 2)), ((), (), ())]


@pytest.mark.parametrize("shapes", CLIP_SHAPES, ids=str)
def test_clip(shapes):
    feeds = _clip_feeds(shapes, 12)
    p = op_program("clip", shapes)
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], np.clip(*feeds.values()))
    check_derivatives(p, feeds)
    for wrt in ("x0", "x1", "x2"):
        check_second_derivatives(p, feeds, wrt=wrt)


def test_clip_convention_at_the_bounds():
    # x at lo or at hi: the gradient goes to x (as torch.clamp); lo > hi: the result is hi,
    # and so is the gradient.
    x = np.array([-1.0, 1.0, -2.0, 2.0, 0.5, 3.0])
    lo = np.array([-1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    hi = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    p = op_program("clip", [(6,), (6,), (6,)])
    feeds = {"x0": x, "x1": lo, "x2": hi}
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], np.clip(x, lo, hi))
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, feeds, ["y"], ["x0", "x1", "x2"], mode=mode)
        diag = {w: np.diag(jac["y"][w]) for w in ("x0", "x1", "x2")}
        np.testing.assert_array_equal(diag["x0"], [1, 1, 0, 0, 0, 0])
        np.testing.assert_array_equal(diag["x1"], [0, 0, 1, 0, 0, 0])
        np.testing.assert_array_equal(diag["x2"], [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_clip_mod_fmod_on_integers(dtype):
    a = np.array([-7, -3, 0, 4, 9]).astype(dtype)
    b = np.array([3, -2, 5, -3, 4]).astype(dtype)
    for name, ref in (("mod", np.mod), ("fmod", np.fmod)):
        y = evaluate(op_program(name, [(5,), (5,)], dtype=dtype), {"x0": a, "x1": b})["y"]
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, ref(a, b))
    p = op_program("clip", [(5,), (), ()], dtype=dtype)
    feeds = {"x0": a, "x1": np.array(-2, dtype), "x2": np.array(5, dtype)}
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], np.clip(a, -2, 5))
