"""The numpy <-> Tensor codec: round trips, zero-copy decoding, and every error."""

from __future__ import annotations

import numpy as np
import pytest
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_pb2
from gradserve_client.proto.tensor_codec import (
    DTYPE_NAMES,
    TensorDecodeError,
    TensorTooLargeError,
    WireFormatError,
    dtype_from_name,
    dtype_from_numpy,
    dtype_name,
    dtype_to_numpy,
    fill_tensor_map,
    from_tensor,
    from_tensors,
    read_span,
    read_tensor,
    read_tensor_map_entry,
    read_varint,
    skip_field,
    to_tensor,
    to_tensors,
    varint,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = ["float32", "float64", "int64", "int32", "bool"]
SHAPES = [(), (0,), (1,), (3,), (2, 3), (0, 4), (2, 0, 3), (2, 3, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_keeps_dtype_shape_and_values(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 10).astype(dtype)
    tensor = to_tensor(array)
    assert tensor.dtype == dtype_from_name(dtype)
    assert tuple(tensor.shape) == shape
    back = from_tensor(tensor)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)


@given(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, min_side=0)))
def test_round_trip_property(array: np.ndarray) -> None:
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)


def test_bytes_are_little_endian_row_major() -> None:
    tensor = to_tensor(np.array([[1, 2], [3, 4]], dtype=np.int32))
    assert tensor.data == b"".join(i.to_bytes(4, "little") for i in (1, 2, 3, 4))


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i8", ">i4"])
def test_big_endian_input_is_converted(dtype: str) -> None:
    array = np.arange(6).reshape(2, 3).astype(dtype)
    tensor = to_tensor(array)
    assert tensor.data == array.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    np.testing.assert_array_equal(from_tensor(tensor), array)


def test_non_contiguous_input_is_sent_in_row_major_order() -> None:
    array = np.arange(12.0).reshape(3, 4)[::2, 1::2].T
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)


@pytest.mark.parametrize(
    ("value", "dtype", "shape"),
    [
        (1.5, "float64", ()),
        (3, "int64", ()),
        (True, "bool", ()),
        ([1, 2, 3], "int64", (3,)),
        ([[1, 2.5]], "float64", (1, 2)),
        ([], "float64", (0,)),
        (np.float32(2.0), "float32", ()),
        (np.int32(7), "int32", ()),
    ],
)
def test_python_values_get_the_default_dtypes(value, dtype: str, shape: tuple) -> None:
    tensor = to_tensor(value)
    assert dtype_name(tensor.dtype) == dtype
    assert from_tensor(tensor).shape == shape


def test_dtype_argument_casts_within_a_kind_or_up_to_float() -> None:
    assert from_tensor(to_tensor([1.0, 2.0], dtype="float32")).dtype == np.float32
    assert from_tensor(to_tensor([1, 2], dtype="float64")).dtype == np.float64
    with pytest.raises(TypeError, match="cannot cast float64 values to int64"):
        to_tensor([1.5], dtype="int64")
    with pytest.raises(TypeError, match="float16"):
        to_tensor([1.5], dtype="float16")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("abc", "strings"),
        (np.array([b"x"]), "byte strings"),
        ([1 + 2j], "complex numbers"),
        (np.zeros(2, np.float16), "float16"),
        (np.zeros(2, np.uint8), "uint8"),
        ([object()], "Python objects"),
        ([[1], [1, 2]], "cannot convert list"),
    ],
)
def test_unsupported_values_raise_type_error(value, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        to_tensor(value)


def _root_buffer(array: np.ndarray) -> object:
    """The object at the end of an array's chain of bases (the buffer it views)."""
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base.base


def test_decoding_is_zero_copy_and_read_only() -> None:
    tensor = to_tensor(np.arange(6.0).reshape(2, 3))
    data = tensor.data
    array = from_tensor(tensor)
    assert not array.flags.owndata
    assert not array.flags.writeable
    assert isinstance(_root_buffer(array), bytes)
    # Decoding a bytes object directly views it rather than copying it.
    view = from_tensor(tensor_pb2.Tensor(dtype=tensor.dtype, shape=tensor.shape, data=data))
    root = _root_buffer(view)
    assert isinstance(root, bytes)
    assert np.shares_memory(view, np.frombuffer(root, dtype=np.uint8))


def _raw(dtype: int, shape: list[int], nbytes: int) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=b"\x00" * nbytes)


def test_byte_count_mismatch_is_a_clear_error() -> None:
    with pytest.raises(TensorDecodeError) as info:
        from_tensor(_raw(tensor_pb2.DTYPE_FLOAT64, [2, 2], 24), field="x")
    assert str(info.value) == "tensor 'x': 24 bytes of data, but shape (2, 2) float64 needs 32"
    assert info.value.field == "x"
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, TensorTooLargeError)


def test_scalar_needs_exactly_one_element() -> None:
    with pytest.raises(TensorDecodeError, match="0 bytes of data, but shape \\(\\) int32 needs 4"):
        from_tensor(_raw(tensor_pb2.DTYPE_INT32, [], 0))


