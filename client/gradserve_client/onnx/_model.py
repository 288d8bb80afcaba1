"""The converter's state: ONNX values as gradserve values or import-time constants, and the
gradserve nodes emitted for them. The op table (`ops.py`) works through `Node`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import onnx
from onnx import helper

from ..proto import graph_pb2, tensor_codec
from ..proto.attr_codec import attr_to_proto

#: An inferred dimension: a size, a symbol (ONNX dim_param) or None (unknown).
Dim: TypeAlias = "int | str | None"
Shape: TypeAlias = "tuple[Dim, ...] | None"

#: The element types a gradserve value may have.
DTYPES = ("float32", "float64", "int64", "int32", "bool")


class OnnxImportError(ValueError):
    """The model cannot be imported. ``node`` names the ONNX node (empty for the model),
    ``op_type`` its operator, ``attribute`` the attribute or input at fault (or "")."""

    def __init__(self, reason: str, node: str = "", op_type: str = "", attribute: str = ""):
        where = f"ONNX node {node!r} ({op_type})" if op_type else "ONNX model"
        what = f", {attribute}" if attribute else ""
        super().__init__(f"{where}{what}: {reason}")
        self.node, self.op_type, self.attribute, self.reason = node, op_type, attribute, reason

    @property
    def field(self) -> str:
        """The request field it is about, as the server names it in a field violation."""
        if not self.op_type:
            return "onnx_model"
        field = f'onnx_model.graph.node["{self.node}"]'
        return f"{field}.{self.attribute}" if self.attribute else field


@dataclass(slots=True)
class Value:
    """An ONNX value during conversion: a gradserve value (``ref``), a constant known at
    import (``const``), or both (a constant once emitted). Neither: a shape (or a part of one)
    with symbolic dimensions, its ``elems`` sizes or symbols, for import-time shape
    arithmetic alone (``view(x.size(0), -1)``)."""

    dtype: str  # a numpy dtype name
    shape: Shape
    const: np.ndarray | None = None
    ref: str | None = None
    elems: tuple[int | str, ...] | None = None  # of a 0-d or 1-d shape value

    @property
    def shape_elems(self) -> tuple[int | str, ...] | None:
        """The elements of a 0-d or 1-d integer value known at import, sizes or symbols."""
        if self.elems is not None:
            return self.elems
        c = self.const
        if c is not None and c.dtype.kind in "iu" and c.ndim <= 1:
            return tuple(int(v) for v in c.reshape(-1))
        return None

    @classmethod
    def of(cls, array: np.ndarray) -> Value:
        return cls(array.dtype.name, array.shape, const=array)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known size."""
        if self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return tuple(self.shape)  # type: ignore[arg-type]


