"""The converter: an ONNX model (a path, bytes or an onnx.ModelProto) as a gradserve Graph.

Graph inputs become inputs (symbolic dimensions -1), float initializers inputs with defaults,
integer and bool initializers constants. Nodes whose operands are all known at import (Constant,
Shape of a static shape, and the Gather/Concat/Cast/... arithmetic on them) are folded with
ONNX's reference implementation; the others are converted by the handlers of `ops.py`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from ..proto import graph_pb2
from ._model import DTYPES, Graph, Node, OnnxImportError, Shape, Value
from .ops import FOLD_ONLY, HANDLERS
from .shapes import SHAPE_ARITHMETIC, shape_arithmetic

#: The default-domain opsets the converter reads: 13 up to the newest the installed onnx
#: package defines. Exports of torch.onnx (opsets 17 and 18) are what its tests use. A model
#: of an older opset is read when each of its operators is defined there as at opset 13.
OPSETS = range(13, onnx.defs.onnx_opset_version() + 1)

#: The ONNX op types that can be converted (FOLD_ONLY ones only when known at import).
SUPPORTED_OPS = tuple(sorted({*HANDLERS, *FOLD_ONLY}))

#: ONNX op type -> the operand positions that must be known at import (shapes, axes, ...).
STATIC_OPERANDS = {op: h.static for op, h in HANDLERS.items() if h.static} | {
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
}

# The most elements that folding may create (a ConstantOfShape, Expand, Tile or Range known at
# import); larger results would let a small model claim unbounded memory.
MAX_FOLDED_ELEMENTS = 1 << 24


def load_model(source: onnx.ModelProto | bytes | str | os.PathLike[str]) -> onnx.ModelProto:
    """The ModelProto of ``source``: a ModelProto, its serialized bytes, or a file path."""
    if isinstance(source, onnx.ModelProto):
        model = source
    elif isinstance(source, bytes | bytearray | memoryview):
        try:
            model = onnx.ModelProto.FromString(bytes(source))
        except Exception as exc:  # protobuf's DecodeError, or a RuntimeWarning turned error
            raise OnnxImportError(f"not a serialized ONNX model (ModelProto): {exc}") from None
    elif isinstance(source, str | os.PathLike):
        try:
            model = onnx.load(os.fspath(source))
        except OSError as exc:
            raise OnnxImportError(f"cannot read {os.fspath(source)!r}: {exc}") from None
        except Exception as exc:
            raise OnnxImportError(f"{os.fspath(source)!r} is not an ONNX model: {exc}") from None
    else:
        raise TypeError(
            f"expected an onnx.ModelProto, bytes or a path, got {type(source).__name__}"
        )
    if model.ir_version <= 0 or not model.graph.output:
        raise OnnxImportError("not an ONNX model: no IR version or no graph outputs")
    return model


def _opset(model: onnx.ModelProto) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise OnnxImportError("the model imports no opset of the default ONNX domain")
    if version >= OPSETS.stop or version < 1:
        raise OnnxImportError(
            f"opset {version} of the default domain is not supported; use an opset from "
            f"{OPSETS.start} to {OPSETS.stop - 1}"
        )
    return version


def _as_at_the_first_opset(op_type: str, opset: int) -> bool:
    """Whether `op_type` at `opset` (before 13) is the operator it is at opset 13."""
    try:
        then = onnx.defs.get_schema(op_type, opset).since_version
        first = onnx.defs.get_schema(op_type, OPSETS.start).since_version
    except onnx.defs.SchemaError:
        return False
    return then == first


def _dtype(elem_type: int) -> str | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return None


def _shape(value_info: onnx.ValueInfoProto) -> tuple[Shape, str | None]:
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type":
        return None, None
    dtype = _dtype(t.tensor_type.elem_type)
    if not t.tensor_type.HasField("shape"):
        return None, dtype
    dims: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        kind = d.WhichOneof("value")
        dims.append(d.dim_value if kind == "dim_value" else d.dim_param or None)
    return tuple(dims), dtype


def _inferred_types(
    model: onnx.ModelProto, static: Mapping[str, np.ndarray]
) -> dict[str, tuple[Shape, str | None]]:
    """Every value's (shape, dtype) from ONNX shape inference, with the static inputs as
    initializers so that shapes computed from them are known."""
    if static:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        kept = [i for i in model.graph.input if i.name not in static]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        for name, value in static.items():
            model.graph.initializer.append(numpy_helper.from_array(value, name))
    # Inference is a help, not a requirement: the handlers say what they lack.
    with contextlib.suppress(Exception):
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = model.graph
    return {v.name: _shape(v) for v in [*g.input, *g.value_info, *g.output]}


def to_graph(source: Any, *, static_inputs: Mapping[str, Any] | None = None) -> graph_pb2.Graph:
    """The gradserve Graph message of an ONNX model (a ModelProto, its bytes, or a path).

    ``static_inputs`` maps graph inputs to values that are folded at import, as constants:
    for a shape or axes that a model takes as a run-time input (a static argument, as in
    ``jax.jit``). Raises `OnnxImportError` naming the node, op type and attribute of anything
    it cannot convert.
    """
    model = load_model(source)
    opset = _opset(model)
    static = {k: np.asarray(v) for k, v in (static_inputs or {}).items()}
    input_names = {i.name for i in model.graph.input}
    for name in static:
        if name not in input_names:
            raise OnnxImportError(f"static_inputs names {name!r}, which is not a graph input")
    types = _inferred_types(model, static)
    out = Graph()
    values: dict[str, Value] = {}
    _add_inputs(model.graph, static, out, values)
    for proto in model.graph.node:
        _convert_node(proto, values, types, out, opset)
    for o in model.graph.output:
        out.proto.outputs.append(_output(o.name, values, out))
    return out.proto


def _add_inputs(
    graph: onnx.GraphProto, static: Mapping[str, np.ndarray], out: Graph, values: dict
) -> None:
    if graph.sparse_initializer:
        raise OnnxImportError("sparse initializers are not supported")
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for spec in graph.input:
        if spec.name in initializers:  # an input with a default value (IR < 4 lists them)
            continue
        if spec.name in static:
            values[spec.name] = Value.of(static[spec.name])
            continue
        shape, dtype = _shape(spec)
        if dtype not in DTYPES:
            raise OnnxImportError(
                f"graph input {spec.name!r} is {dtype or 'not a tensor'}; gradserve supports "
                f"{', '.join(DTYPES)}"
            )
        if shape is None:
            raise OnnxImportError(f"graph input {spec.name!r} has no shape; export it with one")
        named = tuple(d if d is not None else f"?{spec.name}.{i}" for i, d in enumerate(shape))
        ref = out.add_input(spec.name, dtype, [d if isinstance(d, int) else -1 for d in named])
        values[spec.name] = Value(dtype, named, ref=ref)
    for name, array in initializers.items():
        if array.dtype.kind == "f" and array.dtype.name in DTYPES:  # a weight
            ref = out.add_input(name, array.dtype.name, array.shape, default=array)
            values[name] = Value(array.dtype.name, array.shape, ref=ref)
        else:  # shapes, axes, indices: constants, folded where they are used
            values[name] = Value.of(array)


def _convert_node(
    proto: onnx.NodeProto, values: dict[str, Value], types: Mapping, out: Graph, opset: int
) -> None:
    name = proto.name or (proto.output[0] if proto.output else proto.op_type)
    if proto.domain not in ("", "ai.onnx"):
        raise OnnxImportError(
            f"operators of domain {proto.domain!r} are not supported", name, proto.op_type
        )
    handler = HANDLERS.get(proto.op_type)
    if handler is None and proto.op_type not in FOLD_ONLY:
        raise OnnxImportError("this operator is not supported", name, proto.op_type)
    if opset < OPSETS.start and not _as_at_the_first_opset(proto.op_type, opset):
        raise OnnxImportError(
            f"at opset {opset} this operator is not the one of opset {OPSETS.start}, from which "
            f"gradserve reads models; export with opset {OPSETS.start} or later",
            name,
            proto.op_type,
        )
    inputs: list[Value | None] = []
    for i, src in enumerate(proto.input):
        if src and src not in values:
            raise OnnxImportError(f"unknown value {src!r}", name, proto.op_type, f"input {i}")
        inputs.append(values[src] if src else None)
    found = [types.get(o, (None, None)) for o in proto.output]
    if any(shape is None for shape, _ in found):  # lost upstream: infer from the operands
        found = _node_types(proto, inputs, opset) or found
    shapes, dtypes = [f[0] for f in found], [f[1] for f in found]
    node = Node(proto, inputs, shapes, dtypes, out, opset)
    known = [_known(v) for v in inputs]
    try:
        if all(v is None or v.const is not None for v in known) and proto.op_type != "Identity":
            results = _fold(Node(proto, known, shapes, dtypes, out, opset))
        elif any(_symbolic(v) for v in inputs) and proto.op_type in SHAPE_ARITHMETIC:
            results = [shape_arithmetic(node)]
        elif handler is None:
            raise node.fail("its operands must be known at import (constants)")
        else:
            converted = handler.convert(node)
            results = converted if isinstance(converted, list) else [converted]
    except OnnxImportError:
        raise
    except Exception as exc:  # whatever a malformed node makes numpy or onnx raise
        raise node.fail(f"cannot convert: {exc}") from None
    for o, value in zip(proto.output, results, strict=False):
        if o:
            values[o] = value


def _node_types(
    proto: onnx.NodeProto, inputs: list[Value | None], opset: int
) -> list[tuple[Shape, str | None]]:
    """(shape, dtype) of each output by ONNX shape inference of this node alone, from its
    operands as converted (constants included, so a computed Reshape target counts)."""
    types, data = {}, {}
    for name, value in zip(proto.input, inputs, strict=True):
        if value is None:
            continue
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(value.dtype))
        shape = None if value.shape is None else [d for d in value.shape]
        types[name] = onnx.helper.make_tensor_type_proto(elem, shape)
        if value.const is not None:
            data[name] = numpy_helper.from_array(value.const, name)
    try:
        schema = onnx.defs.get_schema(proto.op_type, opset, proto.domain)
        opsets = [onnx.helper.make_opsetid("", opset)]
        out = shape_inference.infer_node_outputs(schema, proto, types, data, None, opsets)
    except Exception:  # no schema, or inference refuses: the handler says what it lacks
        return []
    return [_shape(onnx.helper.make_value_info(o, out[o])) if o in out else (None, None)
            for o in proto.output]  # fmt: skip


def _symbolic(value: Value | None) -> bool:
    return value is not None and value.ref is None and value.const is None


def _known(value: Value | None) -> Value | None:
    """``value`` as a constant if it is known at import: folded, or empty (whatever its
    values, a tensor with no elements is known, e.g. for the identity of a reduction)."""
    if value is None or value.const is not None:
        return value
    shape = value.static_shape
    if shape is None or 0 not in shape:
        return value
    return Value(value.dtype, shape, const=np.zeros(shape, value.dtype), ref=value.ref)


def _fold(node: Node) -> list[Value]:
    """The node's outputs, computed now by ONNX's reference implementation."""
    for i, shape in enumerate(node.out_shapes):
        static = shape is not None and all(isinstance(d, int) for d in shape)
        if static and math.prod(shape) > MAX_FOLDED_ELEMENTS:  # type: ignore[arg-type]
            raise node.fail(f"the folded output {i} is too large: shape {list(shape)}")
    if node.op_type in ("ConstantOfShape", "Expand", "Tile"):
        size = math.prod(int(d) for d in np.asarray(node.inputs[-1].const).reshape(-1))  # type: ignore[union-attr]
        if node.op_type == "Tile":
            size *= node.inputs[0].const.size  # type: ignore[union-attr]
        if size > MAX_FOLDED_ELEMENTS:
            raise node.fail(f"the folded result would have {size} elements")
    if node.op_type == "Range":
        start, limit, delta = (float(np.asarray(v.const).item()) for v in node.inputs)  # type: ignore[union-attr]
        if delta == 0 or (limit - start) / delta > MAX_FOLDED_ELEMENTS:
            raise node.fail("the folded range is empty-stepped or too large")
    feeds = {src: v.const for src, v in zip(node.proto.input, node.inputs, strict=True) if src}
    evaluator = ReferenceEvaluator(node.proto, opsets={"": node.opset})
    results = evaluator.run(None, feeds)
    return [Value.of(np.asarray(r)) for r in results]


def _output(name: str, values: Mapping[str, Value], out: Graph) -> str:
    """The gradserve name of ONNX graph output ``name``: its node, or a node made for it (a
    constant, or an identity view of an input or of a value that another name also holds)."""
    value = values.get(name)
    if value is None:
        raise OnnxImportError(f"graph output {name!r} is not computed by any node")
    if value.ref == name:
        return name
    if value.ref is None:
        if value.const is None or value.const.dtype.name not in DTYPES:
            raise OnnxImportError(f"graph output {name!r} cannot be computed by gradserve")
        value.ref = out.add_node(name, "constant", (), {"value": value.const})
        return value.ref
    return out.add_node(name, "slice", [value.ref], {"index": "..."})