def test_unspecified_dtype_is_rejected() -> None:
    with pytest.raises(TensorDecodeError, match="dtype unspecified"):
        from_tensor(_raw(tensor_pb2.DTYPE_UNSPECIFIED, [1], 8), field="x")


def test_unknown_dtype_is_rejected() -> None:
    tensor = tensor_pb2.Tensor.FromString(b"\x08\x63")  # dtype = 99, from a newer client
    with pytest.raises(TensorDecodeError, match="dtype 99"):
        from_tensor(tensor)


def test_negative_dimension_is_rejected() -> None:
    with pytest.raises(TensorDecodeError, match="negative dimension"):
        from_tensor(_raw(tensor_pb2.DTYPE_FLOAT64, [-1, 2], 0))


def test_bool_bytes_must_be_zero_or_one() -> None:
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_BOOL, shape=[2], data=b"\x01\x02")
    with pytest.raises(TensorDecodeError, match="0 or 1"):
        from_tensor(tensor)


def test_too_many_elements_is_a_distinct_error() -> None:
    tensor = to_tensor(np.zeros((3, 4)))
    assert from_tensor(tensor, max_elements=12).shape == (3, 4)
    with pytest.raises(TensorTooLargeError, match=r"12 elements .* limit of 11") as info:
        from_tensor(tensor, max_elements=11, field="W")
    assert isinstance(info.value, TensorDecodeError)
    assert info.value.field == "W"


def test_dtype_helpers_agree() -> None:
    assert sorted(DTYPE_NAMES.values()) == sorted(DTYPES)
    for name in DTYPES:
        code = dtype_from_name(name)
        assert dtype_name(code) == name
        assert dtype_to_numpy(code) == np.dtype(name)
        assert dtype_from_numpy(name) == code
        assert dtype_from_numpy(np.dtype(name).newbyteorder(">")) == code
    with pytest.raises(ValueError, match="unsupported dtype 'float16'"):
        dtype_from_name("float16")
    with pytest.raises(ValueError):
        dtype_to_numpy(tensor_pb2.DTYPE_UNSPECIFIED)
    with pytest.raises(ValueError):
        dtype_name(tensor_pb2.DTYPE_UNSPECIFIED)


def test_map_helpers_name_the_key() -> None:
    tensors = to_tensors({"x": [1.0, 2.0], "n": 3}, dtypes={"x": "float32"})
    assert dtype_name(tensors["x"].dtype) == "float32"
    arrays = from_tensors(tensors)
    assert arrays["n"] == 3
    with pytest.raises(TypeError, match="'s': strings"):
        to_tensors({"s": "text"})
    with pytest.raises(TensorDecodeError, match="tensor 'bad'"):
        from_tensors({"bad": _raw(tensor_pb2.DTYPE_FLOAT32, [2], 4)})


def test_errors_without_a_field_and_their_reason() -> None:
    error = TensorDecodeError("", "bad shape")
    assert (str(error), error.field, error.reason) == ("tensor: bad shape", "", "bad shape")
    with pytest.raises(TensorDecodeError) as info:
        from_tensor(_raw(tensor_pb2.DTYPE_UNSPECIFIED, [1], 8))
    assert str(info.value).startswith("tensor: dtype unspecified is not one of float32")
    assert info.value.field == ""


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        (_raw(tensor_pb2.DTYPE_UNSPECIFIED, [1], 8), "dtype unspecified is not one of"),
        (_raw(tensor_pb2.DTYPE_FLOAT64, [-1, 2], 0), "shape (-1, 2) has a negative dimension"),
        (
            tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_BOOL, shape=[2], data=b"\x00\x02"),
            "bool data must be bytes 0 or 1",
        ),
    ],
    ids=["dtype", "negative", "bool"],
)
def test_every_decode_error_names_its_field(tensor: tensor_pb2.Tensor, reason: str) -> None:
    with pytest.raises(TensorDecodeError) as info:
        from_tensor(tensor, field="x")
    assert info.value.field == "x"
    assert info.value.reason.startswith(reason)
    assert str(info.value) == f"tensor 'x': {info.value.reason}"


def test_unsupported_wire_dtypes_name_the_supported_ones() -> None:
    supported = "supported: float32, float64, int64, int32, bool"
    for helper in (dtype_name, dtype_to_numpy):
        with pytest.raises(ValueError) as info:
            helper(7)
        assert str(info.value) == f"unsupported wire dtype 7; {supported}"


def test_unsupported_numpy_dtypes_say_how_to_convert() -> None:
    with pytest.raises(TypeError) as info:
        dtype_from_numpy(np.float16)
    assert str(info.value) == (
        "values of dtype float16 cannot be sent as a tensor; supported dtypes: "
        "float32, float64, int64, int32, bool (convert with .astype(...) first)"
    )
    # The target dtype is checked before the cast (numpy refuses to cast floats to datetimes).
    with pytest.raises(TypeError, match=r"^datetimes cannot be sent as a tensor"):
        to_tensor([1.0], dtype="datetime64[s]")


