"""The SDK's hand-written Evaluate wire format (`gradserve_client._wire`) agrees with protobuf's."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from gradserve_client import _wire
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import graph_pb2, tensor_codec

ARRAYS = {
    "scalar": np.asarray(1.5),
    "empty": np.zeros((0, 3), np.float32),
    "empty1": np.zeros(0, np.int32),
    "ints": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
    "i32": np.arange(5, dtype=np.int32),
    "bools": np.array([True, False, True]),
    "f32": np.linspace(-1, 1, 7, dtype=np.float32),
    "strided": np.arange(20.0).reshape(4, 5)[:, ::2],
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "big_endian": np.arange(4, dtype=">f8"),
    "ünï": np.ones(2),
}


def a_graph() -> graph_pb2.Graph:
    graph = graph_pb2.Graph(opset=1)
    graph.outputs.append("y")
    return graph


@pytest.mark.parametrize("source", ["graph", "graph_id", "none"])
@pytest.mark.parametrize("outputs", [(), ("a", "ü")])
def test_request_is_the_protobuf_message(source: str, outputs: tuple[str, ...]) -> None:
    request = _wire.EvaluateRequest(dict(ARRAYS), outputs)
    expected = pb.EvaluateRequest(inputs=tensor_codec.to_tensors(ARRAYS), outputs=outputs)
    if source == "graph":
        request.graph.CopyFrom(a_graph())
        expected.graph.CopyFrom(a_graph())
    elif source == "graph_id":
        request.graph_id = "abc"
        expected.graph_id = "abc"
    assert request.WhichOneof("graph_source") == expected.WhichOneof("graph_source")
    assert request.to_message() == expected
    one = {"x": np.arange(3.0)}
    single = _wire.EvaluateRequest(one, outputs)
    single.graph_id = "abc"
    message = pb.EvaluateRequest(graph_id="abc", inputs=tensor_codec.to_tensors(one))
    message.outputs.extend(outputs)
    assert single.SerializeToString() == message.SerializeToString()


def test_request_graph_source_is_a_oneof() -> None:
    request = _wire.EvaluateRequest({"x": np.ones(2)})
    request.graph_id = "abc"
    request.graph.CopyFrom(a_graph())  # the resend after NOT_FOUND
    assert request.WhichOneof("graph_source") == "graph" and request.graph_id == ""
    assert request.to_message().graph == a_graph()
    request.graph_id = "def"
    assert request.to_message().WhichOneof("graph_source") == "graph_id"


def response_bytes(graph_id: str, outputs: dict[str, np.ndarray]) -> bytes:
    message = pb.EvaluateResponse(graph_id=graph_id, outputs=tensor_codec.to_tensors(outputs))
    return message.SerializeToString()


def decoded(result: object) -> dict[str, np.ndarray]:
    return {
        k: tensor_codec.from_tensor(t, field=k)
        for k, t in result.outputs.items()  # type: ignore[attr-defined]
    }


def test_response_reads_as_protobuf_does() -> None:
    data = response_bytes("g" * 64, ARRAYS)
    result = _wire.read_evaluate_response(data)
    assert isinstance(result, _wire.EvaluateResult) and result.graph_id == "g" * 64
    want = decoded(pb.EvaluateResponse.FromString(data))
    got = decoded(result)
    assert set(got) == set(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)
        assert not got[name].flags.writeable


def test_response_arrays_view_the_payload() -> None:
    data = response_bytes("", {"y": np.arange(100_000.0)})
    array = decoded(_wire.read_evaluate_response(data))["y"]
    assert np.shares_memory(array, np.frombuffer(data, np.uint8))


def test_response_unknown_fields_are_skipped() -> None:
    data = response_bytes("gid", {"y": np.arange(3.0)})
    extra = (
        b"\x18\x96\x01"  # field 3, varint
        + b"\x21" + bytes(8)  # field 4, fixed64
        + b"\x2a\x03abc"  # field 5, bytes
        + b"\x35" + bytes(4)  # field 6, fixed32
        + b"\x08\x07"  # field 1 with a varint: not a string, unknown
    )  # fmt: skip
    result = _wire.read_evaluate_response(extra + data + extra)
    assert isinstance(result, _wire.EvaluateResult) and result.graph_id == "gid"
    np.testing.assert_array_equal(decoded(result)["y"], np.arange(3.0))


def test_response_repeated_fields_as_protobuf() -> None:
    first = response_bytes("a", {"y": np.zeros(2)})
    second = response_bytes("b", {"y": np.ones(2), "z": np.arange(2)})
    want = pb.EvaluateResponse.FromString(first + second)
    result = _wire.read_evaluate_response(first + second)
    assert result.graph_id == want.graph_id == "b"
    got = decoded(result)
    for name, array in decoded(want).items():
        np.testing.assert_array_equal(got[name], array)


@pytest.mark.parametrize(
    "data",
    [
        b"\x12\x05\x0a\x01y\x12\x00\x12",  # truncated map entry header
        b"\x0a\x05ab",  # truncated graph_id
        b"\x0a\x02\xff\xfe",  # graph_id not UTF-8
        b"\x12\x03\x0a\x01\xff",  # map key not UTF-8
        b"\x12\x80",  # truncated varint
    ],
)
def test_malformed_response_is_refused_as_protobuf_refuses_it(data: bytes) -> None:
    with pytest.raises(DecodeError):
        pb.EvaluateResponse.FromString(data)
    with pytest.raises(DecodeError):
        _wire.read_evaluate_response(data)


def test_what_the_reader_leaves_to_protobuf() -> None:
    # a map entry whose value is given twice: protobuf merges the two Tensors
    tensor = tensor_codec.to_tensor(np.arange(2.0)).SerializeToString()
    entry = b"\x0a\x01y" + (b"\x12" + bytes([len(tensor)]) + tensor) * 2
    data = b"\x12" + bytes([len(entry)]) + entry
    result = _wire.read_evaluate_response(data)
    assert isinstance(result, pb.EvaluateResponse)
    assert result == pb.EvaluateResponse.FromString(data)
    # an (empty) group, which protobuf keeps as an unknown field
    group = b"\x1b\x1c" + response_bytes("gid", {"y": np.arange(2.0)})
    result = _wire.read_evaluate_response(group)
    assert isinstance(result, pb.EvaluateResponse) and result.graph_id == "gid"
    np.testing.assert_array_equal(decoded(result)["y"], np.arange(2.0))


def test_bad_tensor_is_an_error_not_a_wrong_result() -> None:
    bad = pb.EvaluateResponse()
    bad.outputs["y"].dtype = tensor_codec.tensor_pb2.DTYPE_FLOAT64
    bad.outputs["y"].shape.append(3)
    bad.outputs["y"].data = bytes(16)  # 2 values, shape says 3
    with pytest.raises(tensor_codec.TensorDecodeError):
        decoded(_wire.read_evaluate_response(bad.SerializeToString()))


def test_threshold() -> None:
    assert not _wire.is_large({"x": np.zeros(_wire.DIRECT_BYTES // 8 - 1)})
    assert _wire.is_large({"x": np.zeros(_wire.DIRECT_BYTES // 8)})
    assert _wire.is_large({"x": np.zeros(_wire.DIRECT_BYTES // 16), "y": np.zeros(8192, "i4")})
