"""Large Evaluate calls, written and read in the protobuf wire format by hand.

Under the upb protobuf runtime a bytes field is copied each time it is set or read: a tensor
sent through ``EvaluateRequest`` messages is copied about three times on the way out
(``tobytes``, setting ``Tensor.data``, serializing), and about three times on the way back
(parsing, reading ``Tensor.data``, ...). Here an Evaluate request whose inputs total at least
`DIRECT_BYTES` is serialized as chunks joined once (one copy of the values), and its response
is read in place (the arrays returned view the received bytes, read-only). Both are byte-for-
byte what protobuf writes and reads (``tests/unit/test_sdk_wire.py``).

Smaller requests go through the generated stub, which is faster for them. A response the
reader does not take (a field given twice where protobuf would merge, a group, a malformed
map entry) is parsed by protobuf instead, which decodes it or refuses it as before, so the
hand-written reader never gives a different result from protobuf's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .proto import gradient_service_pb2 as pb
from .proto import graph_pb2, tensor_codec
from .proto.tensor_codec import WireFormatError, read_varint, skip_field, varint

__all__ = [
    "DIRECT_BYTES",
    "EVALUATE",
    "EvaluateRequest",
    "EvaluateResult",
    "read_evaluate_response",
    "write_evaluate_request",
]

#: The full name of the Evaluate method.
EVALUATE = "/gradserve.v1.Gradient/Evaluate"
#: Evaluate calls whose inputs total at least this many bytes go through the wire path.
DIRECT_BYTES = 64 * 1024


class _GraphField:
    """``request.graph`` of an `EvaluateRequest`: ``CopyFrom`` selects the full graph as the
    graph source (as on the message, where it clears ``graph_id``)."""

    __slots__ = ("_request",)

    def __init__(self, request: EvaluateRequest) -> None:
        self._request = request

    def CopyFrom(self, graph: graph_pb2.Graph) -> None:
        self._request.source = graph


class EvaluateRequest:
    """An EvaluateRequest to serialize by hand: the graph source (a ``graph_pb2.Graph`` or a
    graph_id), the inputs as arrays (not copied until serialized) and the outputs asked for.

    ``graph.CopyFrom(proto)`` and ``graph_id = ...`` set the graph source as on the message,
    so `GraphIds` attaches and resends graphs to it as to an ``EvaluateRequest`` message;
    ``DESCRIPTOR`` and ``WhichOneof`` are the message's, for client interceptors."""

    __slots__ = ("inputs", "outputs", "source")
    DESCRIPTOR = pb.EvaluateRequest.DESCRIPTOR

    def __init__(self, inputs: dict[str, Any], outputs: Sequence[str] = ()) -> None:
        self.source: graph_pb2.Graph | str | None = None
        self.inputs = inputs
        self.outputs = tuple(outputs)

    @property
    def graph(self) -> _GraphField:
        return _GraphField(self)

    @property
    def graph_id(self) -> str:
        return self.source if isinstance(self.source, str) else ""

    @graph_id.setter
    def graph_id(self, value: str) -> None:
        self.source = value

    def WhichOneof(self, name: str) -> str | None:
        if name != "graph_source" or self.source is None:
            return None
        return "graph_id" if isinstance(self.source, str) else "graph"

    def SerializeToString(self) -> bytes:
        return write_evaluate_request(self)

    def to_message(self) -> pb.EvaluateRequest:
        """The same request as a protobuf message."""
        return pb.EvaluateRequest.FromString(write_evaluate_request(self))


def _string_field(tag: bytes, value: str) -> bytes:
    data = value.encode("utf-8")
    return tag + varint(len(data)) + data


def write_evaluate_request(request: EvaluateRequest) -> bytes:
    """The serialized EvaluateRequest: the tensors' values copied once (the join)."""
    source = request.source
    chunks: list[Any] = []
    if isinstance(source, str):
        chunks.append(_string_field(b"\x12", source))
    elif source is not None:
        graph = source.SerializeToString()
        chunks.append(b"\x0a" + varint(len(graph)) + graph)
    chunks += tensor_codec.tensor_map_wire_chunks(3, request.inputs)
    chunks += [_string_field(b"\x22", name) for name in request.outputs]
    return b"".join(chunks)


class EvaluateResult:
    """An EvaluateResponse read in place: ``graph_id``, and ``outputs`` mapping names to
    ``tensor_codec.RawTensor`` (data viewing the response), which ``from_tensor`` decodes."""

    __slots__ = ("graph_id", "outputs")

    def __init__(self, graph_id: str, outputs: dict[str, tensor_codec.RawTensor]) -> None:
        self.graph_id = graph_id
        self.outputs = outputs


def read_evaluate_response(data: bytes) -> EvaluateResult | pb.EvaluateResponse:
    """The EvaluateResponse in ``data``: read in place, or by protobuf when the reader does not
    take it (protobuf's DecodeError then fails the call, as on the stub's path)."""
    try:
        return _read_evaluate_response(data)
    except WireFormatError:
        return pb.EvaluateResponse.FromString(data)


def _read_evaluate_response(data: bytes) -> EvaluateResult:
    view = memoryview(data)
    end = len(view)
    pos = 0
    graph_id = ""
    outputs: dict[str, tensor_codec.RawTensor] = {}
    while pos < end:
        tag, pos = read_varint(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if wire_type != 2 or field not in (1, 2):
            pos = skip_field(view, wire_type, pos, end)
            continue
        n, pos = read_varint(view, pos, end)
        stop = pos + n
        if stop > end:
            raise WireFormatError("truncated field")
        if field == 1:
            try:
                graph_id = bytes(view[pos:stop]).decode("utf-8")
            except UnicodeDecodeError:
                raise WireFormatError("graph_id is not UTF-8") from None
        else:
            name, tensor = tensor_codec.read_tensor_map_entry(view, pos, stop)
            outputs[name] = tensor
        pos = stop
    return EvaluateResult(graph_id, outputs)


def evaluate_method(channel: Any) -> Any:
    """Evaluate on ``channel`` (a ``grpc`` or ``grpc.aio`` channel) taking an `EvaluateRequest`
    and returning an `EvaluateResult` (or, rarely, an ``EvaluateResponse`` message)."""
    return channel.unary_unary(
        EVALUATE,
        request_serializer=write_evaluate_request,
        response_deserializer=read_evaluate_response,
        _registered_method=True,
    )


def is_large(feeds: dict[str, Any]) -> bool:
    """Whether an Evaluate call with these input arrays takes the wire path."""
    total = 0
    for array in feeds.values():
        total += array.nbytes
    return total >= DIRECT_BYTES
