"""Protobuf <-> core conversion: Graph -> GraphDef, Tensor maps -> arrays, arrays -> Tensors.

Every error raised here is an ``RpcError`` subclass from ``errors.py`` naming the request field,
so the servicer never has to know what went wrong where.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gradserve_client.onnx import OnnxImportError, to_graph
from gradserve_client.proto import graph_pb2, tensor_codec, tensor_pb2
from gradserve_client.proto.attr_codec import attr_to_proto

from gradserve.autodiff import OPSET, GraphDef, InputDef, NodeDef, Program
from gradserve.autodiff.ir import Cancel, check_cancel
from gradserve.rpc.errors import INVALID_GRAPH, InvalidArgument, LimitExceeded

# A node's source goes into every error about the node, and gRPC refuses status metadata over
# 16 KiB: a longer one would turn the error into an unreadable RESOURCE_EXHAUSTED.
MAX_SOURCE_CHARS = 1024

__all__ = [
    "decode_tensors",
    "encode_tensor",
    "encode_tensors",
    "graph_from_onnx",
    "graph_from_proto",
    "graph_to_proto",
]


def _input_field(prefix: str, name: str) -> str:
    return f'{prefix}["{name}"]'


def _decode_error(exc: tensor_codec.TensorDecodeError, field: str) -> Exception:
    """The RpcError of a Tensor that did not decode, naming ``field`` (e.g. ``inputs["x"]``)."""
    if isinstance(exc, tensor_codec.TensorTooLargeError):
        return LimitExceeded(
            f"{field} has {exc.reason}: max_tensor_elements. Send a smaller tensor, or raise "
            "the server's --max-tensor-elements",
            limit="max_tensor_elements",
        )
    what = "dtype" if "dtype" in exc.reason else "data"
    if "negative dimension" in exc.reason:
        what = "shape"
    return InvalidArgument(f"{field}.{what}", exc.reason)


def decode_tensor(tensor: tensor_pb2.Tensor, field: str, max_elements: int) -> np.ndarray:
    """One Tensor as a read-only array; errors name ``field`` (e.g. ``inputs["x"]``)."""
    try:
        return tensor_codec.from_tensor(tensor, max_elements=max_elements)
    except tensor_codec.TensorDecodeError as exc:
        raise _decode_error(exc, field) from None


def decode_tensors(
    tensors: Mapping[str, tensor_pb2.Tensor], prefix: str, max_elements: int
) -> dict[str, np.ndarray]:
    """A protobuf map of Tensors, decoded; errors name e.g. ``inputs["x"].data``. The field
    name is built only for an error: this runs for every request."""
    from_tensor = tensor_codec.from_tensor
    decoded = {}
    # By key: a protobuf map's items() is a Python generator (collections.abc's ItemsView).
    for name in tensors:
        try:
            decoded[name] = from_tensor(tensors[name], max_elements=max_elements)
        except tensor_codec.TensorDecodeError as exc:
            raise _decode_error(exc, _input_field(prefix, name)) from None
    return decoded


def encode_tensor(array: np.ndarray) -> tensor_pb2.Tensor:
    return tensor_codec.to_tensor(array)


def encode_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, tensor_pb2.Tensor]:
    return {name: tensor_codec.to_tensor(a) for name, a in arrays.items()}


def _attr(node: str, key: str, value: graph_pb2.AttrValue, max_elements: int) -> Any:
    kind = value.WhichOneof("value")
    field = f'graph.nodes["{node}"].attrs.{key}'
    if kind == "i":
        return int(value.i)
    if kind == "f":
        return float(value.f)
    if kind == "ints":
        return tuple(int(v) for v in value.ints.values)
    if kind == "floats":
        return tuple(float(v) for v in value.floats.values)
    if kind == "s":
        return value.s
    if kind == "tensor":
        return decode_tensor(value.tensor, field, max_elements)
    raise InvalidArgument(field, "no value set", reason=INVALID_GRAPH)


def graph_from_proto(
    pb: graph_pb2.Graph,
    *,
    max_nodes: int,
    max_elements: int,
    cancel: Cancel = None,
) -> GraphDef:
    """The GraphDef of a Graph message (unvalidated: Program.build checks it). Raises the core's
    Cancelled when ``cancel`` (asked every CANCEL_EVERY_NODES nodes) says so."""
    if len(pb.nodes) > max_nodes:
        raise LimitExceeded(
            f"the graph has {len(pb.nodes)} nodes, more than max_graph_nodes={max_nodes}; "
            "split the computation into smaller graphs or raise --max-graph-nodes",
            limit="max_graph_nodes",
        )
    inputs = []
    for i, spec in enumerate(pb.inputs):
        try:
            dtype = tensor_codec.dtype_name(spec.dtype)
        except ValueError as exc:
            raise InvalidArgument(
                f'graph.inputs["{spec.name or i}"].dtype', str(exc), reason=INVALID_GRAPH
            ) from None
        shape = tuple(int(d) for d in spec.shape)
        if any(d < -1 for d in shape):
            raise InvalidArgument(
                f'graph.inputs["{spec.name or i}"].shape',
                f"dimensions must be >= 0, or -1 for any size; got {list(shape)}",
                reason=INVALID_GRAPH,
            )
        default = None
        if spec.HasField("default"):
            field = f'graph.inputs["{spec.name or i}"].default'
            default = decode_tensor(spec.default, field, max_elements)
        inputs.append(InputDef(spec.name, dtype, shape, default))
    nodes = []
    for i, n in enumerate(pb.nodes):
        check_cancel(cancel, i)
        if len(n.source) > MAX_SOURCE_CHARS:
            raise InvalidArgument(
                f'graph.nodes["{n.name or i}"].source',
                f"is {len(n.source)} characters, more than {MAX_SOURCE_CHARS}: it says where the "
                "node was made (a call site), and goes into every error about the node",
                reason=INVALID_GRAPH,
            )
        attrs = {k: _attr(n.name, k, v, max_elements) for k, v in sorted(n.attrs.items())}
        nodes.append(NodeDef(n.name, n.op, tuple(n.inputs), attrs, n.source))
    return GraphDef(tuple(inputs), tuple(nodes), tuple(pb.outputs))


def graph_from_onnx(model: bytes) -> graph_pb2.Graph:
    """The Graph message of a serialized ONNX model (the onnx_model graph source), by the
    converter the SDK uses; what it cannot convert is INVALID_ARGUMENT naming the ONNX node."""
    try:
        return to_graph(model)
    except OnnxImportError as exc:
        raise InvalidArgument(exc.field, str(exc), reason=INVALID_GRAPH) from None


def graph_to_proto(program: Program) -> graph_pb2.Graph:
    """A Program as a Graph message (a derivative program, for DerivativeProgram): what
    `graph_from_proto` reads back into the same Program."""
    message = graph_pb2.Graph(outputs=program.outputs, opset=OPSET)
    for spec in program.inputs:
        message.inputs.add(
            name=spec.name, dtype=tensor_codec.dtype_from_name(spec.dtype), shape=spec.shape
        )
    for node in program.nodes:
        added = message.nodes.add(
            name=node.name, op=node.op, inputs=node.inputs, source=node.source
        )
        for key, value in node.attrs.items():
            added.attrs[key].CopyFrom(attr_to_proto(value))
    return message
