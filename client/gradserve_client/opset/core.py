"""The pieces every op definition is made of: types, attributes, `OpSpec`, the shape helpers.

Shapes here may be partly unknown, because the SDK infers types before any size is bound: a
dimension of -1 is an unknown size and a shape of None an unknown rank. The helpers treat an
unknown as "could be anything" and never fail on one, so the same rule checks a graph in the
SDK (where unknowns occur) and in the server (where every shape is concrete).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

DTYPES = ("float32", "float64", "int64", "int32", "bool")
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int64", "int32")
NUMERIC = (*FLOAT_DTYPES, *INT_DTYPES)
ATTR_KINDS = ("int", "float", "ints", "floats", "string", "tensor")

Shape: TypeAlias = tuple[int, ...]
AttrValue: TypeAlias = int | float | str | tuple[int, ...] | tuple[float, ...] | np.ndarray


class RuleError(ValueError):
    """A type rule or attribute check failed. `field` says where ("inputs[1]", "attrs.axis")."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DTypeError(RuleError, TypeError):
    """A RuleError about dtypes (a TypeError too, as Python would raise)."""


class IndexRuleError(RuleError, IndexError):
    """A RuleError about an index out of range (an IndexError too)."""


@dataclass(frozen=True, slots=True)
class TensorType:
    """A value's static type: its shape (-1 for an unknown size, None for an unknown rank)."""

    shape: Shape | None
    dtype: str

    @property
    def ndim(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements, or -1 if unknown."""
        return size(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        return f"{self.dtype}{'[?]' if self.shape is None else list(self.shape)}"


# ---- attributes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """One attribute: its wire kind, its default (None: absent unless given), and whether it is
    required. `choices` restricts the values; (0, 1) makes an int a flag (a bool in the SDK)."""

    kind: str
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        assert self.kind in ATTR_KINDS, self.kind

    @property
    def is_flag(self) -> bool:
        return self.kind == "int" and self.choices == (0, 1)

    def coerce(self, value: Any) -> AttrValue:
        """`value` as this attribute's kind; TypeError or ValueError says why not."""
        out = _coerce(self.kind, value)
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"must be one of {'/'.join(map(str, self.choices))}, got {out!r}")
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _coerce(kind: str, value: Any) -> AttrValue:
    if kind == "int":
        if not _is_int(value):
            raise TypeError(f"expected an integer, got {type(value).__name__}")
        return int(value)
    if kind == "float":
        if not isinstance(value, int | float | np.number) or isinstance(value, bool | np.bool_):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)
    if kind == "ints":
        if _is_int(value):
            return (int(value),)
        if not isinstance(value, tuple | list) or not all(_is_int(v) for v in value):
            raise TypeError("expected a list of integers")
        return tuple(int(v) for v in value)
    if kind == "floats":
        if not isinstance(value, tuple | list) or not all(
            isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in value
        ):
            raise TypeError("expected a list of numbers")
        return tuple(float(v) for v in value)
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value
    if not isinstance(value, np.ndarray) or value.dtype.name not in DTYPES:
        raise TypeError("expected a tensor of a supported dtype")
    return value


# ---- op specs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operand:
    """One operand: its name (in the SDK's signature and the docs), and what a Python literal
    given for it becomes in the SDK: None (the dtype of the Var it meets), "bool" or "int"."""

    name: str
    literal: str | None = None


