"""Evaluate's large messages and PutDataset's chunks, read and written in the protobuf wire
format by hand.

Under the upb runtime a round trip of one tensor through protobuf messages copies its bytes
about five times on the server: parse, reading ``Tensor.data``, ``tobytes``, building the
response's Tensor and map, and serializing. Here a large EvaluateRequest is read in place (its
tensors are memoryviews of the received bytes, decoded into arrays that view them) and an
EvaluateResponse is written as chunks joined once, so the values are copied once per direction.

Small messages (below ``DIRECT_PARSE_BYTES``, ``DIRECT_ENCODE_BYTES``) go through protobuf,
which is faster for them, and so does anything the reader does not take (a field given twice
where protobuf would merge, a group, a truncated or malformed payload): protobuf then parses
it, or refuses it as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import graph_pb2, tensor_codec
from gradserve_client.proto.tensor_codec import WireFormatError, read_span, read_varint, skip_field

# Requests at least this large are read by hand (their tensors viewed, not copied), and
# responses whose values are at least this large written by hand; below, protobuf is faster.
DIRECT_PARSE_BYTES = 64 * 1024
DIRECT_ENCODE_BYTES = 64 * 1024


class EvaluateRequestView:
    """An EvaluateRequest read in place: what the servicer reads of the message, with
    ``inputs`` mapping names to ``tensor_codec.RawTensor`` (data viewing the payload)."""

    __slots__ = ("_source", "graph", "graph_id", "inputs", "outputs")

    def __init__(self) -> None:
        self._source: str | None = None
        self.graph = graph_pb2.Graph()
        self.graph_id = ""
        self.inputs: dict[str, tensor_codec.RawTensor] = {}
        self.outputs: list[str] = []

    def WhichOneof(self, name: str) -> str | None:
        return self._source if name == "graph_source" else None


def _text(view: memoryview, pos: int, end: int) -> str:
    try:
        return bytes(view[pos:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireFormatError("a string field is not UTF-8") from None


def read_evaluate_request(data: bytes) -> EvaluateRequestView:
    """The EvaluateRequest in ``data``; raises WireFormatError for what it does not take."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    request = EvaluateRequestView()
    graph_seen = False
    while pos < end:
        tag, pos = read_varint(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if field == 8:  # onnx_model: a graph source protobuf parses (handlers.py)
            raise WireFormatError("onnx_model is read by protobuf")
        if wire_type != 2 or field not in (1, 2, 3, 4):
            pos = skip_field(view, wire_type, pos, end)
            continue
        n, pos = read_varint(view, pos, end)
        stop = pos + n
        if stop > end:
            raise WireFormatError("truncated field")
        if field == 1:
            if graph_seen:  # protobuf merges repeated message fields
                raise WireFormatError("graph given twice")
            graph_seen = True
            try:
                request.graph = graph_pb2.Graph.FromString(view[pos:stop])
            except Exception as exc:
                raise WireFormatError(f"graph: {exc}") from None
            request._source = "graph"
        elif field == 2:
            request.graph_id = _text(view, pos, stop)
            request._source = "graph_id"
        elif field == 3:
            name, tensor = tensor_codec.read_tensor_map_entry(view, pos, stop)
            request.inputs[name] = tensor
        else:
            request.outputs.append(_text(view, pos, stop))
        pos = stop
    if request._source != "graph":
        request.graph = graph_pb2.Graph()
    return request


def in_place_deserializer(
    reader: Callable[[bytes], Any], fallback: Callable[[bytes], Any]
) -> Callable[[bytes], Any]:
    """A request deserializer: payloads of `DIRECT_PARSE_BYTES` or more read in place by
    ``reader``, others (and what the reader does not take) by ``fallback`` (protobuf's)."""

    def deserialize(data: bytes) -> Any:
        if len(data) >= DIRECT_PARSE_BYTES:
            try:
                return reader(data)
            except WireFormatError:
                pass
        return fallback(data)

    return deserialize


def evaluate_request_deserializer(fallback: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Evaluate's request deserializer: large payloads read in place, others by ``fallback``."""
    return in_place_deserializer(read_evaluate_request, fallback)


class DatasetChunkView:
    """A DatasetChunk read in place: ``name``, ``dtype``, ``shape`` and ``data``, a memoryview
    of the received bytes (which `datasets.assemble` copies once, into the array)."""

    __slots__ = ("data", "dtype", "name", "shape")

    def __init__(self, name: str, dtype: int, shape: list[int], data: Any) -> None:
        self.name, self.dtype, self.shape, self.data = name, dtype, shape, data


def read_dataset_chunk(data: bytes) -> DatasetChunkView:
    """The DatasetChunk in ``data``; raises WireFormatError for what it does not take (a field
    given twice, an unexpected wire type, a dtype beyond int32's positive range)."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    name, dtype, shape, payload = "", 0, [], b""
    seen: set[int] = set()
    while pos < end:
        tag, pos = read_varint(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if field not in (1, 2, 3, 4):
            pos = skip_field(view, wire_type, pos, end)
            continue
        if field in seen or wire_type != (0 if field == 2 else 2):
            raise WireFormatError(f"field {field} given twice or with another wire type")
        seen.add(field)
        if field == 2:
            dtype, pos = read_varint(view, pos, end)
            if dtype >= 1 << 31:
                raise WireFormatError("a negative or large dtype is read by protobuf")
            continue
        pos, stop = read_span(view, pos, end)
        if field == 1:
            name = _text(view, pos, stop)
        elif field == 3:
            while pos < stop:
                d, pos = read_varint(view, pos, stop)
                shape.append(d if d < 1 << 63 else d - (1 << 64))
        else:
            payload = view[pos:stop]
        pos = stop
    return DatasetChunkView(name, dtype, shape, payload)


def dataset_chunk_deserializer(fallback: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """PutDataset's request deserializer: large chunks read in place, others by ``fallback``."""
    return in_place_deserializer(read_dataset_chunk, fallback)


class EncodedEvaluateResponse:
    """An EvaluateResponse whose ``SerializeToString`` writes the wire format directly: the
    output values are copied once, into the serialized bytes."""

    __slots__ = ("graph_id", "outputs")

    def __init__(self, graph_id: str, outputs: Mapping[str, np.ndarray]) -> None:
        self.graph_id = graph_id
        self.outputs = outputs

    def SerializeToString(self) -> bytes:
        chunks: list[Any] = []
        if self.graph_id:
            gid = self.graph_id.encode("utf-8")
            chunks.append(b"\x0a" + tensor_codec.varint(len(gid)) + gid)
        chunks += tensor_codec.tensor_map_wire_chunks(2, self.outputs)
        return b"".join(chunks)

    def to_message(self) -> pb.EvaluateResponse:
        """The same response as a protobuf message."""
        return pb.EvaluateResponse.FromString(self.SerializeToString())
