import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, op_program
from gradserve.autodiff import evaluate

UNARY = {
    "sin": (-2, 2),
    "exp": (-2, 2),
    "log": (0.5, 3),
    "tanh": (-2, 2),
    "sqrt": (0.5, 3),
    "arcsin": (-0.8, 0.8),
    "arccosh": (1.5, 3),
    "sigmoid": (-3, 3),
    "softplus": (-3, 3),
    "relu": (0.1, 2),
    "reciprocal": (0.5, 2),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_smoke(name):
    lo, hi = UNARY[name]
    x = np.random.default_rng(1).uniform(lo, hi, (3, 2))
    p = op_program(name, [(3, 2)])
    check_derivatives(p, {"x0": x})
    check_second_derivatives(p, {"x0": x})


@pytest.mark.parametrize("shapes", [((3, 2), (1, 2)), ((4,), ()), ((2, 3, 2), (3, 1))])
@pytest.mark.parametrize("name", ["add", "multiply", "divide", "power", "hypot"])
def test_binary_broadcasting_smoke(name, shapes):
    rng = np.random.default_rng(2)
    feeds = {f"x{i}": rng.uniform(0.5, 2, s) for i, s in enumerate(shapes)}
    p = op_program(name, shapes)
    np.testing.assert_allclose(evaluate(p, feeds)["y"], getattr(np, name)(*feeds.values()))
    check_derivatives(p, feeds)