@dataclass(frozen=True, slots=True)
class OpSpec:
    """Everything the wire contract says about one op; the server attaches its implementation."""

    name: str
    operands: tuple[Operand, ...]
    infer: Callable[..., TensorType]  # infer(in_types, **attrs) -> TensorType; raises RuleError
    doc: str
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)
    optional: int = 0  # how many trailing operands may be omitted
    variadic: bool = False  # one or more operands, all like the single one declared
    differentiable: bool = True
    internal: bool = False  # emitted by derivative rules; clients may use it too
    elementwise: bool = False
    sdk: bool = True  # the SDK has a generated function of this name

    @property
    def min_arity(self) -> int:
        return 1 if self.variadic else len(self.operands) - self.optional

    @property
    def max_arity(self) -> int | None:
        """The most operands it takes; None for variadic ops."""
        return None if self.variadic else len(self.operands)

    def check_arity(self, n: int) -> None:
        if self.variadic:
            if n < 1:
                raise RuleError("inputs", f"{self.name} takes at least one operand")
            return
        lo, hi = self.min_arity, len(self.operands)
        if not lo <= n <= hi:
            takes = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise RuleError("inputs", f"{self.name} takes {takes} operands, got {n}")

    def check_attrs(self, attrs: Mapping[str, Any]) -> dict[str, AttrValue]:
        """The attributes coerced to their kinds, with defaults filled in."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise RuleError(f"attrs.{sorted(unknown)[0]}", f"{self.name} has no such attribute")
        out: dict[str, AttrValue] = {}
        for key, spec in self.attrs.items():
            if key not in attrs:
                if spec.required:
                    raise RuleError(f"attrs.{key}", "missing required attribute")
                if spec.default is not None:
                    out[key] = spec.default
                continue
            try:
                out[key] = spec.coerce(attrs[key])
            except (TypeError, ValueError) as exc:
                raise RuleError(f"attrs.{key}", str(exc)) from None
        return out

    def check(self, types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
        """Arity, attributes and the type rule in one call (attrs as given, not yet coerced)."""
        self.check_arity(len(types))
        return self.infer(types, **self.check_attrs(attrs))


#: The version of the op set (names, operands, attributes, semantics); a graph's `opset` names
#: it. Adding an op does not change it; changing what an existing op means does.
OPSET = 1

#: Every op of the opset by name; `define` adds to it.
SPECS: dict[str, OpSpec] = {}
#: Other names of ops, in the SDK and the CLI.
ALIASES = {"ln": "log"}


def define(
    name: str,
    operands: str,
    infer: Callable[..., TensorType],
    doc: str,
    **options: Any,
) -> OpSpec:
    """Add an op to the opset. `operands` is a space-separated list of names, each with an
    optional `:bool` or `:int` (what a literal becomes in the SDK), e.g. "condition:bool x1 x2";
    a trailing `...` makes the op variadic ("xs ..."), and `[name]` marks optional trailing
    operands ("x w [b]")."""
    assert name not in SPECS, name
    parts = operands.split()
    variadic = bool(parts) and parts[-1] == "..."
    if variadic:
        parts = parts[:-1]
    optional = sum(p.startswith("[") for p in parts)
    specs = []
    for p in parts:
        text, _, literal = p.strip("[]").partition(":")
        specs.append(Operand(text, literal or None))
    spec = OpSpec(name, tuple(specs), infer, doc, optional=optional, variadic=variadic, **options)
    SPECS[name] = spec
    return spec


# ---- shape arithmetic with unknowns ------------------------------------------------------------


def size(shape: Shape | None) -> int:
    """The number of elements of `shape`, or -1 if unknown."""
    if shape is None or any(d < 0 for d in shape):
        return -1
    return math.prod(shape)


def show(shape: Shape | None) -> str:
    return "[?]" if shape is None else str(list(shape))


def broadcast_shapes(*shapes: Shape | None) -> Shape | None:
    """numpy's broadcasting rule; an unknown size broadcasts with anything."""
    if any(s is None for s in shapes):
        return None
    known: list[Shape] = [s for s in shapes if s is not None]
    if all(s == known[0] for s in known):
        return known[0]
    out = []
    for axis in range(-max(len(s) for s in known), 0):
        dims = {s[axis] for s in known if len(s) >= -axis} - {1}
        sized = dims - {-1}
        if len(sized) > 1:
            raise RuleError(
                "inputs", f"shapes {' and '.join(str(list(s)) for s in known)} do not broadcast"
            )
        out.append(sized.pop() if sized else (-1 if -1 in dims else 1))
    return tuple(out)


def same_size(a: int, b: int) -> bool:
    """Whether two sizes may be equal (an unknown one may be anything)."""
    return a < 0 or b < 0 or a == b


def unify(a: Shape, b: Shape) -> Shape | None:
    """The one shape that `a` and `b` may both be, or None if they cannot be equal."""
    if len(a) != len(b) or not all(same_size(d, e) for d, e in zip(a, b, strict=True)):
        return None
    return tuple(e if d < 0 else d for d, e in zip(a, b, strict=True))


def same_dtype(
    types: Sequence[TensorType], allowed: Sequence[str], what: str, first: int = 0
) -> str:
    """The dtype that the operands `types[first:]` share; nothing is promoted."""
    dtype = types[first].dtype
    for i, t in enumerate(types[first:], first):
        if t.dtype not in allowed:
            raise DTypeError(f"inputs[{i}]", f"{what} needs {'/'.join(allowed)}, got {t.dtype}")
        if t.dtype != dtype:
            raise DTypeError(
                f"inputs[{i}]",
                f"is {t.dtype} but inputs[{first}] is {dtype}: operands of one op share a dtype "
                "(cast one explicitly)",
            )
    return dtype


def normalize_axes(axes: Iterable[int], ndim: int, field: str = "attrs.axis") -> tuple[int, ...]:
    """Axes as sorted negative numbers: they then stay right when a batch axis is prepended."""
    axes = tuple(axes)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise RuleError(field, f"axis {a} is out of range for rank {ndim}")
        out.append(a - ndim if a >= 0 else a)
    if len(set(out)) != len(out):
        raise RuleError(field, f"repeated axis in {list(axes)}")
    return tuple(sorted(out))


def elementwise_type(allowed: Sequence[str] = FLOAT_DTYPES, result: str | None = None):
    """The type rule of an element-wise op: operands broadcast and share one dtype (its
    attributes, if any, do not change the type)."""

    def infer(types: Sequence[TensorType], **attrs: Any) -> TensorType:
        dtype = same_dtype(types, allowed, "this op")
        return TensorType(broadcast_shapes(*(t.shape for t in types)), result or dtype)

    return infer
