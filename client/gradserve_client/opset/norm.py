"""Normalisation: layer_norm (ONNX LayerNormalization) and batch_norm in inference form (ONNX
BatchNormalization with training_mode=0)."""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    FLOAT_DTYPES,
    AttrSpec,
    RuleError,
    TensorType,
    define,
    normalize_axes,
    same_dtype,
    same_size,
    show,
)

EPSILON = 1e-5
EPSILON_ATTR = {"epsilon": AttrSpec("float", EPSILON, doc="added to the variance")}


def _check_epsilon(epsilon: float) -> None:
    if epsilon < 0:
        raise RuleError("attrs.epsilon", f"must be >= 0, got {epsilon}")


def _layer_norm_type(
    types: Sequence[TensorType], axis: int = -1, epsilon: float = EPSILON
) -> TensorType:
    same_dtype(types, FLOAT_DTYPES, "layer_norm")
    _check_epsilon(epsilon)
    x = types[0]
    if x.shape is None:
        return x
    if not x.shape:
        raise RuleError("inputs[0]", "layer_norm needs at least one axis, got a scalar")
    (first,) = normalize_axes((axis,), len(x.shape))
    inner = x.shape[len(x.shape) + first :]
    for i, p in enumerate(types[1:], 1):
        if p.shape is None:
            continue
        tail = inner[len(inner) - len(p.shape) :] if p.shape else ()
        if len(p.shape) > len(inner) or any(
            d != 1 and not same_size(d, n) for d, n in zip(p.shape, tail, strict=True)
        ):
            raise RuleError(
                f"inputs[{i}]",
                f"{'scale' if i == 1 else 'bias'} of shape {list(p.shape)} does not broadcast to "
                f"the normalised shape {list(inner)}",
            )
    return x


def _batch_norm_type(types: Sequence[TensorType], epsilon: float = EPSILON) -> TensorType:
    dtype = same_dtype(types, FLOAT_DTYPES, "batch_norm")
    _check_epsilon(epsilon)
    x = types[0]
    if x.shape is not None and len(x.shape) < 2:
        raise RuleError("inputs[0]", f"batch_norm needs shape (N, C, ...), got {list(x.shape)}")
    channels = -1 if x.shape is None else x.shape[1]
    for i, name in enumerate(("scale", "bias", "mean", "var"), 1):
        shape = types[i].shape
        if shape is not None and (len(shape) != 1 or not same_size(shape[0], channels)):
            raise RuleError(
                f"inputs[{i}]",
                f"{name} needs shape [{channels}] (one per channel), got {show(shape)}",
            )
    return TensorType(x.shape, dtype)


define(
    "layer_norm",
    "x [scale] [bias]",
    _layer_norm_type,
    "(x - mean) / sqrt(var + epsilon) over the axes axis..-1, times scale, plus bias (both "
    "optional, broadcast to those axes), as ONNX LayerNormalization",
    attrs={"axis": AttrSpec("int", -1, doc="the first normalised axis"), **EPSILON_ATTR},
)
define(
    "batch_norm",
    "x scale bias mean var",
    _batch_norm_type,
    "batch normalisation in inference form: (x - mean) / sqrt(var + epsilon) * scale + bias, "
    "per channel (axis 1) of x (N, C, ...)",
    attrs=EPSILON_ATTR,
)
