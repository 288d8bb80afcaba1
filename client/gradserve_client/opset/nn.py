"""Neural-network ops: softmax, log_softmax, cross_entropy, one_hot and mse."""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    FLOAT_DTYPES,
    INT_DTYPES,
    AttrSpec,
    DTypeError,
    RuleError,
    TensorType,
    broadcast_shapes,
    define,
    normalize_axes,
    same_dtype,
    show,
    unify,
)

REDUCTION = {
    "reduction": AttrSpec(
        "string", "mean", choices=("mean", "sum", "none"), doc="how the losses are combined"
    )
}


def _axis_type(types: Sequence[TensorType], axis: int = -1) -> TensorType:
    (x,) = types
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError("inputs[0]", f"needs float32/float64, got {x.dtype}")
    if x.shape is not None:
        if not x.shape:
            raise RuleError("inputs[0]", "needs at least one axis, got a scalar")
        normalize_axes((axis,), len(x.shape))
    return x


SOFTMAX_AXIS = {"axis": AttrSpec("int", -1, doc="the axis to normalise over")}
define(
    "softmax",
    "x",
    _axis_type,
    "exp(x) / sum(exp(x)) along axis, shifted by the max; an all -inf slice gives 0",
    attrs=SOFTMAX_AXIS,
)
define(
    "log_softmax",
    "x",
    _axis_type,
    "x - logsumexp(x) along axis, computed stably; an all -inf slice gives -inf",
    attrs=SOFTMAX_AXIS,
)


def _cross_entropy_type(types: Sequence[TensorType], reduction: str = "mean") -> TensorType:
    logits, labels = types
    if logits.dtype not in FLOAT_DTYPES:
        raise DTypeError("inputs[0]", f"logits need float32/float64, got {logits.dtype}")
    if logits.shape is not None and (not logits.shape or logits.shape[-1] == 0):
        raise RuleError(
            "inputs[0]", f"logits {list(logits.shape)} need a non-empty class axis (the last)"
        )
    if labels.dtype not in INT_DTYPES:
        raise DTypeError("inputs[1]", f"labels need int64/int32, got {labels.dtype}")
    shape = labels.shape
    if logits.shape is not None:
        rows = logits.shape[:-1]
        shape = rows if labels.shape is None else unify(labels.shape, rows)
        if shape is None:
            raise RuleError(
                "inputs[1]",
                f"labels of shape {show(labels.shape)} must be the logits' shape without the "
                f"class axis, {list(rows)}",
            )
    return TensorType(shape if reduction == "none" else (), logits.dtype)


def _cross_entropy_grad_type(types: Sequence[TensorType]) -> TensorType:
    _cross_entropy_type(types, "none")  # the same operands as cross_entropy
    return types[0]


def _one_hot_type(types: Sequence[TensorType], depth: int, dtype: str = "float64") -> TensorType:
    (labels,) = types
    if labels.dtype not in INT_DTYPES:
        raise DTypeError("inputs[0]", f"needs int64/int32, got {labels.dtype}")
    if depth < 0:
        raise RuleError("attrs.depth", f"must be >= 0, got {depth}")
    shape = None if labels.shape is None else (*labels.shape, depth)
    return TensorType(shape, dtype)


def _mse_type(types: Sequence[TensorType], reduction: str = "mean") -> TensorType:
    dtype = same_dtype(types, FLOAT_DTYPES, "mse")
    shape = broadcast_shapes(*(t.shape for t in types))
    return TensorType(shape if reduction == "none" else (), dtype)


define(
    "cross_entropy",
    "logits labels:int",
    _cross_entropy_type,
    "-log_softmax(logits)[label] (class axis last), reduced by mean/sum/none like torch; an "
    "out-of-range label gives NaN; labels get no gradient",
    attrs=REDUCTION,
)
define(
    "cross_entropy_grad",
    "logits labels:int",
    _cross_entropy_grad_type,
    "softmax(logits) minus 1 at the label (class axis last): the gradient of cross_entropy "
    "per example; a row of NaN for a label out of range; labels get no gradient",
    internal=True,
)
define(
    "one_hot",
    "labels:int",
    _one_hot_type,
    "labels (...) as one-hot rows (..., depth); a row of NaN for a label out of range",
    attrs={
        "depth": AttrSpec("int", required=True, doc="the number of classes"),
        "dtype": AttrSpec("string", "float64", choices=FLOAT_DTYPES, doc="the result's dtype"),
    },
    differentiable=False,
)
define(
    "mse",
    "pred target",
    _mse_type,
    "mean (sum, none) of (pred - target)**2 with numpy broadcasting",
    attrs=REDUCTION,
)
