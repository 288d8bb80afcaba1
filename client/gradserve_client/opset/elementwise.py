"""Element-wise ops: operands broadcast (numpy's rule) and share one dtype."""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    DTYPES,
    FLOAT_DTYPES,
    NUMERIC,
    DTypeError,
    TensorType,
    broadcast_shapes,
    define,
    elementwise_type,
    same_dtype,
)


def unary(name: str, doc: str, allowed: tuple[str, ...] = FLOAT_DTYPES, **options) -> None:
    define(name, "x", elementwise_type(allowed), doc, elementwise=True, **options)


def binary(name: str, doc: str, allowed: tuple[str, ...] = FLOAT_DTYPES, **options) -> None:
    define(name, "x1 x2", elementwise_type(allowed), doc, elementwise=True, **options)


unary("negative", "-x", NUMERIC)
unary("abs", "|x|; abs'(0) = 0", NUMERIC)
unary("sign", "the sign of x (-1, 0 or 1); no gradient", NUMERIC, differentiable=False)
unary("square", "x**2", NUMERIC)
unary("exp", "e**x")
unary("exp2", "2**x")
unary("expm1", "e**x - 1, accurate near 0")
unary("log", "natural logarithm")
unary("log2", "base-2 logarithm")
unary("log10", "base-10 logarithm")
unary("log1p", "log(1 + x), accurate near 0")
unary("sqrt", "square root")
unary("reciprocal", "1/x")
unary("sin", "sine")
unary("cos", "cosine")
unary("tan", "tangent")
unary("arcsin", "inverse sine")
unary("arccos", "inverse cosine")
unary("arctan", "inverse tangent")
unary("sinh", "hyperbolic sine")
unary("cosh", "hyperbolic cosine")
unary("tanh", "hyperbolic tangent")
unary("arcsinh", "inverse hyperbolic sine")
unary("arccosh", "inverse hyperbolic cosine")
unary("arctanh", "inverse hyperbolic tangent")
unary("sigmoid", "1/(1 + e**-x), computed stably")
unary("relu", "max(0, x); relu'(0) = 0")
unary("softplus", "log(1 + e**x), computed stably")

binary("add", "x1 + x2", NUMERIC)
binary("subtract", "x1 - x2", NUMERIC)
binary("multiply", "x1 * x2", NUMERIC)
binary("divide", "x1 / x2")
binary("power", "x1 ** x2; d/dx2 is taken as 0 where x1 == 0")
binary("maximum", "element-wise max; a tie splits the gradient evenly", NUMERIC)
binary("minimum", "element-wise min; a tie splits the gradient evenly", NUMERIC)
binary("arctan2", "the angle of the point (x2, x1): arctan(x1 / x2) by quadrant, as numpy")
binary("hypot", "sqrt(x1**2 + x2**2) without overflow")
binary("logaddexp", "log(e**x1 + e**x2), computed stably")
binary(
    "safe_multiply",
    "x1 * x2, but 0 where x1 == 0 even if x2 is inf or NaN (used by derivative rules)",
    internal=True,
)

for _name, _doc in (
    ("less", "x1 < x2"),
    ("less_equal", "x1 <= x2"),
    ("greater", "x1 > x2"),
    ("greater_equal", "x1 >= x2"),
    ("equal", "x1 == x2"),
    ("not_equal", "x1 != x2"),
):
    define(
        _name,
        "x1 x2",
        elementwise_type(DTYPES, result="bool"),
        f"{_doc}, as bool; no gradient",
        elementwise=True,
        differentiable=False,
    )


def _where_type(types: Sequence[TensorType]) -> TensorType:
    if types[0].dtype != "bool":
        raise DTypeError("inputs[0]", f"where's condition must be bool, got {types[0].dtype}")
    dtype = same_dtype(types, DTYPES, "where", first=1)
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dtype)


define(
    "where",
    "condition:bool x1 x2",
    _where_type,
    "x1 where condition is true, else x2; the branch not taken gets exactly zero gradient",
    elementwise=True,
)
