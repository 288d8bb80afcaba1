"""Element-wise ops: numpy forward and one partial per operand.

A partial maps the incoming (co)tangent `g` to this operand's share: the Jacobian of an
element-wise op is diagonal, so the same line serves forward and reverse mode. Derivatives
that blow up (log at 0, sqrt at 0, ...) go through `safe_multiply`, which keeps an exact zero
(co)tangent exactly zero: that is what stops `where` from leaking the untaken branch's NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

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


def keep(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """np.where(c, a, 0) for a bool c and a numeric a, exactly (NaN, inf and -0.0 of a are
    dropped where c is false; the zeros are +0), without a branch per element: a and-mask of
    a's bits. np.where branches, and on a mask that changes often (relu's x > 0 on a layer's
    output) it is 10-15x slower than this."""
    bits = np.dtype(f"i{a.dtype.itemsize}")
    shape = np.broadcast_shapes(np.shape(c), a.shape)
    mask = np.negative(c, dtype=bits, out=np.empty(shape, bits))  # all ones where c, else zero
    return np.bitwise_and(a.view(bits), mask, out=mask).view(a.dtype)


def _where(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.where, through `keep` when a branch is a +0 of the other's numeric dtype (as derivative
    rules write it: relu's `where(x > 0, g, 0)`, where's own partials)."""
    for value, zero, cond in ((a, b, c), (b, a, None)):
        if (
            isinstance(value, np.ndarray)
            and value.dtype.kind in "fiu"
            and np.ndim(zero) == 0
            and np.result_type(value, zero) == value.dtype
            and zero == 0
            and not np.signbit(zero)
        ):
            return keep(np.logical_not(c) if cond is None else cond, value)
    return np.where(c, a, b)


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
    _where,
    partials=(
        None,
        lambda g, ans, c, a, b: op.where(c, g, 0),
        lambda g, ans, c, a, b: op.where(c, 0, g),
    ),
)


# ---- activations and friends -------------------------------------------------------------------
# Rules with attributes take them as keywords after the operands.

SQRT_HALF = math.sqrt(0.5)
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
TANH_SCALE = math.sqrt(2 / math.pi)  # gelu's tanh form: tanh(TANH_SCALE * (x + TANH_CUBIC x^3))
TANH_CUBIC = 0.044715


def _gelu(x: np.ndarray, *, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(TANH_SCALE * (x + TANH_CUBIC * x**3)))
    return 0.5 * x * special.erfc(-x * SQRT_HALF)  # erfc keeps precision in the left tail


def _dgelu(x: Sym, approximate: str) -> Sym:
    if approximate == "tanh":
        t = op.tanh((x + op.square(x) * x * TANH_CUBIC) * TANH_SCALE)
        slope = (op.square(x) * (3 * TANH_CUBIC) + 1) * TANH_SCALE
        return (t + 1) * 0.5 + x * (1 - op.square(t)) * slope * 0.5
    cdf = (op.erf(x * SQRT_HALF) + 1) * 0.5
    return cdf + x * op.exp(op.square(x) * -0.5) * INV_SQRT_2PI


def _negative_part(x: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * (e**x - 1) for x <= 0 (and for x > 0, where it is not used, without overflow)."""
    return alpha * np.expm1(np.minimum(x, 0))


def _mod_divisor_partial(g: Sym, ans: Sym, x1: Sym, x2: Sym) -> Sym:
    # mod and fmod are x1 - k * x2 with k = floor or trunc of x1 / x2, constant between jumps;
    # k = (x1 - ans) / x2 (in exact arithmetic, and within rounding here).
    return -(g * ((x1 - ans) / x2))


# fmt: off
implement("erf", special.erf, partials=(lambda g, ans, x: g * (op.exp(-op.square(x)) * TWO_OVER_SQRT_PI),))
implement("gelu", _gelu, partials=(lambda g, ans, x, approximate="none": g * _dgelu(x, approximate),))
implement("leaky_relu", lambda x, *, alpha=0.01: np.where(x > 0, x, x * alpha),
          partials=(lambda g, ans, x, alpha=0.01: op.where(x > 0, g, g * alpha),))
implement("elu", lambda x, *, alpha=1.0: np.where(x > 0, x, _negative_part(x, alpha)),
          partials=(lambda g, ans, x, alpha=1.0: op.where(x > 0, g, g * (ans + alpha)),))
implement("selu", lambda x, *, alpha, gamma: gamma * np.where(x > 0, x, _negative_part(x, alpha)),
          partials=(lambda g, ans, x, alpha, gamma: op.where(x > 0, g * gamma, g * (ans + gamma * alpha)),))
implement("hardsigmoid", lambda x, *, alpha=0.2, beta=0.5: np.clip(x * alpha + beta, 0, 1),
          partials=(lambda g, ans, x, alpha=0.2, beta=0.5: op.where(ans > 0, op.where(ans < 1, g * alpha, 0), 0),))
implement("softsign", lambda x: x / (1 + np.abs(x)), partials=(lambda g, ans, x: g / op.square(op.abs(x) + 1),))
implement("mod", np.mod, partials=(lambda g, ans, x1, x2: g, _mod_divisor_partial))
implement("fmod", np.fmod, partials=(lambda g, ans, x1, x2: g, _mod_divisor_partial))
implement("clip", np.clip, partials=(
    lambda g, ans, x, lo, hi: op.where(x < lo, 0, op.where(x > hi, 0, g)),
    lambda g, ans, x, lo, hi: op.where(x < lo, op.where(lo > hi, 0, g), 0),
    lambda g, ans, x, lo, hi: op.where(op.maximum(x, lo) > hi, g, 0),
))
# fmt: on
