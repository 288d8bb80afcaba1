"""Ops with no operands (constants) and the plumbing ops that derivative rules emit.

conv's derivatives are two ops of their own, `conv_input_grad` (its VJP w.r.t. x, a transposed
convolution) and `conv_kernel_grad` (its VJP w.r.t. the kernel, a correlation of x with the
cotangent): with conv they are closed under differentiation. They take the geometry resolved
(`window`'s attrs: no auto_pad) and conv's `groups`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .conv import WINDOW_ATTRS, spatial_operand, window
from .core import (
    DTYPES,
    FLOAT_DTYPES,
    AttrSpec,
    RuleError,
    Shape,
    TensorType,
    define,
    same_dtype,
    same_size,
)


def _constant_type(types: Sequence[TensorType], value: np.ndarray) -> TensorType:
    return TensorType(value.shape, value.dtype.name)


def _zeros_type(types: Sequence[TensorType], shape: Shape, dtype: str) -> TensorType:
    if any(d < 0 for d in shape):
        raise RuleError("attrs.shape", f"negative dimension in {list(shape)}")
    return TensorType(shape, dtype)


def _sum_to_type(types: Sequence[TensorType], shape: Shape, batch_ndim: int) -> TensorType:
    (x,) = types
    if x.shape is None:
        return TensorType(None, x.dtype)
    batch = x.shape[:batch_ndim]
    rest = x.shape[batch_ndim:]
    if len(shape) > len(rest) or any(
        d != 1 and d != r and r >= 0
        for d, r in zip(shape, rest[len(rest) - len(shape) :], strict=True)
    ):
        raise RuleError("attrs.shape", f"cannot sum {list(rest)} down to {list(shape)}")
    return TensorType(batch + shape, x.dtype)


define(
    "constant",
    "",
    _constant_type,
    "a tensor given as the attribute `value`",
    attrs={"value": AttrSpec("tensor", required=True)},
    differentiable=False,
    sdk=False,  # gs.constant(value, dtype, graph=g) and Graph.constant
)
define(
    "zeros",
    "",
    _zeros_type,
    "a tensor of zeros of the given shape and dtype",
    attrs={
        "shape": AttrSpec("ints", required=True),
        "dtype": AttrSpec("string", "float64", choices=DTYPES),
    },
    differentiable=False,
    internal=True,
)
define(
    "sum_to",
    "x",
    _sum_to_type,
    "sum the trailing axes down to `shape` (numpy broadcasting reversed), keeping the first "
    "`batch_ndim` axes",
    attrs={"shape": AttrSpec("ints", required=True), "batch_ndim": AttrSpec("int", 0)},
    internal=True,
)


# ---- conv's derivatives -------------------------------------------------------------------------


def _check_windows(spatial: Shape, windows: Shape, attrs: dict, field: str) -> None:
    """`windows` (the spatial shape of the cotangent) must be conv's output over `spatial`."""
    kernel = attrs["kernel_shape"]
    if len(kernel) != len(spatial):
        raise RuleError("attrs.kernel_shape", f"needs {len(spatial)} values, got {len(kernel)}")
    geom = window(spatial, kernel, attrs["strides"], attrs["pads"], attrs["dilations"])
    if len(windows) != len(geom.out) or not all(
        same_size(a, b) for a, b in zip(windows, geom.out, strict=True)
    ):
        raise RuleError(
            field, f"has spatial shape {list(windows)}, the windows are {list(geom.out)}"
        )


def _check_groups(groups: int, channels: dict[str, int]) -> None:
    if groups < 1:
        raise RuleError("attrs.groups", f"must be positive, got {groups}")
    for field, c in channels.items():
        if c >= 0 and c % groups:
            raise RuleError(field, f"has {c} channels, not divisible by groups={groups}")


def _conv_input_grad_type(
    types: Sequence[TensorType], shape: Shape, groups: int = 1, **attrs
) -> TensorType:
    dtype = same_dtype(types, FLOAT_DTYPES, "conv_input_grad")
    g, w = types
    spatial_operand(g)
    if g.shape is None or w.shape is None:
        return TensorType(None, dtype)
    if len(w.shape) != len(g.shape) or not same_size(w.shape[0], g.shape[1]):
        raise RuleError(
            "inputs[1]", f"the kernel needs shape ({g.shape[1]}, C/groups, *K), got {list(w.shape)}"
        )
    _check_groups(groups, {"inputs[0]": g.shape[1]})
    _check_windows(tuple(shape), g.shape[2:], attrs, "inputs[0]")
    if not all(same_size(a, b) for a, b in zip(w.shape[2:], attrs["kernel_shape"], strict=True)):
        raise RuleError("attrs.kernel_shape", f"is not the kernel's {list(w.shape[2:])}")
    channels = -1 if w.shape[1] < 0 else groups * w.shape[1]
    return TensorType((g.shape[0], channels, *shape), dtype)


def _conv_kernel_grad_type(types: Sequence[TensorType], groups: int = 1, **attrs) -> TensorType:
    dtype = same_dtype(types, FLOAT_DTYPES, "conv_kernel_grad")
    x, g = types
    spatial_operand(x)
    spatial_operand(g, "inputs[1]")
    if x.shape is None or g.shape is None:
        return TensorType(None, dtype)
    if len(g.shape) != len(x.shape) or not same_size(x.shape[0], g.shape[0]):
        raise RuleError(
            "inputs[1]", f"must be conv's output over {list(x.shape)}, got {list(g.shape)}"
        )
    _check_groups(groups, {"inputs[0]": x.shape[1], "inputs[1]": g.shape[1]})
    _check_windows(x.shape[2:], g.shape[2:], attrs, "inputs[1]")
    per_group = -1 if x.shape[1] < 0 else x.shape[1] // groups
    return TensorType((g.shape[1], per_group, *attrs["kernel_shape"]), dtype)


GROUPS = {"groups": AttrSpec("int", 1, doc="conv's channel groups")}
define(
    "conv_input_grad",
    "g w",
    _conv_input_grad_type,
    "conv's VJP w.r.t. x: the cotangent g (N, O, *S') through the kernel w (O, C/groups, *K), "
    "added back into (N, C, *shape) (a transposed convolution)",
    attrs={
        **WINDOW_ATTRS,
        "shape": AttrSpec("ints", required=True, doc="x's spatial shape"),
        **GROUPS,
    },
    internal=True,
)
define(
    "conv_kernel_grad",
    "x g",
    _conv_kernel_grad_type,
    "conv's VJP w.r.t. the kernel: the correlation of x (N, C, *S) with the cotangent g "
    "(N, O, *S'), shape (O, C/groups, *kernel_shape)",
    attrs={**WINDOW_ATTRS, **GROUPS},
    internal=True,
)
