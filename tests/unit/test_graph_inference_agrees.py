"""The one type rule of each op (`gradserve_client.opset`) serves the SDK and the core alike.

Each case builds one op with the SDK (`gradserve_client.graph`) and, from the same wire graph
(decoded by `gradserve.rpc.codec.graph_from_proto`), with the core (`Program.build`). Either
both accept it with the same shape and dtype, or both reject it: the SDK's attribute and
literal conversions and the wire codec lose nothing. To get a wire graph even when the SDK
rejects a node, the SDK's `_infer` is wrapped so that it records the error instead of raising
it; the node is then emitted as it would have been and handed to the core.

Then the rule itself with unknowns: for every case the core accepts, the same rule given a -1
for any one dimension, or an unknown rank, never fails, and what it infers is consistent with
the concrete answer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradserve_client as gs
import numpy as np
import pytest
from gradserve.autodiff import OPS, GraphError, Program
from gradserve.rpc.codec import graph_from_proto
from gradserve_client import graph as sdk
from gradserve_client.opset import SPECS, TensorType

F32, F64, I64, I32, B = "float32", "float64", "int64", "int32", "bool"
DTYPES = (F32, F64, I64, I32, B)


@dataclass(frozen=True)
class Case:
    op: str
    inputs: tuple[tuple[tuple[int, ...], str], ...]  # (shape, dtype) per graph input
    build: Callable[..., gs.Var]
    label: str

    def __str__(self) -> str:
        return f"{self.op}[{self.label}]"


CASES: list[Case] = []


def case(op: str, inputs: list[tuple[tuple[int, ...], str]], build: Callable, label: Any) -> None:
    CASES.append(Case(op, tuple(inputs), build, str(label)))


# ---- element-wise ------------------------------------------------------------------------------

ELEMENTWISE = [s for s in SPECS.values() if s.elementwise and s.sdk and not s.internal]
UNARY = sorted(s.name for s in ELEMENTWISE if len(s.operands) == 1)
BINARY = sorted(s.name for s in ELEMENTWISE if len(s.operands) == 2)
SHAPE_PAIRS = [
    ((2, 3), (2, 3)),
    ((2, 3), (3,)),
    ((2, 1), (1, 3)),
    ((), (4,)),
    ((3, 1, 2), (4, 1)),
    ((2, 3), (2,)),  # does not broadcast
    ((0, 3), (1, 3)),
]
DTYPE_PAIRS = [(F64, F64), (F32, F32), (F32, F64), (I64, I64), (I32, I32), (I32, I64), (B, B)]
DTYPE_PAIRS += [(F64, I64)]

for _op in UNARY:
    for _dtype in DTYPES:
        case(_op, [((2, 3), _dtype)], getattr(gs, _op), _dtype)
    case(_op, [((), F32)], getattr(gs, _op), "0-d")
for _op in BINARY:
    for (_s1, _s2), (_d1, _d2) in itertools.product(SHAPE_PAIRS, DTYPE_PAIRS):
        case(_op, [(_s1, _d1), (_s2, _d2)], getattr(gs, _op), f"{_s1},{_s2},{_d1},{_d2}")
    # A Python number takes the dtype of the Var it meets, so it never causes a mismatch...
    case(_op, [((3,), F32)], lambda x, _op=_op: getattr(gs, _op)(x, 2), "f32 with 2")
    case(_op, [((3,), I32)], lambda x, _op=_op: getattr(gs, _op)(x, 2), "i32 with 2")
    # ...except a float with an int Var: the core does not promote.
    case(_op, [((3,), I64)], lambda x, _op=_op: getattr(gs, _op)(x, 1.5), "i64 with 1.5")

for _shapes in [((2, 3), (2, 3), (2, 3)), ((2, 1), (3,), (2, 3)), ((2,), (3,), (3,))]:
    for _dc, _dx, _dy in [(B, F64, F64), (B, F32, F64), (F64, F64, F64), (B, I32, I32), (B, B, B)]:
        case(
            "where",
            [(_shapes[0], _dc), (_shapes[1], _dx), (_shapes[2], _dy)],
            gs.where,
            f"{_shapes},{_dc},{_dx},{_dy}",
        )
case("where", [((3,), B), ((3,), I32)], lambda c, x: gs.where(c, x, 0), "int32 with 0")

# ---- reductions --------------------------------------------------------------------------------

AXES = [None, 0, -1, (0, 2), (-3, -1), (1, 1), (0, -3), 3, -4, ()]
for _op in ("sum", "mean", "max", "min", "prod", "logsumexp", "var", "std"):
    fn = getattr(gs, _op)
    for _axis, _keep in itertools.product(AXES, (False, True)):
        case(_op, [((2, 3, 4), F32)], lambda x, a=_axis, k=_keep, f=fn: f(x, a, k), (_axis, _keep))
    for _dtype in DTYPES:
        case(_op, [((2, 3), _dtype)], fn, _dtype)
    for _shape, _axis in [((), None), ((), 0), ((2, 0, 3), 1), ((2, 0, 3), (0, 2)), ((0,), None)]:
        case(_op, [(_shape, F64)], lambda x, a=_axis, f=fn: f(x, a), (_shape, _axis))
for _op in ("var", "std"):
    fn = getattr(gs, _op)
    for _shape, _axis, _ddof in [
        ((2, 3), None, 1),
        ((2, 3), 0, 1),
        ((2, 3), 0, 2),
        ((2, 3), None, 6),
        ((2, 3), 1, -1),
        ((), None, 0),
        ((), None, 1),
    ]:
        case(
            _op,
            [(_shape, F64)],
            lambda x, a=_axis, d=_ddof, f=fn: f(x, a, ddof=d),
            (_shape, _axis, _ddof),
        )

# ---- structure ---------------------------------------------------------------------------------

for _target in [(3, 2), (-1, 2), (4, -1), (-1, -1), (6,), (7,), (0, -1), (1, 6, 1), (-2, 3)]:
    case("reshape", [((2, 3), I32)], lambda x, t=_target: gs.reshape(x, t), _target)
case("reshape", [((2, 0), F64)], lambda x: gs.reshape(x, (0, 5)), "empty")
case("reshape", [((), F64)], lambda x: gs.reshape(x, (1, 1)), "0-d")

for _shape, _axes in [
    ((2, 3), None),
    ((2, 3), (1, 0)),
    ((2, 3), (-1, 0)),
    ((2, 3), (0, 0)),
    ((2, 3), (0, 1, 2)),
    ((2, 3), (0,)),
    ((2, 3, 4), (2, 0, 1)),
    ((2, 3, 4), (-1, -3, 1)),
    ((), None),
    ((), ()),
]:
    case("transpose", [(_shape, B)], lambda x, a=_axes: gs.transpose(x, a), (_shape, _axes))

for _shape, _target in [
    ((3,), (2, 3)),
    ((3,), (1,)),
    ((2, 3), (3,)),
    ((1, 3), (4, 3)),
    ((2, 1), (2, 5)),
    ((2,), (2, 2)),
    ((), (2, 2)),
    ((2,), (2, -1)),
    ((3,), (3,)),
]:
    case("broadcast_to", [(_shape, F32)], lambda x, t=_target: gs.broadcast_to(x, t), _target)

for _axis in [0, -1, 2, 3, -4, (0, 1), (0, 0), (0, -1), (1, -2)]:
    case("expand_dims", [((2, 3), I64)], lambda x, a=_axis: gs.expand_dims(x, a), _axis)
for _shape, _axis in [
    ((1, 3, 1), None),
    ((1, 3, 1), 0),
    ((1, 3, 1), -1),
    ((1, 3, 1), 1),
    ((1, 3, 1), (0, 0)),
    ((1, 3, 1), (0, 2)),
    ((1, 3, 1), 3),
    ((), None),
    ((2, 3), None),
]:
    case("squeeze", [(_shape, F64)], lambda x, a=_axis: gs.squeeze(x, a), (_shape, _axis))

for _specs, _axis in [
    ([((2, 3), F64), ((4, 3), F64)], 0),
    ([((2, 3), F64), ((2, 5), F64)], 1),
    ([((2, 3), F64), ((2, 5), F64)], -1),
    ([((2, 3), F64), ((2, 5), F64)], 0),  # non-axis sizes differ
    ([((2, 3), F64), ((4, 3), F64)], -1),
    ([((2, 3), F64), ((2, 3, 1), F64)], 0),  # ranks differ
    ([((2, 3), F32), ((2, 3), F64)], 0),
    ([((2, 3), I32), ((2, 3), I32), ((1, 3), I32)], 0),
    ([((2, 3), B)], 1),
    ([((2, 3), F64), ((2, 3), F64)], 2),
    ([((), F64), ((), F64)], 0),
    ([((0, 3), F64), ((2, 3), F64)], 0),
]:
    case(
        "concatenate",
        _specs,
        lambda *xs, a=_axis: gs.concatenate(list(xs), axis=a),
        ([s for s, _ in _specs], [d for _, d in _specs], _axis),
    )

for _specs, _axis in [
    ([((2, 3), F64), ((2, 3), F64)], 0),
    ([((2, 3), F64), ((2, 3), F64)], 2),
    ([((2, 3), F64), ((2, 3), F64)], -1),
    ([((2, 3), F64), ((2, 3), F64)], -3),
    ([((2, 3), F64), ((2, 3), F64)], 3),
    ([((2, 3), F64), ((1, 3), F64)], 0),  # broadcastable, but not one shape
    ([((2, 3), F64), ((3,), F64)], 0),
    ([((2, 3), F32), ((2, 3), F64)], 0),
    ([((), I64), ((), I64), ((), I64)], 0),
    ([((), I64)], -1),
]:
    case(
        "stack",
        _specs,
        lambda *xs, a=_axis: gs.stack(list(xs), axis=a),
        ([s for s, _ in _specs], [d for _, d in _specs], _axis),
    )

INDEXES: list[Any] = [
    0,
    -1,
    slice(1, 3),
    (slice(None), 0),
    (Ellipsis, None),
    (slice(None, None, 2), slice(1, None), slice(None, -1, -1)),
    (1, slice(None), 0, None, Ellipsis),
    2,  # out of bounds
    (0, 0, 0, 0),  # too many indices
    (Ellipsis, -5),
]
for _key in INDEXES:
    case(
        "slice",
        [((2, 3, 4), I32)],
        lambda x, k=_key: sdk.emit("slice", (x,), {"index": sdk._canonical_index(k)}),
        sdk._canonical_index(_key),
    )

for _dtype in DTYPES:
    case(
        "constant",
        [((), F64)],
        lambda x, d=_dtype: gs.constant(np.ones((2, 3), d), graph=x.graph),
        _dtype,
    )

# ---- linear algebra ----------------------------------------------------------------------------

LINALG_SHAPES = [
    ((3,), (3,)),
    ((2, 3), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)),
    ((3,), (5, 3, 4)),
    ((5, 2, 3), (5, 3, 4)),
    ((5, 2, 3), (1, 3, 4)),
    ((5, 2, 3), (4, 3, 4)),
    ((2, 3), (5, 3, 4)),
    ((2, 3), (4,)),
    ((2, 3), (2, 3)),
    ((), (3,)),
    ((2, 3), ()),
    ((), ()),
    ((0, 3), (3, 0)),
]
LINALG_DTYPES = [(F64, F64), (F32, F32), (F32, F64), (I64, I64), (I32, I32), (I64, I32), (B, B)]
for _op in ("matmul", "dot", "outer"):
    for (_s1, _s2), _dtypes in itertools.product(LINALG_SHAPES, [(F64, F64)]):
        case(_op, [(_s1, F64), (_s2, F64)], getattr(gs, _op), (_s1, _s2))
    for _d1, _d2 in LINALG_DTYPES:
        case(_op, [((2, 3), _d1), ((3,), _d2)], getattr(gs, _op), (_d1, _d2))

# ---- nn ----------------------------------------------------------------------------------------

for _op in ("softmax", "log_softmax"):
    for _shape, _axis in [((3,), -1), ((2, 3), 0), ((2, 3), -2), ((2, 3), 2), ((), -1), ((), 0)]:
        fn = getattr(gs, _op)
        case(_op, [(_shape, F32)], lambda x, a=_axis, f=fn: f(x, a), (_shape, _axis))
    for _dtype in DTYPES:
        case(_op, [((2, 3), _dtype)], getattr(gs, _op), _dtype)

for (_ls, _ld), (_ys, _yd), _red in itertools.product(
    [((4, 5), F32), ((4, 5), F64), ((5,), F64), ((), F64), ((4, 0), F64), ((4, 5), I64)],
    [((4,), I64), ((4,), I32), ((), I64), ((3,), I64), ((4,), F64), ((4, 1), I64)],
    ["mean", "sum", "none"],
):
    case(
        "cross_entropy",
        [(_ls, _ld), (_ys, _yd)],
        lambda x, y, r=_red: gs.cross_entropy(x, y, reduction=r),
        (_ls, _ld, _ys, _yd, _red),
    )

for _shape, _dtype, _depth, _out in [
    ((3,), I64, 4, F64),
    ((2, 3), I32, 0, F32),
    ((), I64, 3, F64),
    ((3,), F64, 2, F64),  # labels must be integers
    ((3,), I64, -1, F64),
    ((3,), I64, 2, I64),  # one-hot rows are floats
]:
    case(
        "one_hot",
        [(_shape, _dtype)],
        lambda x, d=_depth, o=_out: gs.one_hot(x, d, dtype=o),
        (_shape, _dtype, _depth, _out),
    )

for (_s1, _s2), (_d1, _d2), _red in itertools.product(
    [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 3), (2,)), ((), ())],
    [(F64, F64), (F32, F32), (F32, F64), (I64, I64)],
    ["mean", "sum", "none"],
):
    case(
        "mse",
        [(_s1, _d1), (_s2, _d2)],
        lambda x, y, r=_red: gs.mse(x, y, reduction=r),
        (_s1, _s2, _d1, _d2, _red),
    )

# ---- windows, indexing, einsum, normalisation ---------------------------------------------------

for _x, _w, _attrs in [
    ((2, 3, 7), (4, 3, 3), {}),
    ((1, 4, 6, 5), (6, 2, 3, 2), {"groups": 2, "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ((1, 2, 5, 5), (2, 2, 3, 3), {"auto_pad": "SAME_LOWER", "dilations": [2, 1]}),
    ((1, 2, 3, 3, 3), (1, 2, 2, 2, 2), {"auto_pad": "VALID"}),
    ((1, 3, 5, 5), (2, 2, 3, 3), {}),  # channel mismatch
    ((1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}),  # groups do not divide O
    ((1, 3, 2, 2), (2, 3, 3, 3), {}),  # the kernel is larger than the input
    ((1, 3, 5, 5), (2, 3, 3, 3), {"strides": [1]}),  # one value for all axes
    ((1, 3, 9, 8), (2, 3, 3, 3), {"strides": 2, "pads": 1, "dilations": 2}),
    ((1, 3, 5, 5), (2, 3, 3, 3), {"strides": [1, 1, 1]}),
    ((3, 5), (2, 3, 3), {}),  # no spatial axis
]:
    case(
        "conv", [(_x, F64), (_w, F64)], lambda x, w, a=_attrs: gs.conv(x, w, **a), (_x, _w, _attrs)
    )
case("conv", [((1, 2, 5), F32), ((3, 2, 2), F32), ((3,), F32)], gs.conv, "bias")
case("conv", [((1, 2, 5), F32), ((3, 2, 2), F32), ((2,), F32)], gs.conv, "bad bias")
case("conv", [((1, 2, 5), F32), ((3, 2, 2), F64)], gs.conv, "dtype mismatch")
case("conv", [((1, 2, 5), I64), ((3, 2, 2), I64)], gs.conv, "integers")

for _op in ("max_pool", "avg_pool", "max_pool_indices"):
    for _x, _attrs in [
        ((1, 2, 6, 5), {"kernel_shape": [2, 2]}),
        ((1, 2, 6, 5), {"kernel_shape": 2, "strides": 2, "pads": 1}),  # one value for all axes
        ((1, 2, 7, 6), {"kernel_shape": [2, 2], "dilations": [2, 1], "ceil_mode": True}),
        ((1, 2, 6, 5), {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": True}),
        ((1, 2, 6, 5), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        ((1, 2, 5), {"kernel_shape": [2], "pads": [1, 1]}),
        ((1, 2, 5), {"kernel_shape": [2, 2]}),  # one value per spatial axis, or one for all
        ((1, 2, 5), {"kernel_shape": [7]}),
        ((2, 5), {"kernel_shape": [2]}),
    ]:
        fn = getattr(gs, _op)
        case(_op, [(_x, F32)], lambda x, a=_attrs, f=fn: f(x, **a), (_x, _attrs))

for (_a, _ad), (_i, _id), _axis in [
    (((5, 3), F64), ((2, 4), I64), 0),
    (((5, 3), I64), ((4,), I32), -1),
    (((5, 3), F32), ((), I64), 1),
    (((5, 3), F64), ((2,), I64), 2),  # axis out of range
    (((5, 3), F64), ((2,), F64), 0),  # float indices
    (((), F64), ((2,), I64), 0),
]:
    case(
        "take",
        [(_a, _ad), (_i, _id)],
        lambda a, i, ax=_axis: gs.take(a, i, axis=ax),
        (_a, _ad, _i, _id, _axis),
    )
for _a, _i, _axis in [
    ((3, 4), (3, 2), 1),
    ((3, 4), (1, 4), 0),
    ((3, 1), (3, 5), -1),
    ((3, 4), (3,), 0),  # rank
    ((3, 4), (2, 2), 1),  # does not broadcast
    ((3, 4), (3, 2), -3),
]:
    case(
        "take_along_axis",
        [(_a, F64), (_i, I64)],
        lambda a, i, ax=_axis: gs.take_along_axis(a, i, axis=ax),
        (_a, _i, _axis),
    )

for _subs, _shapes, _dtype in [
    ("ij,jk->ik", [(2, 3), (3, 4)], F64),
    ("ij,jk", [(2, 3), (3, 4)], I64),
    ("...ij,jk->...ik", [(5, 2, 3), (3, 4)], F32),
    ("bij,bjk,bkl->bil", [(2, 2, 3), (2, 3, 1), (2, 1, 2)], F64),
    ("i->", [(3,)], F64),
    ("ij,jk->ik", [(2, 3), (4, 4)], F64),  # sizes disagree
    ("ii->i", [(3, 3)], F64),  # a diagonal
    ("bii->bi", [(2, 3, 3)], F32),
    ("ii->", [(3, 3)], F64),  # the trace
    ("ii->i", [(3, 2)], F64),  # a diagonal of a non-square matrix
    ("ij->k", [(2, 3)], F64),
]:
    case(
        "einsum",
        [(_s, _dtype) for _s in _shapes],
        lambda *xs, e=_subs: gs.einsum(e, *xs),
        (_subs, _shapes, _dtype),
    )

for _shapes, _axis in [
    ([(3, 4)], -1),
    ([(3, 4), (4,)], -1),
    ([(2, 3, 4), (3, 4), (4,)], 1),
    ([(2, 3, 4), (1, 4), (3, 1)], -2),
    ([(3, 4), (3,)], -1),  # scale does not broadcast
    ([(3, 4)], 2),
    ([()], -1),
]:
    case(
        "layer_norm",
        [(_s, F32) for _s in _shapes],
        lambda *xs, a=_axis: gs.layer_norm(*xs, axis=a),
        (_shapes, _axis),
    )
for _x, _c in [((4, 3), 3), ((2, 3, 5, 5), 3), ((2, 3, 5), 2), ((3,), 3)]:
    case(
        "batch_norm",
        [(_x, F64)] + [((_c,), F64)] * 4,
        gs.batch_norm,
        (_x, _c),
    )


# ---- the ops of issue 8 --------------------------------------------------------------------------

for _attrs in [{}, {"approximate": "tanh"}, {"approximate": "erf"}]:
    case("gelu", [((2, 3), F32)], lambda x, a=_attrs: gs.gelu(x, **a), _attrs)
for _op, _attrs in [
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {"alpha": 2}),
    ("selu", {"alpha": 1.5, "gamma": 1.0}),
    ("hardsigmoid", {"alpha": 0.1, "beta": 0.6}),
    ("leaky_relu", {"alpha": "x"}),
]:
    case(_op, [((2, 3), F64)], lambda x, o=_op, a=_attrs: getattr(gs, o)(x, **a), _attrs)
for _shapes, _dtypes in [
    (((2, 3), (3,), ()), (F64, F64, F64)),
    (((2, 3), (2, 1), (1, 3)), (I64, I64, I64)),
    (((2, 3), (4,), ()), (F64, F64, F64)),
    (((2, 3), (), ()), (F64, F32, F64)),
]:
    case(
        "clip",
        list(zip(_shapes, _dtypes, strict=True)),
        gs.clip,
        (_shapes, _dtypes),
    )
case("clip", [((3,), F32)], lambda x: gs.clip(x, 0, 1), "literal bounds")
for _shape, _attrs in [
    ((2, 3), {"pads": (1, 0, 2, 3)}),
    ((2, 3), {"pads": (1, 1, 1, 1), "mode": "reflect"}),
    ((2, 3), {"pads": (2, 0, 0, 0), "mode": "reflect"}),
    ((0, 3), {"pads": (1, 0, 0, 0), "mode": "edge"}),
    ((2, 3), {"pads": (1, 2)}),
    ((2, 3), {"pads": (0, 0, 0, -1)}),
    ((2, 3), {"pads": (0, 0, 0, 1), "mode": "wrap"}),
    ((), {"pads": ()}),
]:
    case("pad", [(_shape, F64)], lambda x, a=_attrs: gs.pad(x, **a), (_shape, _attrs))
for _axis in [None, 0, (0, -1), 3]:
    case("flip", [((2, 3, 4), I32)], lambda x, a=_axis: gs.flip(x, a), _axis)
for _shape, _reps in [
    ((2, 3), (2, 1)),
    ((3,), (2, 2)),
    ((2, 3), (3,)),
    ((2, 3), (1, -1)),
    ((), (2,)),
]:
    case("tile", [(_shape, F64)], lambda x, r=_reps: gs.tile(x, r), (_shape, _reps))
for _repeats, _axis in [(2, 0), (3, -1), (0, 1), (-1, 0), (2, 2)]:
    case(
        "repeat",
        [((2, 3), B)],
        lambda x, r=_repeats, a=_axis: gs.repeat(x, r, a),
        (_repeats, _axis),
    )
for _dtype, _attrs in [
    (F64, {"axis": 0}),
    (I32, {"axis": -1, "exclusive": True}),
    (F32, {"axis": 1, "reverse": True, "exclusive": False}),
    (B, {"axis": 0}),
    (F64, {"axis": 2}),
]:
    case("cumsum", [((2, 3), _dtype)], lambda x, a=_attrs: gs.cumsum(x, **a), (_dtype, _attrs))
for _source in DTYPES:
    for _target in [F32, I64, B, "float16"]:
        case(
            "astype", [((2, 3), _source)], lambda x, t=_target: gs.astype(x, t), (_source, _target)
        )
case("astype", [((2,), I64)], lambda x: gs.astype(x, np.float32), "numpy dtype")
for _op in ("argmax", "argmin"):
    for _shape, _axis, _keep in [
        ((2, 3), 0, False),
        ((2, 3), -1, True),
        ((2, 0), 1, False),
        ((2,), 1, False),
    ]:
        case(
            _op,
            [(_shape, F64)],
            lambda x, o=_op, a=_axis, k=_keep: getattr(gs, o)(x, a, k),
            (_shape, _axis, _keep),
        )
    case(_op, [((2, 3), B)], lambda x, o=_op: getattr(gs, o)(x, 0), "bool")
for _op in ("erf", "softsign"):
    for _dtype in (F64, F32, I64):
        case(_op, [((2, 3), _dtype)], getattr(gs, _op), _dtype)


# ---- the check ---------------------------------------------------------------------------------


def _sdk_exposed_ops() -> set[str]:
    """The core's public ops that the SDK can emit (slice through indexing)."""
    return {
        name
        for name, opdef in OPS.items()
        if not opdef.internal and (name in gs.__all__ or name == "slice")
    }