def attr_value(attr: onnx.AttributeProto) -> Any:
    """An ONNX attribute as a Python value (tensors as arrays)."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


class Graph:
    """The gradserve graph being built: inputs (with defaults), nodes, and unique names."""

    def __init__(self) -> None:
        self.proto = graph_pb2.Graph()
        self._names: set[str] = set()

    def name(self, wanted: str) -> str:
        """``wanted`` if it is free, else ``wanted`` with a numeric suffix."""
        name, k = wanted or "v", 1
        while name in self._names:
            k += 1
            name = f"{wanted}_{k}"
        self._names.add(name)
        return name

    def add_input(self, name: str, dtype: str, shape: Sequence[int], default: Any = None):
        spec = self.proto.inputs.add(
            name=self.name(name), dtype=tensor_codec.dtype_from_name(dtype), shape=shape
        )
        if default is not None:
            spec.default.CopyFrom(tensor_codec.to_tensor(default))
        return spec.name

    def add_node(
        self,
        name: str,
        op: str,
        inputs: Sequence[str],
        attrs: Mapping[str, Any],
        source: str = "",
    ) -> str:
        node = self.proto.nodes.add(name=self.name(name), op=op, inputs=list(inputs), source=source)
        for key, value in attrs.items():
            node.attrs[key].CopyFrom(attr_to_proto(value))
        return node.name


class Node:
    """One ONNX node being converted: its operands as Values, its attributes, and what a
    handler of `ops.py` uses to emit gradserve nodes and to refuse what it cannot convert."""

    def __init__(
        self,
        proto: onnx.NodeProto,
        inputs: list[Value | None],
        out_shapes: list[Shape],
        out_dtypes: list[str | None],
        graph: Graph,
        opset: int,
    ) -> None:
        self.proto = proto
        self.name = proto.name or (proto.output[0] if proto.output else proto.op_type)
        self.op_type = proto.op_type
        self.inputs = inputs
        self.outputs = list(proto.output)
        self.out_shapes = out_shapes
        self.out_dtypes = out_dtypes
        self.graph = graph
        self.opset = opset
        self.attrs = {a.name: attr_value(a) for a in proto.attribute}
        # Every gradserve node made for it says so in its errors (graph.proto Node.source).
        self.source = f"ONNX node {self.name!r} ({self.op_type})"

    # -- refusing

    def fail(self, reason: str, attribute: str = "") -> OnnxImportError:
        return OnnxImportError(reason, self.name, self.op_type, attribute)

    def check_attrs(self, known: Sequence[str]) -> None:
        for key in self.attrs:
            if key not in known:
                raise self.fail("this attribute is not supported", f"attribute {key!r}")

    # -- reading

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return i < len(self.inputs) and self.inputs[i] is not None

    def input(self, i: int) -> Value:
        if not self.has(i):
            raise self.fail("this input is required", f"input {i}")
        return self.inputs[i]  # type: ignore[return-value]

    def static(self, i: int, what: str) -> np.ndarray:
        """Input ``i``, which must be known at import (a constant, an initializer of an integer
        type, folded shape arithmetic, or a graph input given in static_inputs)."""
        value = self.input(i)
        if value.const is None:
            raise self.fail(
                f"{what} must be known at import: a constant, an integer initializer or shape "
                "arithmetic of static shapes (a graph input can be made static with "
                "static_inputs={name: value})",
                f"input {i} ({self.proto.input[i]!r})",
            )
        return value.const

    def static_ints(self, i: int, what: str) -> list[int]:
        return [int(v) for v in np.asarray(self.static(i, what)).reshape(-1)]

    def out_shape(self, i: int = 0) -> tuple[int, ...] | None:
        """Output ``i``'s inferred shape, with one unknown dimension as -1, or None."""
        shape = self.out_shapes[i] if i < len(self.out_shapes) else None
        if shape is None:
            return None
        unknown = [d for d in shape if not isinstance(d, int)]
        if len(unknown) > 1:
            return None
        return tuple(d if isinstance(d, int) else -1 for d in shape)

    def rank(self, value: Value, what: str = "input 0") -> int:
        if value.rank is None:
            raise self.fail(
                "needs the rank of this input, which shape inference did not give", what
            )
        return value.rank

    # -- emitting

    def ref(self, value: Value) -> str:
        """The gradserve value holding ``value``, emitting a constant node for a folded one."""
        if value.ref is not None:
            return value.ref
        if value.const is None:
            raise self.fail(
                "needs a static shape: an operand depends on a symbolic dimension; export the "
                "model with static shapes, or pass static_inputs"
            )
        array = value.const
        if array.dtype.name not in DTYPES:
            raise self.fail(f"an operand is {array.dtype.name}, which gradserve does not support")
        value.ref = self.graph.add_node(
            f"{self.name}/const", "constant", (), {"value": array}, self.source
        )
        return value.ref

    def emit(
        self,
        op: str,
        operands: Sequence[Value],
        output: int | None = None,
        **attrs: Any,
    ) -> Value:
        """A gradserve node ``op(operands, **attrs)``: named as ONNX output ``output``, or a
        helper node (``output=None``)."""
        args = [self.ref(v) for v in operands]
        name = f"{self.outputs[0]}/{op}" if output is None else self.outputs[output]
        ref = self.graph.add_node(name, op, args, attrs, self.source)
        shape = self.out_shapes[output] if output is not None else None
        dtype = self.out_dtypes[output] if output is not None else None
        if op == "astype":
            dtype = attrs["dtype"]
        return Value(dtype or operands[0].dtype, shape, ref=ref)

    def constant(self, array: Any, dtype: str) -> Value:
        return Value.of(np.asarray(array, dtype=dtype))
