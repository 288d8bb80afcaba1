"""Reductions over `axis` (ints; absent = all axes), keeping the reduced axes if `keepdims`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .core import (
    DTYPES,
    FLOAT_DTYPES,
    NUMERIC,
    AttrSpec,
    DTypeError,
    RuleError,
    Shape,
    TensorType,
    define,
    normalize_axes,
    size,
)

Axis = tuple[int, ...] | None


def axes_of(axis: Axis, ndim: int) -> tuple[int, ...]:
    """The reduced axes as sorted negative numbers (absent: all of them)."""
    return tuple(range(-ndim, 0)) if axis is None else normalize_axes(axis, ndim)


def kept_shape(shape: Shape, axes: tuple[int, ...]) -> Shape:
    """`shape` with the reduced axes as size 1 (the keepdims shape)."""
    ndim = len(shape)
    return tuple(1 if i - ndim in axes else d for i, d in enumerate(shape))


def dropped_shape(shape: Shape, axes: tuple[int, ...]) -> Shape:
    """`shape` without the reduced axes."""
    return tuple(d for i, d in enumerate(shape) if i - len(shape) not in axes)


def reduction_type(
    allowed: tuple[str, ...],
    result: Callable[[str], str] = lambda dtype: dtype,
    nonempty: bool = False,
    moment: bool = False,
) -> Callable[..., TensorType]:
    def infer(
        types: Sequence[TensorType], axis: Axis = None, keepdims: int = 0, ddof: int = 0
    ) -> TensorType:
        (x,) = types
        if x.dtype not in allowed:
            raise DTypeError("inputs[0]", f"needs {'/'.join(allowed)}, got {x.dtype}")
        if ddof < 0:
            raise RuleError("attrs.ddof", f"must be >= 0, got {ddof}")
        if x.shape is None:
            return TensorType(None, result(x.dtype))
        axes = axes_of(axis, len(x.shape))
        n = size(tuple(x.shape[a] for a in axes))  # -1 if unknown
        if nonempty and n == 0:
            raise RuleError("attrs.axis", f"cannot reduce {list(x.shape)} over empty axes")
        if moment and 0 <= n <= ddof:  # N - ddof is a divisor
            field = "attrs.ddof" if ddof else "attrs.axis"
            raise RuleError(field, f"{n} elements with ddof {ddof} leave no degrees of freedom")
        shape = kept_shape(x.shape, axes) if keepdims else dropped_shape(x.shape, axes)
        return TensorType(shape, result(x.dtype))

    return infer


def _counting(dtype: str) -> str:
    return "int64" if dtype == "bool" else dtype


AXIS = {
    "axis": AttrSpec("ints", doc="the axes to reduce (all if absent)"),
    "keepdims": AttrSpec("int", 0, choices=(0, 1), doc="keep the reduced axes as size 1"),
}
MOMENT = {**AXIS, "ddof": AttrSpec("int", 0, doc="divide by N - ddof")}


def reduction(name: str, infer: Callable[..., TensorType], doc: str, attrs=AXIS) -> None:
    define(name, "x", infer, doc, attrs=attrs)


reduction("sum", reduction_type(DTYPES, _counting), "sum over axis; bool counts as int64")
reduction("mean", reduction_type(FLOAT_DTYPES), "arithmetic mean over axis")
reduction(
    "max",
    reduction_type(DTYPES, nonempty=True),
    "maximum over axis; tied elements share the gradient evenly",
)
reduction(
    "min",
    reduction_type(DTYPES, nonempty=True),
    "minimum over axis; tied elements share the gradient evenly",
)
reduction(
    "prod",
    reduction_type(DTYPES, _counting),
    "product over axis; the gradient is the product of the other elements (exact with zeros); "
    "second derivatives are not supported",
)
reduction(
    "var",
    reduction_type(FLOAT_DTYPES, moment=True),
    "variance over axis, dividing by N - ddof",
    MOMENT,
)
reduction(
    "std",
    reduction_type(FLOAT_DTYPES, moment=True),
    "standard deviation over axis, dividing by N - ddof; its gradient is 0 where it is 0",
    MOMENT,
)
reduction(
    "logsumexp",
    reduction_type(FLOAT_DTYPES),
    "log(sum(exp(x))) over axis, shifted by the max; an all -inf slice gives -inf and a zero "
    "gradient",
)
define(
    "prod_others",
    "x",
    lambda types, axis: TensorType(types[0].shape, types[0].dtype),
    "for each element, the product of the other elements of its slice over `axis` (the "
    "gradient of prod, exact with zeros); it has no derivative rules of its own",
    attrs={"axis": AttrSpec("ints", required=True)},
    internal=True,
)


# ---- cumsum, argmax, argmin --------------------------------------------------------------------


def _cumsum_type(
    types: Sequence[TensorType], axis: int, exclusive: int = 0, reverse: int = 0
) -> TensorType:
    (x,) = types
    if x.dtype not in NUMERIC:
        raise DTypeError("inputs[0]", f"needs {'/'.join(NUMERIC)}, got {x.dtype}")
    if x.shape is not None:
        normalize_axes((axis,), len(x.shape))
    return x


def _arg_type(types: Sequence[TensorType], axis: int, keepdims: int = 0) -> TensorType:
    (x,) = types
    if x.dtype not in NUMERIC:
        raise DTypeError("inputs[0]", f"needs {'/'.join(NUMERIC)}, got {x.dtype}")
    if x.shape is None:
        return TensorType(None, "int64")
    axes = normalize_axes((axis,), len(x.shape))
    if x.shape[axes[0]] == 0:
        raise RuleError("attrs.axis", f"cannot take the arg of an empty axis of {list(x.shape)}")
    shape = kept_shape(x.shape, axes) if keepdims else dropped_shape(x.shape, axes)
    return TensorType(shape, "int64")


define(
    "cumsum",
    "x",
    _cumsum_type,
    "numpy cumsum along `axis`; `exclusive` leaves each element out of its own sum (ONNX), "
    "`reverse` sums from the end",
    attrs={
        "axis": AttrSpec("int", required=True, doc="the axis to sum along"),
        "exclusive": AttrSpec("int", 0, choices=(0, 1), doc="sum the elements before, not up to"),
        "reverse": AttrSpec("int", 0, choices=(0, 1), doc="sum from the end"),
    },
)
ARG_AXIS = {
    "axis": AttrSpec("int", required=True, doc="the axis to search"),
    "keepdims": AttrSpec("int", 0, choices=(0, 1), doc="keep that axis as size 1"),
}
define(
    "argmax",
    "x",
    _arg_type,
    "numpy argmax: the int64 index of the first maximum along `axis`; no gradient",
    attrs=ARG_AXIS,
    differentiable=False,
)
define(
    "argmin",
    "x",
    _arg_type,
    "numpy argmin: the int64 index of the first minimum along `axis`; no gradient",
    attrs=ARG_AXIS,
    differentiable=False,
)
