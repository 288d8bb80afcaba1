"""Window ops over (N, C, *spatial) values, as ONNX's: conv, max_pool (and its indices),
avg_pool, and the internal window ops their derivatives emit. `window` is their geometry,
shared with the server; one value given for strides, pads, dilations or a pool's kernel_shape
is for every spatial axis (as torch's `stride=2`).

Pads are ONNX's [begin_0, ..., end_0, ...]; `auto_pad` SAME_UPPER / SAME_LOWER pads so that the
output has ceil(S / stride) elements (the odd pad at the end / at the beginning), VALID pads
nothing. `ceil_mode` rounds the output size up as torch does: a last window that would start in
the end padding is dropped, and the extra end padding it needs is added to `pads`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from .core import (
    FLOAT_DTYPES,
    AttrSpec,
    DTypeError,
    RuleError,
    Shape,
    TensorType,
    define,
    same_dtype,
    same_size,
    show,
)

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True, slots=True)
class Window:
    """The resolved geometry of a window op over the spatial axes (-1: an unknown size)."""

    kernel: Shape
    strides: Shape
    pads: Shape  # ONNX order, including any extra end padding of ceil_mode
    dilations: Shape
    out: Shape  # the output's spatial shape

    @property
    def attrs(self) -> dict:
        """The attributes of conv_patches / conv_patches_grad."""
        return {
            "kernel_shape": self.kernel,
            "strides": self.strides,
            "pads": self.pads,
            "dilations": self.dilations,
        }


def _per_axis(value: Shape | None, n: int, default: int, field: str) -> Shape:
    """One value per axis: the default for all if absent, and one value given is for all (as
    torch's `stride=2` for a 2-D conv, which the SDK sends as [2])."""
    if value is None:
        return (default,) * n
    if len(value) == 1:
        return tuple(value) * n
    if len(value) != n:
        raise RuleError(field, f"needs {n} values, or one for all, got {len(value)}")
    return value


@functools.lru_cache(maxsize=1024)
def window(
    spatial: Shape,
    kernel: Shape,
    strides: Shape | None = None,
    pads: Shape | None = None,
    dilations: Shape | None = None,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
) -> Window:
    """The geometry of a window op, or RuleError naming the bad attribute."""
    n = len(spatial)
    kernel = _per_axis(kernel, n, 1, "attrs.kernel_shape")
    strides = _per_axis(strides, n, 1, "attrs.strides")
    dilations = _per_axis(dilations, n, 1, "attrs.dilations")
    for name, values in (("kernel_shape", kernel), ("strides", strides), ("dilations", dilations)):
        if any(v == 0 or v < -1 for v in values) or (name != "kernel_shape" and min(values) < 1):
            raise RuleError(f"attrs.{name}", f"must be positive, got {list(values)}")
    if auto_pad != "NOTSET" and pads is not None and any(pads):
        raise RuleError("attrs.pads", f"explicit pads cannot be combined with auto_pad={auto_pad}")
    extent = [d * (k - 1) + 1 if k > 0 else -1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [
            max(0, (-(-s // st) - 1) * st + e - s) if s >= 0 and e >= 0 else 0
            for s, st, e in zip(spatial, strides, extent, strict=True)
        ]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        pads = tuple(small + big) if auto_pad == "SAME_UPPER" else tuple(big + small)
    pads = _per_axis(pads, 2 * n, 0, "attrs.pads")
    if any(p < 0 for p in pads):
        raise RuleError("attrs.pads", f"must be non-negative, got {list(pads)}")
    out, extra = [], []
    for i, (s, st, e) in enumerate(zip(spatial, strides, extent, strict=True)):
        if s < 0 or e < 0:
            out.append(-1)
            extra.append(0)
            continue
        begin, end = pads[i], pads[n + i]
        room = s + begin + end - e
        if room < 0:
            raise RuleError(
                "attrs.kernel_shape",
                f"the window ({e} along spatial axis {i}) is larger than the padded input "
                f"({s + begin + end})",
            )
        size = (-(-room // st) if ceil_mode else room // st) + 1
        if ceil_mode and (size - 1) * st >= s + begin:
            size -= 1  # the last window must start inside the input or its left padding
        out.append(size)
        extra.append(max(0, (size - 1) * st + e - (s + begin + end)))
    pads = pads[:n] + tuple(p + x for p, x in zip(pads[n:], extra, strict=True))
    return Window(tuple(kernel), strides, pads, dilations, tuple(out))


def spatial_operand(x: TensorType, field: str = "inputs[0]") -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(field, f"needs float32/float64, got {x.dtype}")
    if x.shape is not None and len(x.shape) < 3:
        raise RuleError(
            field, f"needs shape (N, C, *spatial) with a spatial axis, got {list(x.shape)}"
        )


WINDOW_ATTRS = {
    "kernel_shape": AttrSpec("ints", required=True, doc="the window's size per spatial axis"),
    "strides": AttrSpec("ints", required=True, doc="the step per spatial axis"),
    "pads": AttrSpec("ints", required=True, doc="ONNX order: begins, then ends"),
    "dilations": AttrSpec("ints", required=True, doc="the spacing of the window's taps"),
}
GEOMETRY_ATTRS = {
    "strides": AttrSpec("ints", doc="the step per spatial axis, or one for all (default 1s)"),
    "pads": AttrSpec("ints", doc="ONNX order: begins, then ends, or one for all (default 0s)"),
    "auto_pad": AttrSpec("string", "NOTSET", choices=AUTO_PADS, doc="SAME_UPPER/SAME_LOWER/VALID"),
}
DILATIONS = AttrSpec("ints", doc="the spacing of the window's taps, or one for all (default 1s)")


# ---- the internal window ops --------------------------------------------------------------------


def _window_of(attrs: dict, spatial: Shape) -> Window:
    w = window(spatial, attrs["kernel_shape"], attrs["strides"], attrs["pads"], attrs["dilations"])
    known = all(s >= 0 for s in spatial)
    if known and w.pads != attrs["pads"]:  # ceil_mode's extra padding is resolved before
        raise RuleError("attrs.pads", f"do not fit: the windows need {list(w.pads)}")
    return w


def _patches_type(types: Sequence[TensorType], pad_value: float = 0.0, **attrs) -> TensorType:
    (x,) = types
    spatial_operand(x)
    _positive_kernel(attrs["kernel_shape"])
    n = len(attrs["kernel_shape"])
    if x.shape is None:
        return TensorType(None, x.dtype)
    if len(x.shape) - 2 != n:
        raise RuleError("attrs.kernel_shape", f"needs {len(x.shape) - 2} values")
    w = _window_of(attrs, x.shape[2:])
    return TensorType(x.shape[:2] + w.out + w.kernel, x.dtype)


def _patches_grad_type(types: Sequence[TensorType], shape: Shape, **attrs) -> TensorType:
    (g,) = types
    _positive_kernel(attrs["kernel_shape"])
    n = len(attrs["kernel_shape"])
    w = _window_of(attrs, tuple(shape))
    if g.shape is None:
        return TensorType(None, g.dtype)
    if len(g.shape) != 2 + 2 * n or not all(
        same_size(a, b) for a, b in zip(g.shape[2:], w.out + w.kernel, strict=True)
    ):
        raise RuleError(
            "inputs[0]", f"has shape {list(g.shape)}, the windows are {list(w.out + w.kernel)}"
        )
    return TensorType(g.shape[:2] + tuple(shape), g.dtype)


define(
    "conv_patches",
    "x",
    _patches_type,
    "the windows of x (N, C, *S) as (N, C, *S', *K), padded with pad_value (im2col as a view)",
    attrs={**WINDOW_ATTRS, "pad_value": AttrSpec("float", 0.0, doc="the padding's value")},
    internal=True,
)
define(
    "conv_patches_grad",
    "g",
    _patches_grad_type,
    "the transpose of conv_patches: windows (N, C, *S', *K) added back into (N, C, *shape)",
    attrs={**WINDOW_ATTRS, "shape": AttrSpec("ints", required=True, doc="the spatial shape")},
    internal=True,
)


# ---- conv --------------------------------------------------------------------------------------

MAX_SPATIAL = 8


def _conv_type(
    types: Sequence[TensorType],
    strides: Shape | None = None,
    pads: Shape | None = None,
    dilations: Shape | None = None,
    groups: int = 1,
    auto_pad: str = "NOTSET",
) -> TensorType:
    dtype = same_dtype(types, FLOAT_DTYPES, "conv")
    x, w = types[:2]
    spatial_operand(x)
    if groups < 1:
        raise RuleError("attrs.groups", f"must be positive, got {groups}")
    if x.shape is None or w.shape is None:
        return TensorType(None, dtype)
    n = len(x.shape) - 2
    if n > MAX_SPATIAL:
        raise RuleError("inputs[0]", f"at most {MAX_SPATIAL} spatial axes, got {n}")
    if len(w.shape) != len(x.shape):
        raise RuleError(
            "inputs[1]",
            f"the kernel needs shape (O, C/groups, *K) of rank {len(x.shape)}, got {list(w.shape)}",
        )
    c, o, cg = x.shape[1], w.shape[0], w.shape[1]
    if (c >= 0 and c % groups) or (o >= 0 and o % groups):
        raise RuleError(
            "attrs.groups",
            f"{groups} must divide the input channels ({c}) and the output channels ({o})",
        )
    if c >= 0 and cg >= 0 and cg * groups != c:
        raise RuleError(
            "inputs[1]",
            f"the kernel has {cg} input channels per group; x has {c} channels in {groups} "
            f"group(s), {c // groups} each",
        )
    if len(types) == 3:
        b = types[2]
        if b.shape is not None and (len(b.shape) != 1 or not same_size(b.shape[0], o)):
            raise RuleError("inputs[2]", f"the bias needs shape [{o}], got {show(b.shape)}")
    geom = window(x.shape[2:], w.shape[2:], strides, pads, dilations, auto_pad)
    return TensorType((x.shape[0], o, *geom.out), dtype)


define(
    "conv",
    "x w [b]",
    _conv_type,
    "N-D convolution (cross-correlation, as ONNX Conv and torch): x (N, C, *S), w "
    "(O, C/groups, *K), optional bias b (O,)",
    attrs={
        **GEOMETRY_ATTRS,
        "dilations": DILATIONS,
        "groups": AttrSpec("int", 1, doc="channel groups (C and O divisible by it)"),
    },
)


# ---- pooling -----------------------------------------------------------------------------------


def pool_geometry(shape: Shape, attrs: dict, ceil: bool = True) -> Window:
    return window(
        shape[2:],
        attrs["kernel_shape"],
        attrs.get("strides"),
        attrs.get("pads"),
        attrs.get("dilations"),
        attrs.get("auto_pad", "NOTSET"),
        attrs.get("ceil_mode", 0) if ceil else 0,
    )


def _positive_kernel(kernel: Shape) -> None:
    if min(kernel, default=1) < 1:
        raise RuleError("attrs.kernel_shape", f"must be positive, got {list(kernel)}")


def _pool_type(types: Sequence[TensorType], **attrs) -> TensorType:
    (x,) = types
    spatial_operand(x)
    _positive_kernel(attrs["kernel_shape"])
    if x.shape is None:
        return TensorType(None, x.dtype)
    return TensorType(x.shape[:2] + pool_geometry(x.shape, attrs).out, x.dtype)


def _selection_type(types: Sequence[TensorType], what: str, **attrs) -> TensorType:
    """max_pool_pick (v like x, result like top) and max_pool_grad (v like top, result like x):
    v is one shape with optional leading batch axes, the result the other with the same."""
    x, top, v = types
    expected = _pool_type([x], **attrs)
    if expected.shape is None or top.shape is None or v.shape is None:
        return TensorType(None, x.dtype)
    if (
        top.dtype != x.dtype
        or any(not same_size(a, b) for a, b in zip(top.shape, expected.shape, strict=True))
        or len(top.shape) != len(expected.shape)
    ):
        raise RuleError("inputs[1]", f"must be the max_pool of inputs[0], {expected}")
    source, target = (x.shape, top.shape) if what == "pick" else (top.shape, x.shape)
    batch = v.shape[: len(v.shape) - len(source)]
    if v.dtype != x.dtype or len(v.shape) < len(source):
        raise RuleError("inputs[2]", f"must be {show(source)} with optional leading batch axes")
    return TensorType(batch + target, x.dtype)


POOL_ATTRS = {
    "kernel_shape": AttrSpec(
        "ints", required=True, doc="the window's size per spatial axis, or one for all"
    ),
    **GEOMETRY_ATTRS,
    "ceil_mode": AttrSpec("int", 0, choices=(0, 1), doc="round the output size up, as torch"),
}
MAX_POOL_ATTRS = {**POOL_ATTRS, "dilations": DILATIONS}

define(
    "max_pool",
    "x",
    _pool_type,
    "max over windows of x (N, C, *S) (ONNX MaxPool); padding never wins; tied maxima share "
    "the gradient evenly",
    attrs=MAX_POOL_ATTRS,
)
for _name, _operands, _what, _doc in (
    ("max_pool_pick", "x top t", "pick", "the tangent t at each window's maxima of x, averaged"),
    ("max_pool_grad", "x top g", "grad", "each window's cotangent g shared among its maxima of x"),
):
    define(
        _name,
        _operands,
        functools.partial(_selection_type, what=_what),
        f"max_pool's {'JVP' if _what == 'pick' else 'VJP'}: {_doc} (top = max_pool(x))",
        attrs=MAX_POOL_ATTRS,
        internal=True,
    )
define(
    "max_pool_indices",
    "x",
    lambda types, storage_order=0, **attrs: TensorType(_pool_type(types, **attrs).shape, "int64"),
    "where each window's max of x (N, C, *S) lies, as ONNX MaxPool's Indices: an int64 index "
    "into x flattened, the first maximum among ties; no gradient",
    attrs={
        **MAX_POOL_ATTRS,
        "storage_order": AttrSpec(
            "int", 0, choices=(0, 1), doc="1: the spatial axes count column-major"
        ),
    },
    differentiable=False,
)
define(
    "avg_pool",
    "x",
    _pool_type,
    "mean over windows of x (N, C, *S) (ONNX AveragePool); padding counts only with "
    "count_include_pad",
    attrs={
        **POOL_ATTRS,
        "count_include_pad": AttrSpec(
            "int", 0, choices=(0, 1), doc="divide by the window's size, padding included"
        ),
        "dilations": DILATIONS,
    },
)
