"""Element-wise ops: operands broadcast (numpy's rule) and share one dtype."""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    DTYPES,
    FLOAT_DTYPES,
    NUMERIC,
    AttrSpec,
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


# ---- activations and friends -------------------------------------------------------------------

unary("erf", "the error function, 2/sqrt(pi) * the integral of e**-t**2 from 0 to x")
unary(
    "gelu",
    "x * Phi(x), Phi the standard normal CDF; approximate='tanh' is 0.5 * x * (1 + "
    "tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))",
    attrs={
        "approximate": AttrSpec(
            "string", "none", choices=("none", "tanh"), doc="the exact form, or the tanh one"
        )
    },
)
unary(
    "leaky_relu",
    "x where x > 0, else alpha * x; the slope at 0 is alpha (relu'(0) = 0 extended)",
    attrs={"alpha": AttrSpec("float", 0.01, doc="the slope for x <= 0")},
)
unary(
    "elu",
    "x where x > 0, else alpha * (e**x - 1); the slope at 0 is alpha",
    attrs={"alpha": AttrSpec("float", 1.0, doc="the scale of the negative part")},
)
unary(
    "selu",
    "gamma * (x where x > 0, else alpha * (e**x - 1)), ONNX's defaults; the slope at 0 is "
    "gamma * alpha",
    attrs={
        "alpha": AttrSpec("float", 1.67326319217681884765625, doc="the negative part's scale"),
        "gamma": AttrSpec("float", 1.05070102214813232421875, doc="the overall scale"),
    },
)
unary(
    "hardsigmoid",
    "max(0, min(1, alpha * x + beta)); the slope at the two kinks is 0",
    attrs={
        "alpha": AttrSpec("float", 0.2, doc="the slope"),
        "beta": AttrSpec("float", 0.5, doc="the value at 0"),
    },
)
unary("softsign", "x / (1 + |x|)")
binary(
    "mod",
    "numpy mod: the remainder of x1 / x2 with the sign of x2; d/dx2 = -floor(x1 / x2)",
    NUMERIC,
)
binary(
    "fmod",
    "C fmod: the remainder of x1 / x2 with the sign of x1; d/dx2 = -trunc(x1 / x2)",
    NUMERIC,
)
define(
    "clip",
    "x lo hi",
    elementwise_type(NUMERIC),
    "numpy clip, min(max(x, lo), hi); the gradient goes to x where lo <= x <= hi (bounds "
    "included, as torch.clamp), to lo where x < lo, to hi where x > hi (where lo > hi the "
    "result is hi, and so is the gradient)",
    elementwise=True,
)