def test_map_decoding_applies_the_element_limit() -> None:
    tensors = to_tensors({"a": np.zeros(3), "b": np.zeros(4)})
    assert set(from_tensors(tensors, max_elements=4)) == {"a", "b"}
    with pytest.raises(TensorTooLargeError, match=r"tensor 'b': 4 elements .* limit of 3"):
        from_tensors(tensors, max_elements=3)


def test_fill_tensor_map_encodes_like_to_tensors() -> None:
    values = {
        "scalar": 2.5,
        "ints": [[1, 2], [3, 4]],
        "strided_big_endian": np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2],
        "empty": np.zeros((0, 2), np.float32),
    }
    message = pb.EvaluateRequest()
    fill_tensor_map(message.inputs, values)
    assert dict(message.inputs) == to_tensors(values)
    for name, value in values.items():
        np.testing.assert_array_equal(from_tensor(message.inputs[name]), np.asarray(value))


# ---- the hand-written reader of large requests (read_tensor & co.) ----------------------------


def _read(data: bytes) -> tuple[int, tuple[int, ...], bytes]:
    raw = read_tensor(memoryview(data), 0, len(data))
    return raw.dtype, raw.shape, bytes(raw.data)


def _protobuf(data: bytes) -> tuple[int, tuple[int, ...], bytes]:
    message = tensor_pb2.Tensor.FromString(data)
    return message.dtype, tuple(message.shape), message.data


VALUES = np.arange(3.0).tobytes()
UNKNOWN = {  # one unknown field of each wire type: varint, fixed64, fixed32, length-delimited
    "varint": b"\x20" + varint(300),
    "fixed64": b"\x29" + bytes(range(8)),
    "fixed32": b"\x35" + bytes(range(4)),
    "length": b"\x3a\x03abc",
    "data-as-varint": b"\x18\x05",  # field 3 with the wrong wire type is unknown too
}


@pytest.mark.parametrize("unknown", UNKNOWN.values(), ids=UNKNOWN.keys())
@pytest.mark.parametrize("where", ["first", "between", "last"])
def test_the_reader_skips_unknown_fields_as_protobuf_does(unknown: bytes, where: str) -> None:
    head, data = b"\x08\x02\x12\x01\x03", b"\x1a\x18" + VALUES
    layout = {"first": unknown + head + data, "between": head + unknown + data}
    serialized = layout.get(where, head + data + unknown)
    assert _read(serialized) == _protobuf(serialized) == (2, (3,), VALUES)


@pytest.mark.parametrize("dtype", [0, 1, 99, 2**31 - 1, -1, -(2**31), 2**32 + 5])
def test_the_reader_reads_dtypes_as_int32_enums(dtype: int) -> None:
    serialized = b"\x08" + varint(dtype)
    assert _read(serialized) == _protobuf(serialized)


def test_the_reader_defaults_like_protobuf() -> None:
    assert _read(b"") == _protobuf(b"") == (0, (), b"")
    entry = b"\x0a\x01x"  # a map entry with a key and no value
    key, raw = read_tensor_map_entry(memoryview(entry), 0, len(entry))
    assert (key, raw.dtype, raw.shape, bytes(raw.data)) == ("x", 0, (), b"")
    assert pb.EvaluateRequest.FromString(b"\x1a\x03" + entry).inputs["x"] == tensor_pb2.Tensor()
    key, _ = read_tensor_map_entry(memoryview(b"\x12\x00"), 0, 2)  # and no key
    assert key == ""


def test_a_span_may_end_exactly_at_the_end() -> None:
    assert read_span(memoryview(b"\x02ab"), 0, 3) == (1, 3)
    assert skip_field(memoryview(b"\x02ab"), 2, 0, 3) == 3


@pytest.mark.parametrize(
    ("read", "data", "message"),
    [
        (read_varint, b"\x80", "truncated or overlong varint"),
        (read_varint, b"\xff" * 10 + b"\x01", "truncated or overlong varint"),
        (read_span, b"\x03ab", "truncated field"),
        (lambda view, pos, end: skip_field(view, 3, pos, end), b"", "wire type 3"),
        (lambda view, pos, end: skip_field(view, 1, pos, end), bytes(7), "truncated field"),
        (lambda view, pos, end: skip_field(view, 5, pos, end), bytes(3), "truncated field"),
        (lambda view, pos, end: skip_field(view, 2, pos, end), b"\x02a", "truncated field"),
        (read_tensor, b"\x12\x05\x01", "truncated shape"),
        (read_tensor, b"\x1a\x05ab", "truncated data"),
        (read_tensor_map_entry, b"\x0a\x05ab", "truncated map entry"),
        (read_tensor_map_entry, b"\x0a\x01\xff", "map key is not UTF-8"),
        (read_tensor_map_entry, b"\x12\x00\x12\x00", "map entry value given twice"),
        (read_tensor_map_entry, b"\x08\x01", "unknown field in a map entry"),
        (read_tensor_map_entry, b"\x1a\x00", "unknown field in a map entry"),
    ],
)
def test_what_the_reader_refuses_it_says_why(read, data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError) as info:
        read(memoryview(data), 0, len(data))
    assert str(info.value) == message
