"""The ONNX operators gradserve imports: one handler per ONNX op type, emitting gradserve ops.

A handler gets a `Node` (operands as Values, attributes) and returns the Value of each ONNX
output. It names every attribute it understands (others are refused) and reads shape and axes
operands with `Node.static`, which refuses them unless they are known at import. When every
operand of a node is known at import, the converter folds it with ONNX's reference
implementation instead (`convert.py`), so these handlers only see run-time values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._model import Node, Value
from .shapes import reshape_target

Handler = Callable[[Node], "Value | list[Value]"]


@dataclass(frozen=True, slots=True)
class OpHandler:
    convert: Handler
    static: tuple[int, ...]  # operand positions that must be known at import


HANDLERS: dict[str, OpHandler] = {}

#: ONNX ops that are only ever folded at import (their results are shapes and constants).
FOLD_ONLY = ("Constant", "ConstantOfShape", "Range")


def handler(*op_types: str, static: tuple[int, ...] = ()) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op_type in op_types:
            HANDLERS[op_type] = OpHandler(fn, static)
        return fn

    return register


def _axis(n: Node, axis: int, rank: int, what: str = "attribute 'axis'") -> int:
    if not -rank <= axis < rank:
        raise n.fail(f"axis {axis} is out of range for rank {rank}", what)
    return axis % rank


# ---- element-wise ----------------------------------------------------------------------------

_UNARY = {
    "Abs": "abs", "Neg": "negative", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Sin": "sin",
    "Cos": "cos", "Tan": "tan", "Asin": "arcsin", "Acos": "arccos", "Atan": "arctan",
    "Sinh": "sinh", "Cosh": "cosh", "Tanh": "tanh", "Asinh": "arcsinh", "Acosh": "arccosh",
    "Atanh": "arctanh", "Sigmoid": "sigmoid", "Relu": "relu", "Softplus": "softplus",
    "Sign": "sign", "Reciprocal": "reciprocal", "Erf": "erf", "Softsign": "softsign",
}  # fmt: skip
_BINARY = {
    "Add": "add", "Sub": "subtract", "Mul": "multiply", "Equal": "equal",
    "Less": "less", "LessOrEqual": "less_equal", "Greater": "greater",
    "GreaterOrEqual": "greater_equal",
}  # fmt: skip


def _unary(gs_op: str) -> Handler:
    def convert(n: Node) -> Value:
        n.check_attrs(())
        return n.emit(gs_op, [n.input(0)], 0)

    return convert


def _binary(gs_op: str) -> Handler:
    def convert(n: Node) -> Value:
        n.check_attrs(())
        return n.emit(gs_op, [n.input(0), n.input(1)], 0)

    return convert


for _onnx, _gs in _UNARY.items():
    handler(_onnx)(_unary(_gs))
for _onnx, _gs in _BINARY.items():
    handler(_onnx)(_binary(_gs))


def _in_float64(n: Node, gs_op: str, operands: list[Value], dtype: str) -> Value:
    """An integer Div or Pow: computed in float64 and cast back to `dtype`, which truncates
    toward zero as ONNX's integer Div does. Exact while the values stay below 2**53 in
    magnitude (the float64 quotient of such integers never rounds across an integer)."""
    floats = [_astype(n, v, "float64", None) for v in operands]
    return n.emit("astype", [n.emit(gs_op, floats)], 0, dtype=dtype)


@handler("Div")
def _div(n: Node) -> Value:
    n.check_attrs(())
    a, b = n.input(0), n.input(1)
    if np.dtype(a.dtype).kind == "i":
        return _in_float64(n, "divide", [a, b], a.dtype)
    return n.emit("divide", [a, b], 0)


@handler("Pow")
def _pow(n: Node) -> Value:
    n.check_attrs(())
    base, exponent = n.input(0), n.input(1)
    if np.dtype(base.dtype).kind == "i":  # the result has the base's type, whatever the exponent's
        return _in_float64(n, "power", [base, exponent], base.dtype)
    if exponent.const is not None:  # ONNX allows an exponent of another type
        exponent = Value.of(exponent.const.astype(base.dtype))
    return n.emit("power", [base, _astype(n, exponent, base.dtype, None)], 0)


@handler("Max", "Min", "Sum", "Mean")
def _variadic(n: Node) -> Value:
    """Max, Min, Sum and Mean of any number of operands, broadcast: a chain of binary ops."""
    n.check_attrs(())
    gs_op = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}[n.op_type]
    operands = [n.input(i) for i in range(len(n.inputs))]
    last = 0 if n.op_type != "Mean" else None
    if len(operands) == 1:
        acc = n.emit("slice", operands, last, index="...")
    else:
        acc = operands[0]
        for i, x in enumerate(operands[1:], 2):
            acc = n.emit(gs_op, [acc, x], last if i == len(operands) else None)
    if n.op_type == "Mean":
        count = n.constant(len(operands), acc.dtype)
        acc = n.emit("divide", [acc, count], 0)
    return acc


@handler("LeakyRelu")
def _leaky_relu(n: Node) -> Value:
    n.check_attrs(("alpha",))
    return n.emit("leaky_relu", [n.input(0)], 0, alpha=float(n.attr("alpha", 0.01)))


@handler("Elu")
def _elu(n: Node) -> Value:
    n.check_attrs(("alpha",))
    return n.emit("elu", [n.input(0)], 0, alpha=float(n.attr("alpha", 1.0)))


@handler("Selu")
def _selu(n: Node) -> Value:
    n.check_attrs(("alpha", "gamma"))
    attrs = {k: float(n.attrs[k]) for k in ("alpha", "gamma") if k in n.attrs}
    return n.emit("selu", [n.input(0)], 0, **attrs)


@handler("HardSigmoid")
def _hardsigmoid(n: Node) -> Value:
    n.check_attrs(("alpha", "beta"))
    alpha, beta = float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5))
    return n.emit("hardsigmoid", [n.input(0)], 0, alpha=alpha, beta=beta)


@handler("PRelu")
def _prelu(n: Node) -> Value:
    """x where x > 0, else slope * x: at 0 the derivative is the slope's, as torch's PReLU."""
    n.check_attrs(())
    x, slope = n.input(0), n.input(1)
    positive = n.emit("greater", [x, n.constant(0, x.dtype)])
    return n.emit("where", [positive, x, n.emit("multiply", [slope, x])], 0)


@handler("HardSwish")
def _hardswish(n: Node) -> Value:
    n.check_attrs(())
    x = n.input(0)
    return n.emit("multiply", [x, n.emit("hardsigmoid", [x], alpha=1 / 6, beta=0.5)], 0)


@handler("Mish")
def _mish(n: Node) -> Value:
    n.check_attrs(())
    x = n.input(0)
    return n.emit("multiply", [x, n.emit("tanh", [n.emit("softplus", [x])])], 0)


@handler("Not")
def _not(n: Node) -> Value:
    n.check_attrs(())
    return n.emit("equal", [n.input(0), n.constant(False, "bool")], 0)


@handler("And", "Or", "Xor")
def _logical(n: Node) -> Value:
    """And is where(a, b, False), Or where(a, True, b), Xor a != b (all broadcast)."""
    n.check_attrs(())
    a, b = n.input(0), n.input(1)
    if n.op_type == "Xor":
        return n.emit("not_equal", [a, b], 0)
    fill = n.constant(n.op_type == "Or", "bool")
    return n.emit("where", [a, b, fill] if n.op_type == "And" else [a, fill, b], 0)


@handler("Gelu")
def _gelu(n: Node) -> Value:
    n.check_attrs(("approximate",))
    approximate = n.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise n.fail(
            f"approximate={approximate!r}: use 'none' or 'tanh'", "attribute 'approximate'"
        )
    return n.emit("gelu", [n.input(0)], 0, approximate=approximate)


@handler("Clip")
def _clip(n: Node) -> Value:
    n.check_attrs(())
    x = n.input(0)
    dtype = np.dtype(x.dtype)
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    lo = n.input(1) if n.has(1) else n.constant(-np.inf if dtype.kind == "f" else info.min, x.dtype)
    hi = n.input(2) if n.has(2) else n.constant(np.inf if dtype.kind == "f" else info.max, x.dtype)
    return n.emit("clip", [x, lo, hi], 0)


@handler("Mod")
def _mod(n: Node) -> Value:
    n.check_attrs(("fmod",))
    return n.emit("fmod" if n.attr("fmod", 0) else "mod", [n.input(0), n.input(1)], 0)


@handler("Where")
def _where(n: Node) -> Value:
    n.check_attrs(())
    return n.emit("where", [n.input(0), n.input(1), n.input(2)], 0)


@handler("Identity")
def _identity(n: Node) -> Value:
    n.check_attrs(())
    return n.input(0)


@handler("Dropout", static=(1, 2))
def _dropout(n: Node) -> list[Value]:
    """Dropout at inference (or with ratio 0): the identity, and a mask of ones. Dropout that
    drops is random, and refused."""
    n.check_attrs(("seed",))
    training = n.has(2) and bool(np.asarray(n.static(2, "training_mode")).item())
    ratio = float(np.asarray(n.static(1, "ratio")).item()) if n.has(1) else 0.5
    if training and ratio != 0:
        raise n.fail("training mode with a ratio > 0 is random, which is not supported", "input 2")
    x = n.input(0)
    if len(n.outputs) < 2 or not n.outputs[1]:
        return [x]
    if x.static_shape is None:
        raise n.fail("the mask output needs a static shape", "output 1")
    return [x, Value.of(np.ones(x.static_shape, dtype=bool))]


@handler("Cast", "CastLike")
def _cast(n: Node) -> Value:
    from onnx import helper

    n.check_attrs(("to", "saturate", "round_mode"))
    x = n.input(0)
    if n.op_type == "CastLike":
        dtype = n.input(1).dtype
        if x.const is not None:  # only the other operand's dtype is needed: fold
            return Value.of(x.const.astype(dtype))
    else:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(n.attr("to")))).name
    return _astype(n, x, dtype, 0)


def _astype(n: Node, x: Value, dtype: str, output: int | None) -> Value:
    return x if x.dtype == dtype else n.emit("astype", [x], output, dtype=dtype)


# ---- linear algebra and neural-network layers ------------------------------------------------


@handler("MatMul")
def _matmul(n: Node) -> Value:
    n.check_attrs(())
    return n.emit("matmul", [n.input(0), n.input(1)], 0)


@handler("Gemm")
def _gemm(n: Node) -> Value:
    """alpha * A' @ B' + beta * C, with A' = A.T if transA, B' = B.T if transB."""
    n.check_attrs(("alpha", "beta", "transA", "transB"))
    a, b = n.input(0), n.input(1)
    if n.attr("transA", 0):
        a = n.emit("transpose", [a])
    if n.attr("transB", 0):
        b = n.emit("transpose", [b])
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    has_c = n.has(2)
    y = n.emit("matmul", [a, b], None if alpha != 1.0 or has_c else 0)
    if alpha != 1.0:
        y = n.emit("multiply", [y, n.constant(alpha, y.dtype)], None if has_c else 0)
    if has_c:
        c = n.input(2)
        if beta != 1.0:
            c = n.emit("multiply", [c, n.constant(beta, c.dtype)])
        y = n.emit("add", [y, c], 0)
    return y


@handler("Softmax", "LogSoftmax")
def _softmax(n: Node) -> Value:
    n.check_attrs(("axis",))
    gs_op = "softmax" if n.op_type == "Softmax" else "log_softmax"
    return n.emit(gs_op, [n.input(0)], 0, axis=int(n.attr("axis", -1)))


@handler("Conv")
def _conv(n: Node) -> Value:
    n.check_attrs(("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
    x, w = n.input(0), n.input(1)
    kernel = n.attr("kernel_shape")
    if kernel is not None and w.static_shape is not None and list(w.static_shape[2:]) != kernel:
        raise n.fail(
            f"kernel_shape {kernel} differs from the weights' {list(w.shape)}",
            "attribute 'kernel_shape'",
        )
    attrs = _window_attrs(n, ("dilations", "pads", "strides"))
    attrs["groups"] = int(n.attr("group", 1))
    operands = [x, w, n.input(2)] if n.has(2) else [x, w]
    return n.emit("conv", operands, 0, **attrs)


def _window_attrs(n: Node, keys: tuple[str, ...]) -> dict[str, object]:
    attrs: dict[str, object] = {k: [int(v) for v in n.attrs[k]] for k in keys if k in n.attrs}
    auto_pad = n.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise n.fail(f"auto_pad={auto_pad!r} is not an ONNX value", "attribute 'auto_pad'")
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    return attrs


@handler("MaxPool")
def _max_pool(n: Node) -> list[Value]:
    """max_pool, and its Indices output (if used) by max_pool_indices."""
    n.check_attrs(
        ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides")
    )
    attrs = _window_attrs(n, ("dilations", "kernel_shape", "pads", "strides"))
    attrs["ceil_mode"] = int(n.attr("ceil_mode", 0))
    out = [n.emit("max_pool", [n.input(0)], 0, **attrs)]
    if len(n.outputs) > 1 and n.outputs[1]:
        order = int(n.attr("storage_order", 0))
        out.append(n.emit("max_pool_indices", [n.input(0)], 1, storage_order=order, **attrs))
    return out


@handler("AveragePool")
def _avg_pool(n: Node) -> Value:
    n.check_attrs(
        (
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
        )
    )
    attrs = _window_attrs(n, ("dilations", "kernel_shape", "pads", "strides"))
    attrs["ceil_mode"] = int(n.attr("ceil_mode", 0))
    attrs["count_include_pad"] = int(n.attr("count_include_pad", 0))
    return n.emit("avg_pool", [n.input(0)], 0, **attrs)


@handler("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(n: Node) -> Value:
    n.check_attrs(())
    x = n.input(0)
    axes = list(range(2, n.rank(x)))
    gs_op = "mean" if n.op_type == "GlobalAveragePool" else "max"
    return n.emit(gs_op, [x], 0, axis=axes, keepdims=1)


@handler("BatchNormalization")
def _batch_norm(n: Node) -> list[Value]:
    """batch_norm at inference; in training mode, the batch's statistics normalise and the
    running ones are updated (ONNX's formulas: population variance, ``momentum`` kept)."""
    n.check_attrs(("epsilon", "momentum", "training_mode"))
    x, scale, bias, mean, var = (n.input(i) for i in range(5))
    epsilon = float(n.attr("epsilon", 1e-5))
    if not n.attr("training_mode", 0):
        if any(o for o in n.outputs[1:]):
            raise n.fail("at inference, only the output Y is defined", "output 1")
        return [n.emit("batch_norm", [x, scale, bias, mean, var], 0, epsilon=epsilon)]
    rank = n.rank(x)
    axes = [0, *range(2, rank)]
    channel = [-1] + [1] * (rank - 2)  # (C,) as (C, 1, ..., 1), to broadcast over x

    def per_channel(v: Value) -> Value:
        return n.emit("reshape", [v], shape=channel)

    batch_mean = n.emit("mean", [x], axis=axes)
    batch_var = n.emit("var", [x], axis=axes)
    centred = n.emit("subtract", [x, per_channel(batch_mean)])
    std = n.emit("sqrt", [n.emit("add", [batch_var, n.constant(epsilon, x.dtype)])])
    normed = n.emit("divide", [centred, per_channel(std)])
    y = n.emit("add", [n.emit("multiply", [normed, per_channel(scale)]), per_channel(bias)], 0)
    momentum = float(n.attr("momentum", 0.9))
    out = [y]
    for k, (running, batch) in enumerate([(mean, batch_mean), (var, batch_var)], 1):
        if k < len(n.outputs) and n.outputs[k]:
            kept = n.emit("multiply", [running, n.constant(momentum, x.dtype)])
            new = n.emit("multiply", [batch, n.constant(1 - momentum, x.dtype)])
            out.append(n.emit("add", [kept, new], k))
    return out


@handler("InstanceNormalization")
def _instance_norm(n: Node) -> Value:
    """Each sample's channel normalised over its spatial axes, then scaled and shifted per
    channel: mean, var and element-wise ops (torch exports GroupNorm as this too)."""
    n.check_attrs(("epsilon",))
    x, scale, bias = n.input(0), n.input(1), n.input(2)
    rank = n.rank(x)
    channel = [-1] + [1] * (rank - 2)
    axes = list(range(2, rank))
    centred = n.emit("subtract", [x, n.emit("mean", [x], axis=axes, keepdims=1)])
    variance = n.emit("var", [x], axis=axes, keepdims=1)
    epsilon = n.constant(float(n.attr("epsilon", 1e-5)), x.dtype)
    normed = n.emit("divide", [centred, n.emit("sqrt", [n.emit("add", [variance, epsilon])])])
    scaled = n.emit("multiply", [normed, n.emit("reshape", [scale], shape=channel)])
    return n.emit("add", [scaled, n.emit("reshape", [bias], shape=channel)], 0)


@handler("LayerNormalization")
def _layer_norm(n: Node) -> list[Value]:
    """layer_norm; the optional Mean and InvStdDev outputs are computed beside it."""
    n.check_attrs(("axis", "epsilon", "stash_type"))
    x = n.input(0)
    operands = [x, n.input(1)] + ([n.input(2)] if n.has(2) else [])
    axis, epsilon = int(n.attr("axis", -1)), float(n.attr("epsilon", 1e-5))
    out = [n.emit("layer_norm", operands, 0, axis=axis, epsilon=epsilon)]
    if any(o for o in n.outputs[1:]):
        rank = n.rank(x)
        axes = list(range(_axis(n, axis, rank), rank))
        out.append(n.emit("mean", [x], 1, axis=axes, keepdims=1))
        variance = n.emit("var", [x], None, axis=axes, keepdims=1)
        std = n.emit("sqrt", [n.emit("add", [variance, n.constant(epsilon, x.dtype)])])
        out.append(n.emit("reciprocal", [std], 2))
    return out


@handler("Einsum")
def _einsum(n: Node) -> Value:
    n.check_attrs(("equation",))
    operands = [n.input(i) for i in range(len(n.inputs))]
    return n.emit("einsum", operands, 0, subscripts=n.attr("equation").replace(" ", ""))


# ---- reductions ------------------------------------------------------------------------------

_REDUCE = {
    "ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
    "ReduceProd": "prod", "ReduceLogSumExp": "logsumexp", "ReduceSumSquare": "sum",
    "ReduceL1": "sum", "ReduceL2": "sum", "ReduceLogSum": "sum",
}  # fmt: skip
# Axes are an attribute before these opsets, an input from them on.
_AXES_INPUT_SINCE = {"ReduceSum": 13}


@handler(*_REDUCE, static=(1,))
def _reduce(n: Node) -> Value:
    n.check_attrs(("axes", "keepdims", "noop_with_empty_axes"))
    x = n.input(0)
    if n.opset >= _AXES_INPUT_SINCE.get(n.op_type, 18):
        axes = n.static_ints(1, "axes") if n.has(1) else []
    else:
        axes = list(n.attr("axes", []))
    keepdims = int(n.attr("keepdims", 1))
    if not axes and n.attr("noop_with_empty_axes", 0):
        return n.emit("slice", [x], 0, index="...")
    pre = {"ReduceSumSquare": "square", "ReduceL1": "abs", "ReduceL2": "square"}.get(n.op_type)
    post = {"ReduceL2": "sqrt", "ReduceLogSum": "log"}.get(n.op_type)
    if pre:
        x = n.emit(pre, [x])
    attrs: dict[str, object] = {"keepdims": keepdims}
    if axes:
        attrs["axis"] = axes
    y = n.emit(_REDUCE[n.op_type], [x], None if post else 0, **attrs)
    return n.emit(post, [y], 0) if post else y


@handler("ArgMax", "ArgMin")
def _arg(n: Node) -> Value:
    """argmax/argmin; select_last_index picks the last of ties: the first of the flipped axis,
    counted from the end."""
    n.check_attrs(("axis", "keepdims", "select_last_index"))
    x = n.input(0)
    axis, keepdims = int(n.attr("axis", 0)), int(n.attr("keepdims", 1))
    gs_op = n.op_type.lower()
    if not n.attr("select_last_index", 0):
        return n.emit(gs_op, [x], 0, axis=axis, keepdims=keepdims)
    size = x.shape[_axis(n, axis, n.rank(x))] if x.shape else None
    if not isinstance(size, int):
        raise n.fail("select_last_index needs a static size of the axis", "attribute 'axis'")
    flipped = n.emit("flip", [x], axis=[axis])
    first = n.emit(gs_op, [flipped], axis=axis, keepdims=keepdims)
    return n.emit("subtract", [n.constant(size - 1, "int64"), first], 0)


@handler("CumSum", static=(1,))
def _cumsum(n: Node) -> Value:
    n.check_attrs(("exclusive", "reverse"))
    (axis,) = n.static_ints(1, "axis")
    attrs = {
        "axis": axis,
        "exclusive": int(n.attr("exclusive", 0)),
        "reverse": int(n.attr("reverse", 0)),
    }
    return n.emit("cumsum", [n.input(0)], 0, **attrs)


# ---- structure -------------------------------------------------------------------------------


@handler("Reshape", static=(1,))
def _reshape(n: Node) -> Value:
    n.check_attrs(("allowzero",))
    x, shape = n.input(0), n.input(1)
    target = shape.shape_elems
    if target is None:
        n.static(1, "shape")  # refuses a run-time shape
    assert target is not None
    dims = reshape_target(n, x.shape, target, bool(n.attr("allowzero", 0)))
    return n.emit("reshape", [x], 0, shape=list(dims))


@handler("Flatten")
def _flatten(n: Node) -> Value:
    n.check_attrs(("axis",))
    x = n.input(0)
    rank = n.rank(x)
    axis = n.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if x.static_shape is not None:
        s = x.static_shape
        shape = [int(np.prod(s[:axis])), int(np.prod(s[axis:]))]
    else:
        shape = n.out_shape()  # type: ignore[assignment]
        if shape is None:
            raise n.fail("needs a static shape: both flattened sizes depend on symbolic dimensions")
    return n.emit("reshape", [x], 0, shape=list(shape))


@handler("Transpose")
def _transpose(n: Node) -> Value:
    n.check_attrs(("perm",))
    perm = n.attr("perm")
    attrs = {} if perm is None else {"axes": [int(p) for p in perm]}
    return n.emit("transpose", [n.input(0)], 0, **attrs)


@handler("Squeeze", static=(1,))
def _squeeze(n: Node) -> Value:
    n.check_attrs(())
    attrs = {"axis": n.static_ints(1, "axes")} if n.has(1) else {}
    return n.emit("squeeze", [n.input(0)], 0, **attrs)


@handler("Unsqueeze", static=(1,))
def _unsqueeze(n: Node) -> Value:
    n.check_attrs(())
    return n.emit("expand_dims", [n.input(0)], 0, axis=n.static_ints(1, "axes"))


@handler("Concat")
def _concat(n: Node) -> Value:
    n.check_attrs(("axis",))
    operands = [v for v in n.inputs if v is not None]
    return n.emit("concatenate", operands, 0, axis=int(n.attr("axis")))


def _slice_index(axes: list[int], items: list[str]) -> str:
    """numpy basic indexing of ``items`` at (non-negative) ``axes``, ":" elsewhere."""
    picked = dict(zip(axes, items, strict=True))
    return ",".join(picked.get(a, ":") for a in range(max(axes) + 1))


# Slice bounds beyond any dimension (numpy clamps them); ONNX uses +-2**63-1 for "to the end".
_BOUND = 10**18 - 1


def _bound(v: int) -> str:
    return str(max(-_BOUND, min(_BOUND, v)))


@handler("Slice", static=(1, 2, 3, 4))
def _slice(n: Node) -> Value:
    n.check_attrs(())
    x = n.input(0)
    starts = n.static_ints(1, "starts")
    ends = n.static_ints(2, "ends")
    rank = n.rank(x)
    axes = n.static_ints(3, "axes") if n.has(3) else list(range(len(starts)))
    steps = n.static_ints(4, "steps") if n.has(4) else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise n.fail("starts, ends, axes and steps differ in length", "input 1")
    axes = [_axis(n, a, rank, "input 3 (axes)") for a in axes]
    if len(set(axes)) != len(axes):
        raise n.fail("an axis is repeated", "input 3 (axes)")
    if 0 in steps:
        raise n.fail("a step is 0", "input 4 (steps)")
    items = [f"{_bound(b)}:{_bound(e)}:{k}" for b, e, k in zip(starts, ends, steps, strict=True)]
    if not axes:
        return n.emit("slice", [x], 0, index="...")
    return n.emit("slice", [x], 0, index=_slice_index(axes, items))


@handler("Split", static=(1,))
def _split(n: Node) -> list[Value]:
    n.check_attrs(("axis", "num_outputs", "split"))
    x = n.input(0)
    rank = n.rank(x)
    axis = _axis(n, int(n.attr("axis", 0)), rank)
    size = x.shape[axis] if x.shape is not None else None  # type: ignore[index]
    if n.has(1):
        sizes = n.static_ints(1, "split")
    elif "split" in n.attrs:
        sizes = [int(s) for s in n.attrs["split"]]
    else:
        if not isinstance(size, int):
            raise n.fail(f"needs a static size of axis {axis} to split it evenly", "input 0")
        parts = int(n.attr("num_outputs", len(n.outputs)))
        chunk = -(-size // parts)  # ceil, as ONNX: the last part may be smaller
        sizes = [min(chunk, size - i * chunk) for i in range(parts)]
    if len(sizes) != len(n.outputs):
        raise n.fail(f"{len(sizes)} parts for {len(n.outputs)} outputs", "input 1 (split)")
    if isinstance(size, int) and sum(sizes) != size:
        raise n.fail(f"the parts {sizes} do not add up to the axis size {size}", "input 1 (split)")
    out, start = [], 0
    for i, s in enumerate(sizes):
        index = _slice_index([axis], [f"{start}:{start + s}"])
        out.append(n.emit("slice", [x], i, index=index))
        start += s
    return out


@handler("Gather")
def _gather(n: Node) -> Value:
    n.check_attrs(("axis",))
    x, indices = n.input(0), n.input(1)
    rank = n.rank(x)
    axis = _axis(n, int(n.attr("axis", 0)), rank)
    if indices.const is not None and indices.const.ndim == 0:
        index = _slice_index([axis], [str(int(indices.const))])
        return n.emit("slice", [x], 0, index=index)
    return n.emit("take", [x, indices], 0, axis=axis)


@handler("GatherElements")
def _gather_elements(n: Node) -> Value:
    n.check_attrs(("axis",))
    return n.emit("take_along_axis", [n.input(0), n.input(1)], 0, axis=int(n.attr("axis", 0)))


@handler("Expand", static=(1,))
def _expand(n: Node) -> Value:
    n.check_attrs(())
    x, target = n.input(0), n.input(1).shape_elems
    if target is None:
        n.static(1, "shape")
    assert target is not None and x.shape is not None
    rank = max(len(target), len(x.shape))
    dims = [1] * (rank - len(x.shape)) + list(x.shape)
    wanted = [1] * (rank - len(target)) + list(target)
    out = [d if w == 1 else w for d, w in zip(dims, wanted, strict=True)]  # bidirectional
    if out == list(x.shape):
        return x
    if not all(isinstance(d, int) for d in out):
        raise n.fail(
            "needs a static shape: the expanded shape is known only at run time", "input 1"
        )
    return n.emit("broadcast_to", [x], 0, shape=[int(d) for d in out])  # type: ignore[arg-type]


@handler("Tile", static=(1,))
def _tile(n: Node) -> Value:
    n.check_attrs(())
    return n.emit("tile", [n.input(0)], 0, reps=n.static_ints(1, "repeats"))


@handler("Pad", static=(1, 2, 3))
def _pad(n: Node) -> Value:
    n.check_attrs(("mode",))
    x = n.input(0)
    mode = n.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise n.fail(
            f"mode={mode!r} is not an ONNX mode (constant, reflect, edge, wrap)", "attribute 'mode'"
        )
    pads = n.static_ints(1, "pads")
    if n.has(3):
        rank = n.rank(x)
        axes = [_axis(n, a, rank, "input 3 (axes)") for a in n.static_ints(3, "axes")]
        full = [0] * (2 * rank)
        for k, a in enumerate(axes):
            full[a], full[rank + a] = pads[k], pads[len(axes) + k]
        pads = full
    attrs: dict[str, object] = {"pads": pads, "mode": mode}
    if n.has(2):
        attrs["constant_value"] = float(np.asarray(n.static(2, "constant_value")).item())
    return n.emit("pad", [x], 0, **attrs)


@handler("Size")
def _size(n: Node) -> Value:
    n.check_attrs(())
    shape = n.input(0).static_shape
    if shape is None:
        raise n.fail("needs a static shape of its input", "input 0")
    return Value.of(np.array(int(np.prod(shape)), dtype=np.int64))


@handler("EyeLike")
def _eye_like(n: Node) -> Value:
    from onnx import helper

    n.check_attrs(("dtype", "k"))
    x = n.input(0)
    if x.static_shape is None or len(x.static_shape) != 2:
        raise n.fail("needs a static 2-D shape of its input", "input 0")
    dtype = x.dtype
    if "dtype" in n.attrs:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(n.attrs["dtype"]))).name
    return Value.of(np.eye(*x.static_shape, k=int(n.attr("k", 0)), dtype=dtype))


@handler("Shape")
def _shape(n: Node) -> Value:
    """The shape of a value, folded; with symbolic dimensions it is known only at import."""
    n.check_attrs(("start", "end"))
    x = n.input(0)
    if x.shape is None:
        raise n.fail("needs the rank of its input, which shape inference did not give", "input 0")
    named = [d if d is not None else f"?{n.name}.{i}" for i, d in enumerate(x.shape)]
    dims = named[slice(n.attr("start", 0), n.attr("end"))]
    if all(isinstance(d, int) for d in dims):
        return Value.of(np.array(dims, dtype=np.int64))
    return Value("int64", (len(dims),), elems=tuple(dims))
