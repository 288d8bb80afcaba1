"""The op registry: one `OpDef` per op, holding its type rule, numpy forward and derivative rules.

Ops are declared in `gradserve.autodiff.ops`, one short entry each, in the style of HIPS
autograd's VJP table. Derivative rules are functions of `Sym` values that emit IR nodes, so a
derivative is itself a Program (see `transforms.py`).

Two kinds of rules exist:
- element-wise ops give one *partial* per operand, `partial(g, ans, *xs) -> Sym`, which maps an
  incoming tangent or cotangent `g` (same thing for a diagonal Jacobian) to its contribution;
  the framework lifts tangents to the output's rank and sums cotangents back to the operand's
  shape (autograd's `unbroadcast`);
- every other op gives `jvp(tangents, ans, *xs, **attrs) -> Sym` (tangents hold None for
  symbolic zeros) and `vjp(g, ans, *xs, **attrs) -> tuple[Sym | None, ...]` (one per operand,
  None where no gradient flows).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradserve.autodiff.ir import DTYPES, FLOAT_DTYPES, GraphError, NodeDef, TensorType


class RuleError(ValueError):
    """Raised by type rules; `Program.build` adds the node name."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """One attribute: its kind ('int', 'float', 'ints', 'string', 'tensor'), default, doc."""

    kind: str
    default: Any = None
    required: bool = False


Partial = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class OpDef:
    """Everything gradserve knows about one op."""

    name: str
    arity: int | None  # None: variadic (one or more operands)
    infer: Callable[..., TensorType]  # infer(in_types, **attrs) -> TensorType
    forward: Callable[..., np.ndarray]  # forward(*arrays, **attrs)
    doc: str
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)
    partials: tuple[Partial | None, ...] | None = None  # element-wise ops
    jvp: Callable[..., Any] | None = None
    vjp: Callable[..., Any] | None = None
    differentiable: bool = True
    internal: bool = False  # emitted by derivative rules; still usable by clients

    @property
    def elementwise(self) -> bool:
        return self.partials is not None

    def check_attrs(self, node: NodeDef) -> dict[str, Any]:
        """Attributes coerced to their kinds, with defaults filled in."""
        unknown = set(node.attrs) - set(self.attrs)
        if unknown:
            raise GraphError(
                node.name, f"attrs.{sorted(unknown)[0]}", f"{self.name} has no such attribute"
            )
        if self.arity is not None and len(node.inputs) != self.arity:
            raise GraphError(
                node.name,
                "inputs",
                f"{self.name} takes {self.arity} operands, got {len(node.inputs)}",
            )
        if self.arity is None and not node.inputs:
            raise GraphError(node.name, "inputs", f"{self.name} takes at least one operand")
        out: dict[str, Any] = {}
        for key, spec in self.attrs.items():
            if key not in node.attrs:
                if spec.required:
                    raise GraphError(node.name, f"attrs.{key}", "missing required attribute")
                if spec.default is not None:
                    out[key] = spec.default
                continue
            try:
                out[key] = _coerce(spec.kind, node.attrs[key])
            except (TypeError, ValueError) as exc:
                raise GraphError(node.name, f"attrs.{key}", str(exc)) from None
        return out

    def infer_node(self, node: str, in_types: Sequence[TensorType], attrs: Mapping) -> TensorType:
        try:
            return self.infer(in_types, **attrs)
        except RuleError as exc:
            raise GraphError(node, exc.field, exc.reason) from None

    def bind(self, attrs: Mapping[str, Any]) -> Callable[..., np.ndarray]:
        """The forward with its attributes bound: what the executor calls."""
        return functools.partial(self.forward, **attrs) if attrs else self.forward


def _coerce(kind: str, value: Any) -> Any:
    if kind == "int":
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise TypeError(f"expected an integer, got {type(value).__name__}")
        return int(value)
    if kind == "float":
        if not isinstance(value, int | float | np.number) or isinstance(value, bool):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)
    if kind == "ints":
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            return (int(value),)
        if not isinstance(value, tuple | list) or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
        ):
            raise TypeError("expected a list of integers")
        return tuple(int(v) for v in value)
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value
    if kind == "tensor":
        if not isinstance(value, np.ndarray) or value.dtype.name not in DTYPES:
            raise TypeError("expected a tensor of a supported dtype")
        return value
    raise AssertionError(kind)


OPS: dict[str, OpDef] = {}
# The version of the op set (names, operands, attributes, semantics); a graph's `opset` names it.
OPSET = 1


def register(opdef: OpDef) -> OpDef:
    assert opdef.name not in OPS, opdef.name
    OPS[opdef.name] = opdef
    return opdef


# ---- type rules shared by many ops -------------------------------------------------------------


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcasting rule, in plain Python: it runs once per emitted node."""
    if all(s == shapes[0] for s in shapes):
        return shapes[0]
    ndim = max(len(s) for s in shapes)
    out = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            raise RuleError(
                "inputs", f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast"
            )
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def same_dtype(types: Sequence[TensorType], allowed: Sequence[str], what: str) -> str:
    dtype = types[0].dtype
    for i, t in enumerate(types):
        if t.dtype not in allowed:
            raise RuleError(f"inputs[{i}]", f"{what} needs {'/'.join(allowed)}, got {t.dtype}")
        if t.dtype != dtype:
            raise RuleError(
                f"inputs[{i}]", f"dtype mismatch: {dtype} and {t.dtype} (cast one explicitly)"
            )
    return dtype


NUMERIC = ("float32", "float64", "int64", "int32")


def elementwise_type(allowed: Sequence[str] = FLOAT_DTYPES, result: str | None = None):
    """The type rule of an element-wise op: operands broadcast and share one dtype."""

    def infer(types: Sequence[TensorType]) -> TensorType:
        dtype = same_dtype(types, allowed, "this op")
        return TensorType(broadcast_shapes(*(t.shape for t in types)), result or dtype)

    return infer


def normalize_axes(axes: Sequence[int], ndim: int, field: str = "attrs.axis") -> tuple[int, ...]:
    """Axes as negative numbers: they then stay right when a batch axis is prepended."""
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise RuleError(field, f"axis {a} is out of range for rank {ndim}")
        out.append(a - ndim if a >= 0 else a)
    if len(set(out)) != len(out):
        raise RuleError(field, f"repeated axis in {list(axes)}")
    return tuple(sorted(out))
