"""Element-wise ops: numpy forward and one partial per operand.

A partial maps the incoming (co)tangent `g` to this operand's share: the Jacobian of an
element-wise op is diagonal, so the same line serves forward and reverse mode. Derivatives
that blow up (log at 0, sqrt at 0, ...) go through `safe_multiply`, which keeps an exact zero
(co)tangent exactly zero: that is what stops `where` from leaking the untaken branch's NaN.
"""

from __future__ import annotations

import math

import numpy as np

from gradserve.autodiff.registry import implement
from gradserve.autodiff.symbolic import Sym, op

LN2 = math.log(2.0)
LN10 = math.log(10.0)


def safe(g: Sym, derivative: Sym) -> Sym:
    """g * derivative, except that g == 0 gives 0 even where the derivative is inf or NaN."""
    return op.safe_multiply(g, derivative)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + e^-x)) keeps full relative precision in both tails, unlike 1/(1+e^-x).
    return np.exp(-np.logaddexp(0, -x))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def _safe_multiply(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    # Only an inf or NaN in the product can come from 0 * inf: fix up only then. (Where g == 0
    # and d is finite, g * d is a zero already, of d's sign.)
    out = np.multiply(g, d)
    return out if np.isfinite(out).all() else np.where(g == 0, 0, out)


def _tie(g: Sym, wins: Sym, x: Sym, y: Sym) -> Sym:
    """g where this operand wins, half of it on a tie, 0 where it loses."""
    return op.where(wins, g, op.where(op.equal(x, y), g * 0.5, 0))


# fmt: off
implement("negative", np.negative, partials=(lambda g, ans, x: -g,))
implement("abs", np.abs, partials=(lambda g, ans, x: g * op.sign(x),))
implement("sign", np.sign, partials=(None,))
implement("square", np.square, partials=(lambda g, ans, x: g * (x * 2),))
implement("exp", np.exp, partials=(lambda g, ans, x: g * ans,))
implement("exp2", np.exp2, partials=(lambda g, ans, x: g * (ans * LN2),))
implement("expm1", np.expm1, partials=(lambda g, ans, x: g * (ans + 1),))
implement("log", np.log, partials=(lambda g, ans, x: safe(g, op.reciprocal(x)),))
implement("log2", np.log2, partials=(lambda g, ans, x: safe(g, op.reciprocal(x * LN2)),))
implement("log10", np.log10, partials=(lambda g, ans, x: safe(g, op.reciprocal(x * LN10)),))
implement("log1p", np.log1p, partials=(lambda g, ans, x: safe(g, op.reciprocal(x + 1)),))
implement("sqrt", np.sqrt, partials=(lambda g, ans, x: safe(g, op.reciprocal(ans * 2)),))
implement("reciprocal", np.reciprocal, partials=(lambda g, ans, x: safe(g, -op.reciprocal(op.square(x))),))
implement("sin", np.sin, partials=(lambda g, ans, x: g * op.cos(x),))
implement("cos", np.cos, partials=(lambda g, ans, x: g * -op.sin(x),))
implement("tan", np.tan, partials=(lambda g, ans, x: g * (op.square(ans) + 1),))
implement("arcsin", np.arcsin, partials=(lambda g, ans, x: safe(g, op.reciprocal(op.sqrt(1 - op.square(x)))),))
implement("arccos", np.arccos, partials=(lambda g, ans, x: safe(g, -op.reciprocal(op.sqrt(1 - op.square(x)))),))
implement("arctan", np.arctan, partials=(lambda g, ans, x: g / (op.square(x) + 1),))
implement("sinh", np.sinh, partials=(lambda g, ans, x: g * op.cosh(x),))
implement("cosh", np.cosh, partials=(lambda g, ans, x: g * op.sinh(x),))
implement("tanh", np.tanh, partials=(lambda g, ans, x: g * (1 - op.square(ans)),))
implement("arcsinh", np.arcsinh, partials=(lambda g, ans, x: g / op.sqrt(op.square(x) + 1),))
implement("arccosh", np.arccosh, partials=(lambda g, ans, x: safe(g, op.reciprocal(op.sqrt(op.square(x) - 1))),))
implement("arctanh", np.arctanh, partials=(lambda g, ans, x: safe(g, op.reciprocal(1 - op.square(x))),))
implement("sigmoid", _sigmoid, partials=(lambda g, ans, x: g * (ans * (1 - ans)),))
implement("relu", _relu, partials=(lambda g, ans, x: op.where(x > 0, g, 0),))
implement("softplus", _softplus, partials=(lambda g, ans, x: g * op.sigmoid(x),))

implement("add", np.add, partials=(lambda g, ans, x, y: g, lambda g, ans, x, y: g))
implement("subtract", np.subtract, partials=(lambda g, ans, x, y: g, lambda g, ans, x, y: -g))
implement("multiply", np.multiply, partials=(lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x))
implement("divide", np.divide, partials=(lambda g, ans, x, y: safe(g, op.reciprocal(y)),
                                         lambda g, ans, x, y: safe(g, -(ans / y))))
implement("power", np.power, partials=(lambda g, ans, x, y: safe(g, y * x ** (y - 1)),
                                       lambda g, ans, x, y: safe(g, op.where(op.equal(x, 0), 0, op.log(x)) * ans)))
implement("maximum", np.maximum, partials=(lambda g, ans, x, y: _tie(g, x > y, x, y),
                                           lambda g, ans, x, y: _tie(g, y > x, x, y)))
implement("minimum", np.minimum, partials=(lambda g, ans, x, y: _tie(g, x < y, x, y),
                                           lambda g, ans, x, y: _tie(g, y < x, x, y)))
implement("arctan2", np.arctan2, partials=(lambda g, ans, y, x: safe(g, x / (op.square(x) + op.square(y))),
                                           lambda g, ans, y, x: safe(g, -y / (op.square(x) + op.square(y)))))
implement("hypot", np.hypot, partials=(lambda g, ans, x, y: safe(g, x / ans), lambda g, ans, x, y: safe(g, y / ans)))
implement("logaddexp", np.logaddexp, partials=(lambda g, ans, x, y: g * op.exp(x - ans),
                                               lambda g, ans, x, y: g * op.exp(y - ans)))
implement("safe_multiply", _safe_multiply, partials=(lambda g, ans, a, b: safe(g, b),
                                                     lambda g, ans, a, b: op.safe_multiply(a, g)))
# fmt: on

for _name, _forward in (
    ("less", np.less),
    ("less_equal", np.less_equal),
    ("greater", np.greater),
    ("greater_equal", np.greater_equal),
    ("equal", np.equal),
    ("not_equal", np.not_equal),
):
    implement(_name, _forward)

implement(
    "where",
    np.where,
    partials=(
        None,
        lambda g, ans, c, a, b: op.where(c, g, 0),
        lambda g, ans, c, a, b: op.where(c, 0, g),
    ),
)