def test_every_sdk_op_is_covered() -> None:
    assert {c.op for c in CASES} == _sdk_exposed_ops()


def _sdk_build(c: Case, monkeypatch: pytest.MonkeyPatch) -> tuple[gs.Graph, gs.Var, list]:
    """Build the case; the SDK's inference errors are recorded, not raised."""
    errors: list[Exception] = []
    infer = sdk._infer

    def lenient(op, ins, attrs):
        try:
            return infer(op, ins, attrs)
        except (TypeError, ValueError, IndexError) as exc:
            errors.append(exc)
            return None, ins[0].dtype if ins else "float64", dict(attrs)

    monkeypatch.setattr(sdk, "_infer", lenient)
    g = gs.Graph()
    xs = [g.input(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(c.inputs)]
    y = c.build(*xs)
    g.output("y", y)
    return g, y, errors


def _core_build(g: gs.Graph) -> Program | GraphError:
    graphdef = graph_from_proto(g.to_proto(), max_nodes=100, max_elements=10_000)
    try:
        return Program.build(graphdef)
    except GraphError as exc:
        return exc


@pytest.mark.parametrize("c", CASES, ids=str)
def test_sdk_and_core_agree(c: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    g, y, errors = _sdk_build(c, monkeypatch)
    core = _core_build(g)
    if isinstance(core, GraphError):
        assert errors, f"the core rejects {c} ({core}) but the SDK accepts it"
    else:
        assert not errors, f"the SDK rejects {c} ({errors[0]}) but the core accepts it"
        t = core.types["y"]
        assert (y.shape, y.dtype) == (t.shape, t.dtype)
    for exc in errors:
        assert isinstance(exc, TypeError | ValueError | IndexError)
        assert str(exc).startswith(f"{c.op}: "), str(exc)


def _with_unknowns(types: list[TensorType]):
    """The operand types with one dimension unknown (-1), for each dimension in turn, and with
    one operand's rank unknown (None), for each operand in turn."""
    for i, t in enumerate(types):
        assert t.shape is not None
        for j in range(len(t.shape)):
            shape = (*t.shape[:j], -1, *t.shape[j + 1 :])
            yield [*types[:i], TensorType(shape, t.dtype), *types[i + 1 :]]
        yield [*types[:i], TensorType(None, t.dtype), *types[i + 1 :]]


def _consistent(partial: TensorType, concrete: TensorType) -> bool:
    if partial.dtype != concrete.dtype or partial.shape is None:
        return partial.dtype == concrete.dtype
    assert concrete.shape is not None
    return len(partial.shape) == len(concrete.shape) and all(
        d in (-1, e) for d, e in zip(partial.shape, concrete.shape, strict=True)
    )


def test_rules_never_fail_on_unknowns_and_agree_with_the_concrete_type() -> None:
    checked = 0
    for c in CASES:
        g = gs.Graph()
        xs = [g.input(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(c.inputs)]
        try:
            g.output("y", c.build(*xs))
        except (TypeError, ValueError, IndexError):
            continue  # rejected with concrete shapes: nothing to compare
        program = _core_build(g)
        assert isinstance(program, Program), f"{c}: the SDK accepts it, the core does not"
        for node in program.nodes:
            spec = SPECS[node.op]
            types = [program.types[s] for s in node.inputs]
            for variant in _with_unknowns(types):
                out = spec.infer(variant, **node.attrs)
                assert _consistent(out, program.types[node.name]), (c, variant, out)
                checked += 1
    assert checked > 2000


@pytest.mark.parametrize(
    "key", [k for k in INDEXES if k not in (2, (0, 0, 0, 0), (Ellipsis, -5))], ids=str
)
def test_indexing_infers_as_the_slice_op(key: Any) -> None:
    g = gs.Graph()
    x = g.input("x", (2, 3, 4))
    assert x[key].shape == sdk.emit("slice", (x,), {"index": sdk._canonical_index(key)}).shape


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda x, y: x + y, (-1, 3)),
        (lambda x, y: gs.stack([x, y]), (2, -1, 3)),
        (lambda x, y: gs.concatenate([x, y], axis=0), (-1, 3)),
        (lambda x, y: gs.mse(x, y, reduction="none"), (-1, 3)),
        (lambda x, y: gs.sum(x, axis=0), (3,)),
        (lambda x, y: gs.max(x, axis=0), (3,)),
        (lambda x, y: gs.var(x, axis=0, ddof=5), (3,)),
        (lambda x, y: x @ y.T, (-1, -1)),
        (lambda x, y: gs.softmax(x, axis=0), (-1, 3)),
        (lambda x, y: gs.squeeze(x, 0), (3,)),
    ],
)
def test_unknown_sizes_stay_permissive(build: Callable, shape: tuple[int, ...]) -> None:
    """With a -1 dimension the SDK accepts what some size would make valid, and infers -1."""
    g = gs.Graph()
    x, y = g.input("x", (-1, 3)), g.input("y", (-1, 3))
    assert build(x, y).shape == shape


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda x, y: gs.stack([x, y[:1]]),
            ValueError,
            rf"stack: operand 1 \('slice_\d+', built at {re.escape(__file__)}:\d+ in <lambda>\)"
            ": shape",
        ),
        (lambda x, y: gs.concatenate([x, y.T]), ValueError, "concatenate: operand 1"),
        (lambda x, y: gs.mean(x > 0), TypeError, "mean: operand 0 .* needs float32/float64"),
        (lambda x, y: gs.softmax(gs.sum(x)), ValueError, "softmax: operand 0 .* got a scalar"),
        (lambda x, y: gs.where(x, x, y), TypeError, r"where: operand 0 \('x'\): where's condition"),
        (lambda x, y: x @ gs.sum(y, 1), ValueError, r"matmul: .*shapes \[2, 3\] and \[2\]"),
    ],
)
def test_errors_name_the_op_and_operand(build: Callable, error: type, match: str) -> None:
    g = gs.Graph()
    x, y = g.input("x", (2, 3)), g.input("y", (2, 3))
    with pytest.raises(error, match=match):
        build(x, y)


def test_mixed_float_dtypes_are_rejected_with_both_names() -> None:
    g = gs.Graph()
    x, y = g.input("x", (3,), "float32"), g.input("y", (3,), "float64")
    with pytest.raises(TypeError, match=r"add: operand 1 \('y'\).* operand 0 \('x'\) is float32"):
        x + y
    with pytest.raises(TypeError, match=r"matmul: operand 1 \('y'\)"):
        x @ y
    with pytest.raises(TypeError, match=r"stack: operand 1 \('y'\)"):
        gs.stack([x, y])
