"""Element-wise ops. Each entry: name, numpy forward, one partial per operand, doc line.

A partial maps the incoming (co)tangent `g` to this operand's share: the Jacobian of an
element-wise op is diagonal, so the same line serves forward and reverse mode. Derivatives
that blow up (log at 0, sqrt at 0, ...) go through `safe_multiply`, which keeps an exact zero
(co)tangent exactly zero: that is what stops `where` from leaking the untaken branch's NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gradserve.autodiff.ir import FLOAT_DTYPES, TensorType
from gradserve.autodiff.registry import (
    NUMERIC,
    OpDef,
    RuleError,
    broadcast_shapes,
    elementwise_type,
    register,
    same_dtype,
)
from gradserve.autodiff.symbolic import Sym, op

LN2 = math.log(2.0)
LN10 = math.log(10.0)


def safe(g: Sym, derivative: Sym) -> Sym:
    """g * derivative, except that g == 0 gives 0 even where the derivative is inf or NaN."""
    return op.safe_multiply(g, derivative)


def unary(
    name: str,
    forward: Callable[..., np.ndarray],
    partial: Callable[..., Sym | None] | None,
    doc: str,
    allowed: tuple[str, ...] = FLOAT_DTYPES,
) -> None:
    register(
        OpDef(
            name,
            1,
            elementwise_type(allowed),
            forward,
            doc,
            partials=(partial,),
            differentiable=partial is not None,
        )
    )


def binary(
    name: str,
    forward: Callable[..., np.ndarray],
    partials: tuple[Callable[..., Sym | None] | None, ...],
    doc: str,
    allowed: tuple[str, ...] = FLOAT_DTYPES,
) -> None:
    register(OpDef(name, 2, elementwise_type(allowed), forward, doc, partials=partials))


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


# fmt: off
unary("negative", np.negative, lambda g, ans, x: -g, "-x", NUMERIC)
unary("abs", np.abs, lambda g, ans, x: g * op.sign(x), "|x|; abs'(0) = 0", NUMERIC)
unary("sign", np.sign, None, "the sign of x; its derivative is 0 everywhere", NUMERIC)
unary("square", np.square, lambda g, ans, x: g * (x * 2), "x**2", NUMERIC)
unary("exp", np.exp, lambda g, ans, x: g * ans, "e**x")
unary("exp2", np.exp2, lambda g, ans, x: g * (ans * LN2), "2**x")
unary("expm1", np.expm1, lambda g, ans, x: g * (ans + 1), "e**x - 1, accurate near 0")
unary("log", np.log, lambda g, ans, x: safe(g, op.reciprocal(x)), "natural logarithm")
unary("log2", np.log2, lambda g, ans, x: safe(g, op.reciprocal(x * LN2)), "base-2 logarithm")
unary("log10", np.log10, lambda g, ans, x: safe(g, op.reciprocal(x * LN10)), "base-10 logarithm")
unary("log1p", np.log1p, lambda g, ans, x: safe(g, op.reciprocal(x + 1)), "log(1 + x), accurate near 0")
unary("sqrt", np.sqrt, lambda g, ans, x: safe(g, op.reciprocal(ans * 2)), "square root")
unary("reciprocal", np.reciprocal, lambda g, ans, x: safe(g, -op.reciprocal(op.square(x))), "1/x")
unary("sin", np.sin, lambda g, ans, x: g * op.cos(x), "sine")
unary("cos", np.cos, lambda g, ans, x: g * -op.sin(x), "cosine")
unary("tan", np.tan, lambda g, ans, x: g * (op.square(ans) + 1), "tangent")
unary("arcsin", np.arcsin, lambda g, ans, x: safe(g, op.reciprocal(op.sqrt(1 - op.square(x)))), "inverse sine")
unary("arccos", np.arccos, lambda g, ans, x: safe(g, -op.reciprocal(op.sqrt(1 - op.square(x)))), "inverse cosine")
unary("arctan", np.arctan, lambda g, ans, x: g / (op.square(x) + 1), "inverse tangent")
unary("sinh", np.sinh, lambda g, ans, x: g * op.cosh(x), "hyperbolic sine")
unary("cosh", np.cosh, lambda g, ans, x: g * op.sinh(x), "hyperbolic cosine")
unary("tanh", np.tanh, lambda g, ans, x: g * (1 - op.square(ans)), "hyperbolic tangent")
unary("arcsinh", np.arcsinh, lambda g, ans, x: g / op.sqrt(op.square(x) + 1), "inverse hyperbolic sine")
unary("arccosh", np.arccosh, lambda g, ans, x: safe(g, op.reciprocal(op.sqrt(op.square(x) - 1))), "inverse hyperbolic cosine")
unary("arctanh", np.arctanh, lambda g, ans, x: safe(g, op.reciprocal(1 - op.square(x))), "inverse hyperbolic tangent")
unary("sigmoid", _sigmoid, lambda g, ans, x: g * (ans * (1 - ans)), "1/(1 + e**-x), computed stably")
unary("relu", _relu, lambda g, ans, x: op.where(x > 0, g, 0), "max(0, x); relu'(0) = 0")
unary("softplus", _softplus, lambda g, ans, x: g * op.sigmoid(x), "log(1 + e**x), computed stably")

binary("add", np.add, (lambda g, ans, x, y: g, lambda g, ans, x, y: g), "x + y", NUMERIC)
binary("subtract", np.subtract, (lambda g, ans, x, y: g, lambda g, ans, x, y: -g), "x - y", NUMERIC)
binary("multiply", np.multiply, (lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x), "x * y", NUMERIC)
binary("divide", np.divide, (lambda g, ans, x, y: safe(g, op.reciprocal(y)),
                             lambda g, ans, x, y: safe(g, -(ans / y))), "x / y")
binary("power", np.power, (lambda g, ans, x, y: safe(g, y * x ** (y - 1)),
                           lambda g, ans, x, y: safe(g, op.where(op.equal(x, 0), 0, op.log(x)) * ans)),
       "x ** y; d/dy is taken as 0 where x == 0")
binary("maximum", np.maximum, (lambda g, ans, x, y: op.where(x > y, g, op.where(op.equal(x, y), g * 0.5, 0)),
                               lambda g, ans, x, y: op.where(y > x, g, op.where(op.equal(x, y), g * 0.5, 0))),
       "element-wise max; a tie splits the gradient evenly", NUMERIC)
binary("minimum", np.minimum, (lambda g, ans, x, y: op.where(x < y, g, op.where(op.equal(x, y), g * 0.5, 0)),
                               lambda g, ans, x, y: op.where(y < x, g, op.where(op.equal(x, y), g * 0.5, 0))),
       "element-wise min; a tie splits the gradient evenly", NUMERIC)
binary("arctan2", np.arctan2, (lambda g, ans, y, x: safe(g, x / (op.square(x) + op.square(y))),
                               lambda g, ans, y, x: safe(g, -y / (op.square(x) + op.square(y)))),
       "the angle of the point (x, y), with operands (y, x) as numpy")
binary("hypot", np.hypot, (lambda g, ans, x, y: safe(g, x / ans), lambda g, ans, x, y: safe(g, y / ans)),
       "sqrt(x**2 + y**2) without overflow")
binary("logaddexp", np.logaddexp, (lambda g, ans, x, y: g * op.exp(x - ans), lambda g, ans, x, y: g * op.exp(y - ans)),
       "log(e**x + e**y), computed stably")
binary("safe_multiply", _safe_multiply, (lambda g, ans, a, b: safe(g, b), lambda g, ans, a, b: op.safe_multiply(a, g)),
       "a * b, but 0 where a == 0 even if b is inf or NaN (used by derivative rules)")
# fmt: on

for _name, _forward, _doc in (
    ("less", np.less, "x < y"),
    ("less_equal", np.less_equal, "x <= y"),
    ("greater", np.greater, "x > y"),
    ("greater_equal", np.greater_equal, "x >= y"),
    ("equal", np.equal, "x == y"),
    ("not_equal", np.not_equal, "x != y"),
):
    register(
        OpDef(
            _name,
            2,
            elementwise_type((*NUMERIC, "bool"), result="bool"),
            _forward,
            f"{_doc}, as bool; no gradient",
            differentiable=False,
        )
    )


def _where_type(types: list[TensorType]) -> TensorType:
    if types[0].dtype != "bool":
        raise RuleError("inputs[0]", f"where's condition must be bool, got {types[0].dtype}")
    dtype = same_dtype(types[1:], (*NUMERIC, "bool"), "where")
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dtype)


register(
    OpDef(
        "where",
        3,
        _where_type,
        np.where,
        "c ? a : b; the branch not taken gets exactly zero gradient",
        partials=(
            None,
            lambda g, ans, c, a, b: op.where(c, g, 0),
            lambda g, ans, c, a, b: op.where(c, 0, g),
        ),
    )
)
