"""The hand-written wire format of Evaluate's large messages agrees with protobuf's."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from gradserve.rpc import wire
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec, tensor_pb2
from gradserve_client.proto import training_pb2 as tpb
from gradserve_client.proto.tensor_codec import WireFormatError

ARRAYS = {
    "scalar": np.asarray(1.5),
    "empty": np.zeros((0, 3), np.float32),
    "ints": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
    "i32": np.arange(5, dtype=np.int32),
    "bools": np.array([True, False, True]),
    "strided": np.arange(20.0).reshape(4, 5)[:, ::2],
    "big_endian": np.arange(4, dtype=">f8"),
    "ünï": np.ones(2),
}


def test_encoded_response_parses_as_the_message() -> None:
    encoded = wire.EncodedEvaluateResponse("g" * 64, ARRAYS).SerializeToString()
    message = pb.EvaluateResponse.FromString(encoded)
    assert message.graph_id == "g" * 64
    assert set(message.outputs) == set(ARRAYS)
    for name, array in ARRAYS.items():
        back = tensor_codec.from_tensor(message.outputs[name])
        assert back.dtype == array.dtype.newbyteorder("<") and back.shape == array.shape
        np.testing.assert_array_equal(back, array)
    expected = pb.EvaluateResponse(graph_id="g" * 64, outputs=tensor_codec.to_tensors(ARRAYS))
    assert message == expected


@pytest.mark.parametrize("source", ["graph", "graph_id", "none"])
def test_read_request_agrees_with_protobuf(source: str) -> None:
    request = pb.EvaluateRequest(inputs=tensor_codec.to_tensors(ARRAYS), outputs=["a", "b"])
    if source == "graph":
        request.graph.outputs.append("x")
        request.graph.opset = 1
    elif source == "graph_id":
        request.graph_id = "abc"
    data = request.SerializeToString()
    view = wire.read_evaluate_request(data)
    assert view.WhichOneof("graph_source") == request.WhichOneof("graph_source")
    assert view.graph == request.graph and view.graph_id == request.graph_id
    assert view.outputs == list(request.outputs)
    assert set(view.inputs) == set(request.inputs)
    for name, tensor in request.inputs.items():
        got = tensor_codec.from_tensor(view.inputs[name])
        np.testing.assert_array_equal(got, tensor_codec.from_tensor(tensor))
        assert got.dtype == tensor_codec.from_tensor(tensor).dtype


def test_read_request_views_the_payload() -> None:
    big = np.arange(100_000.0)
    data = pb.EvaluateRequest(inputs={"x": tensor_codec.to_tensor(big)}).SerializeToString()
    array = tensor_codec.from_tensor(wire.read_evaluate_request(data).inputs["x"])
    assert np.shares_memory(array, np.frombuffer(data, np.uint8))
    assert not array.flags.writeable


def test_unknown_fields_and_unpacked_shapes_are_read() -> None:
    tensor = b"\x08\x02\x10\x02\x10\x01\x28\x07\x1a\x10" + np.ones(2).tobytes()
    entry = b"\x0a\x01x" + b"\x12" + bytes([len(tensor)]) + tensor
    data = b"\x1a" + bytes([len(entry)]) + entry + b"\x48\x05" + b"\x12\x02id"
    view = wire.read_evaluate_request(data)
    assert view.graph_id == "id"
    np.testing.assert_array_equal(tensor_codec.from_tensor(view.inputs["x"]), np.ones((2, 1)))
    assert pb.EvaluateRequest.FromString(data).inputs["x"].shape == [2, 1]


@pytest.mark.parametrize(
    ("data", "protobuf_says"),
    [
        (b"\x1a\x05\x0a", "Wire format was corrupt"),
        (b"\x12\x01\xff", "String field had bad UTF-8"),
        (b"\x0b", "Wire format was corrupt"),
        (b"\x1a\x80", "Wire format was corrupt"),
        (b"\x1a\x02\x28\x07", None),  # protobuf skips the unknown field: a valid request
    ],
    ids=["truncated", "not-utf8", "group", "truncated-varint", "unknown-in-map-entry"],
)
def test_what_the_reader_refuses_falls_back_to_protobuf(
    data: bytes, protobuf_says: str | None
) -> None:
    with pytest.raises(WireFormatError):
        wire.read_evaluate_request(data)
    deserialize = wire.evaluate_request_deserializer(pb.EvaluateRequest.FromString)
    if protobuf_says is None:  # small: protobuf's path directly
        result = deserialize(data)
        assert isinstance(result, pb.EvaluateRequest)
        assert result == pb.EvaluateRequest.FromString(data)
    else:
        with pytest.raises(DecodeError, match=protobuf_says):
            deserialize(data)


def test_large_malformed_payload_falls_back_to_protobuf_which_refuses_it() -> None:
    deserialize = wire.evaluate_request_deserializer(pb.EvaluateRequest.FromString)
    data = b"\x1a" + tensor_codec.varint(wire.DIRECT_PARSE_BYTES * 2) + b"\x00" * 100_000
    with pytest.raises(DecodeError):
        deserialize(data)


# Every varint length from 1 to 10 bytes, at both ends of each, and negative int64s.
VARINTS = sorted(
    {0, 1, 127, 128, 300, 16_383, 16_384, 2**63 - 1, -1, -2, -(2**63)}
    | {2 ** (7 * k) + d for k in range(1, 10) for d in (-1, 0, 1) if 2 ** (7 * k) + d < 2**63}
)


@pytest.mark.parametrize("value", VARINTS)
def test_varints_match_protobuf(value: int) -> None:
    # Tensor.shape is a packed repeated int64: field 2, the payload length, the varint.
    packed = tensor_pb2.Tensor(shape=[value]).SerializeToString()
    encoded = tensor_codec.varint(value)
    assert packed == b"\x12" + bytes([len(encoded)]) + encoded
    assert len(encoded) <= 10
    unsigned, end = tensor_codec.read_varint(encoded + b"\x00", 0, len(encoded) + 1)
    assert (tensor_codec._int64(unsigned), end) == (value, len(encoded))


@pytest.mark.parametrize(
    "shape", [(0,), (1,), (127,), (128,), (300, 2), (3, 2**14), (2**40, 0), (0, 2**50)]
)
def test_tensor_chunks_match_protobuf(shape: tuple[int, ...]) -> None:
    value = np.zeros(shape)  # up to 393,216 bytes of data: 3-byte length varints
    message = pb.EvaluateRequest(inputs={"x": tensor_codec.to_tensor(value)})
    chunks = tensor_codec.tensor_map_wire_chunks(3, {"x": value})
    assert b"".join(bytes(c) for c in chunks) == message.SerializeToString()


def _chunk_fields(chunk) -> tuple:
    return chunk.name, chunk.dtype, tuple(chunk.shape), bytes(chunk.data)


@pytest.mark.parametrize("first", [True, False])
def test_read_dataset_chunk_agrees_with_protobuf(first: bool) -> None:
    data = np.random.default_rng(0).normal(size=(wire.DIRECT_PARSE_BYTES // 8 + 3,)).tobytes()
    fields = dict(dtype=tensor_pb2.DTYPE_FLOAT64, shape=[-1 + 2**40, 3]) if first else {}
    message = tpb.DatasetChunk(name="Xé", data=data, **fields)
    serialized = message.SerializeToString() + b"\x28\x07"  # and an unknown field, skipped
    chunk = wire.read_dataset_chunk(serialized)
    assert _chunk_fields(chunk) == _chunk_fields(tpb.DatasetChunk.FromString(serialized))
    assert isinstance(chunk.data, memoryview)  # a view of the payload, not a copy
    deserialize = wire.dataset_chunk_deserializer(tpb.DatasetChunk.FromString)
    assert isinstance(deserialize(serialized), wire.DatasetChunkView)


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x01X\x0a\x01Y",
        b"\x10\x01\x10\x02",
        b"\x22\x05abc",
        b"\x0a\x02\xff\xfe",
        b"\x12\x01X",
        b"\x10" + tensor_codec.varint(-1),
    ],
    ids=["name-twice", "dtype-twice", "truncated", "not-utf8", "wire-type", "negative-dtype"],
)
def test_what_the_chunk_reader_refuses_protobuf_reads_or_refuses(data: bytes) -> None:
    with pytest.raises(WireFormatError):
        wire.read_dataset_chunk(data)
    large = (
        data
        + b"\x2a"
        + tensor_codec.varint(wire.DIRECT_PARSE_BYTES)
        + bytes(wire.DIRECT_PARSE_BYTES)
    )  # padded past the threshold with an unknown field
    deserialize = wire.dataset_chunk_deserializer(tpb.DatasetChunk.FromString)
    try:
        want = tpb.DatasetChunk.FromString(large)
    except DecodeError:
        with pytest.raises(DecodeError):
            deserialize(large)
    else:
        result = deserialize(large)
        assert isinstance(result, tpb.DatasetChunk) and result == want
