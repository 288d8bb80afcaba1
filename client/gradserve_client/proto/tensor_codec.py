"""The one numpy <-> Tensor codec, shared by the server and the SDK.

A Tensor carries its values as little-endian, row-major raw bytes (KServe's raw contents), so
encoding is one ``tobytes`` and decoding is a zero-copy ``np.frombuffer`` view. Validation
happens here, at the boundary: a decoded array always has exactly the shape and dtype its
message claims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from . import tensor_pb2

__all__ = [
    "DTYPE_NAMES",
    "TensorDecodeError",
    "TensorTooLargeError",
    "dtype_from_name",
    "dtype_from_numpy",
    "dtype_name",
    "dtype_to_numpy",
    "fill_tensor",
    "fill_tensor_map",
    "from_tensor",
    "from_tensors",
    "to_tensor",
    "to_tensors",
]

DType = tensor_pb2.DType

# The wire dtypes, their names, and the numpy dtypes of their bytes (explicitly little-endian).
_TABLE: tuple[tuple[DType, str, np.dtype[Any]], ...] = (
    (tensor_pb2.DTYPE_FLOAT32, "float32", np.dtype("<f4")),
    (tensor_pb2.DTYPE_FLOAT64, "float64", np.dtype("<f8")),
    (tensor_pb2.DTYPE_INT64, "int64", np.dtype("<i8")),
    (tensor_pb2.DTYPE_INT32, "int32", np.dtype("<i4")),
    (tensor_pb2.DTYPE_BOOL, "bool", np.dtype("?")),
)

#: The name of every supported wire dtype, e.g. ``DTYPE_NAMES[DTYPE_FLOAT64] == "float64"``.
DTYPE_NAMES: dict[DType, str] = {code: name for code, name, _ in _TABLE}
_BY_NAME: dict[str, DType] = {name: code for code, name, _ in _TABLE}
_TO_NUMPY: dict[DType, np.dtype[Any]] = {code: np_dtype for code, _, np_dtype in _TABLE}
# numpy dtype -> wire dtype, for the native (little-endian) dtypes: a dict lookup instead of
# ``dtype.name``, which numpy computes in Python (about 1 µs a call).
_BY_NUMPY: dict[np.dtype[Any], DType] = {np_dtype: code for code, _, np_dtype in _TABLE}
_SUPPORTED = ", ".join(DTYPE_NAMES.values())
_UNSUPPORTED_KINDS = {
    "U": "strings",
    "S": "byte strings",
    "O": "Python objects",
    "c": "complex numbers",
    "V": "structured (void) values",
    "M": "datetimes",
    "m": "timedeltas",
}


class TensorDecodeError(ValueError):
    """A Tensor message that does not describe a valid array (INVALID_ARGUMENT).

    ``field`` names the tensor (an input name, say, or "" when unknown) and ``reason`` says
    what is wrong, so that the server can report a field violation.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"tensor {field!r}: {reason}" if field else f"tensor: {reason}")


class TensorTooLargeError(TensorDecodeError):
    """A Tensor with more elements than the configured limit (RESOURCE_EXHAUSTED)."""


def dtype_name(dtype: DType | int) -> str:
    """The name ("float32", "float64", "int64", "int32" or "bool") of a wire dtype."""
    try:
        return DTYPE_NAMES[dtype]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unsupported wire dtype {dtype!r}; supported: {_SUPPORTED}") from None


def dtype_from_name(name: str) -> DType:
    """The wire dtype of a name such as "float32"; raises ``ValueError`` for unknown names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unsupported dtype {name!r}; supported: {_SUPPORTED}") from None


def dtype_to_numpy(dtype: DType | int) -> np.dtype[Any]:
    """The (little-endian) numpy dtype of a wire dtype; raises ``ValueError`` if unsupported."""
    try:
        return _TO_NUMPY[dtype]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unsupported wire dtype {dtype!r}; supported: {_SUPPORTED}") from None


def dtype_from_numpy(dtype: npt.DTypeLike) -> DType:
    """The wire dtype of a numpy dtype (of either byte order); raises ``TypeError`` if none."""
    np_dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    code = _BY_NUMPY.get(np_dtype)
    if code is None:
        code = _BY_NAME.get(np_dtype.name)  # the other byte order
    if code is None:
        what = _UNSUPPORTED_KINDS.get(np_dtype.kind, f"values of dtype {np_dtype.name}")
        raise TypeError(
            f"{what} cannot be sent as a tensor; supported dtypes: {_SUPPORTED}"
            " (convert with .astype(...) first)"
        )
    return code


def to_tensor(
    value: npt.ArrayLike, *, dtype: npt.DTypeLike | str | None = None
) -> tensor_pb2.Tensor:
    """Encode an array, a Python scalar or nested lists as a Tensor.

    Python floats become float64, ints int64 and bools bool; numpy arrays keep their dtype if
    it is one of float32, float64, int64, int32 or bool. With ``dtype``, the value is cast to it
    first, but only within a kind or from int/bool to float (never float to int). Anything else
    (strings, objects, complex numbers, float16, ...) raises ``TypeError``.
    """
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise TypeError(f"cannot convert {type(value).__name__} to a tensor: {exc}") from exc
    if dtype is not None:
        target = np.dtype(dtype)
        dtype_from_numpy(target)
        if not np.can_cast(array.dtype, target, casting="same_kind"):
            raise TypeError(f"cannot cast {array.dtype.name} values to {target.name}")
        array = array.astype(target, copy=False)
    code, array = _little_endian(array)
    # tobytes is the one unavoidable copy (a protobuf bytes field needs a bytes object); it also
    # linearises a non-contiguous array in row-major order.
    return tensor_pb2.Tensor(dtype=code, shape=array.shape, data=array.tobytes(order="C"))


def _little_endian(
    array: np.ndarray[Any, np.dtype[Any]],
) -> tuple[DType, np.ndarray[Any, np.dtype[Any]]]:
    """(wire dtype, ``array`` in its little-endian dtype): a converting copy, in C order, only
    when the byte order differs; ``TypeError`` for a dtype with no wire dtype."""
    code = _BY_NUMPY.get(array.dtype)
    if code is None:
        code = dtype_from_numpy(array.dtype)
        array = array.astype(_TO_NUMPY[code], order="C")
    return code, array


def fill_tensor(tensor: tensor_pb2.Tensor, value: npt.ArrayLike) -> None:
    """Set the fields of an empty Tensor message in place (a map entry, say) to ``value``, as
    ``to_tensor`` encodes it: cheaper than building a Tensor and copying it into the map."""
    code, array = _little_endian(np.asarray(value))
    tensor.dtype = code
    if array.ndim:
        tensor.shape.extend(array.shape)
    tensor.data = array.tobytes(order="C")


def fill_tensor_map(tensors: Any, values: Mapping[str, npt.ArrayLike]) -> None:
    """``fill_tensor`` of each value into a protobuf ``map<string, Tensor>`` field."""
    for name, value in values.items():
        fill_tensor(tensors[name], value)


def from_tensor(
    tensor: tensor_pb2.Tensor | RawTensor, *, max_elements: int | None = None, field: str = ""
) -> np.ndarray[Any, np.dtype[Any]]:
    """Decode a Tensor into a read-only numpy array that views the message's bytes (no copy).

    Raises ``TensorDecodeError`` when the dtype is unspecified or unknown, a dimension is
    negative, or the byte count is not product(shape) * itemsize, and ``TensorTooLargeError``
    when the tensor has more than ``max_elements`` elements. ``field`` names the tensor in the
    error messages. ``tensor`` may also be a `RawTensor`, whose ``data`` (a memoryview of a
    received message) the array then views without a copy.
    """
    # Each field is read once: under the upb runtime every read of ``data`` copies it.
    code, shape, data = tensor.dtype, tuple(tensor.shape), tensor.data
    np_dtype = _TO_NUMPY.get(code)  # type: ignore[call-overload]
    if np_dtype is None:
        what = "unspecified" if code == tensor_pb2.DTYPE_UNSPECIFIED else code
        raise TensorDecodeError(field, f"dtype {what} is not one of {_SUPPORTED}")
    if shape and min(shape) < 0:
        raise TensorDecodeError(field, f"shape {shape} has a negative dimension")
    count = math.prod(shape)
    needed = count * np_dtype.itemsize
    if len(data) != needed:
        raise TensorDecodeError(
            field,
            f"{len(data)} bytes of data, but shape {shape} {DTYPE_NAMES[code]} "  # type: ignore[index]
            f"needs {needed}",
        )
    if max_elements is not None and count > max_elements:
        raise TensorTooLargeError(
            field, f"{count} elements in shape {shape}, more than the limit of {max_elements}"
        )
    # One constructor call over the bytes (no copy): a third of frombuffer + reshape's time,
    # which counts in every small request and response.
    array: np.ndarray[Any, np.dtype[Any]] = np.ndarray(shape, np_dtype, data)
    if code == tensor_pb2.DTYPE_BOOL and count and array.view(np.uint8).max() > 1:
        raise TensorDecodeError(field, "bool data must be bytes 0 or 1")
    return array


def to_tensors(
    values: Mapping[str, npt.ArrayLike], *, dtypes: Mapping[str, npt.DTypeLike] | None = None
) -> dict[str, tensor_pb2.Tensor]:
    """Encode a mapping of arrays with ``to_tensor``, optionally casting each to ``dtypes[name]``.

    A ``TypeError`` names the offending key.
    """
    out = {}
    for name, value in values.items():
        try:
            out[name] = to_tensor(value, dtype=(dtypes or {}).get(name))
        except TypeError as exc:
            raise TypeError(f"{name!r}: {exc}") from exc
    return out


def from_tensors(
    tensors: Mapping[str, tensor_pb2.Tensor], *, max_elements: int | None = None
) -> dict[str, np.ndarray[Any, np.dtype[Any]]]:
    """Decode a mapping (e.g. a protobuf map field) with ``from_tensor``; errors name the key."""
    return {
        name: from_tensor(t, max_elements=max_elements, field=name) for name, t in tensors.items()
    }


# ---- the Tensor wire format, written and read by hand ----------------------------------------
# Under the upb runtime a bytes field can only be set from a ``bytes`` object (a copy of the
# array), setting it copies again, putting the Tensor in a map copies again and serializing
# copies twice. Writing the protobuf encoding directly costs one copy of the values (the final
# ``b"".join``); reading it directly gives arrays that view the received bytes. Both produce or
# accept exactly what protobuf does (``tests/unit/test_tensor_codec.py`` checks both ways).

_LEN = 2  # wire type of length-delimited fields


def varint(value: int) -> bytes:
    """The base-128 varint of ``value`` (negative int64 values as their 10-byte two's
    complement, as protobuf writes them)."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _wire_array(value: npt.ArrayLike) -> tuple[int, np.ndarray[Any, np.dtype[Any]]]:
    """(wire dtype, C-contiguous little-endian array) of a value, as ``to_tensor`` encodes it."""
    code, array = _little_endian(np.asarray(value))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return code, array


def tensor_wire_chunks(value: npt.ArrayLike) -> tuple[list[Any], int]:
    """The serialized Tensor of ``value`` as chunks to join (the last one the array itself,
    not copied), and their total length in bytes."""
    code, array = _wire_array(value)
    head = b"\x08" + varint(code)
    if array.ndim:
        dims = b"".join([varint(d) for d in array.shape])
        head += b"\x12" + varint(len(dims)) + dims
    if not array.nbytes:
        return [head], len(head)
    head += b"\x1a" + varint(array.nbytes)
    return [head, array], len(head) + array.nbytes


def tensor_map_wire_chunks(field_number: int, values: Mapping[str, npt.ArrayLike]) -> list[Any]:
    """The serialized entries of a ``map<string, Tensor>`` field, as chunks to join: what
    ``SerializeToString`` gives for a message with only that field set to ``to_tensors``."""
    tag = varint(field_number << 3 | _LEN)
    chunks: list[Any] = []
    for name, value in values.items():
        key = name.encode("utf-8")
        tensor, size = tensor_wire_chunks(value)
        key_part = b"\x0a" + varint(len(key)) + key
        value_head = b"\x12" + varint(size)
        entry_len = len(key_part) + len(value_head) + size
        chunks.append(tag + varint(entry_len) + key_part + value_head)
        chunks += tensor
    return chunks


class WireFormatError(ValueError):
    """Bytes that the hand-written reader does not take (the caller falls back to protobuf)."""



def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``buf[pos]``; raises WireFormatError."""
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireFormatError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def read_span(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited field value whose length is at ``buf[pos]``;
    raises WireFormatError if it runs past ``end``."""
    n, pos = read_varint(buf, pos, end)
    if pos + n > end:
        raise WireFormatError("truncated field")
    return pos, pos + n


def skip_field(buf: Any, wire_type: int, pos: int, end: int) -> int:
    """The position after an unknown field's value; raises WireFormatError for groups."""
    if wire_type == 0:
        return read_varint(buf, pos, end)[1]
    if wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    elif wire_type == _LEN:
        n, pos = read_varint(buf, pos, end)
        pos += n
    else:
        raise WireFormatError(f"wire type {wire_type}")
    if pos > end:
        raise WireFormatError("truncated field")
    return pos


class RawTensor:
    """A Tensor read from the wire: ``dtype``, ``shape`` and ``data`` (a memoryview of the
    received bytes), which ``from_tensor`` decodes like a message, without copying ``data``."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, dtype: int, shape: tuple[int, ...], data: Any) -> None:
        self.dtype = dtype
        self.shape = shape
        self.data = data


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def read_tensor(view: memoryview, pos: int, end: int) -> RawTensor:
    """The Tensor serialized in ``view[pos:end]``; ``data`` is a slice of ``view``."""
    dtype = 0
    shape: list[int] = []
    data: Any = b""
    while pos < end:
        tag, pos = read_varint(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if field == 1 and wire_type == 0:
            value, pos = read_varint(view, pos, end)
            dtype = _int64(value) & 0xFFFFFFFF
            dtype = dtype - (1 << 32) if dtype >= 1 << 31 else dtype  # an int32 enum
        elif field == 2 and wire_type == _LEN:  # packed
            n, pos = read_varint(view, pos, end)
            stop = pos + n
            if stop > end:
                raise WireFormatError("truncated shape")
            while pos < stop:
                value, pos = read_varint(view, pos, stop)
                shape.append(_int64(value))
        elif field == 2 and wire_type == 0:  # unpacked, also valid
            value, pos = read_varint(view, pos, end)
            shape.append(_int64(value))
        elif field == 3 and wire_type == _LEN:
            n, pos = read_varint(view, pos, end)
            if pos + n > end:
                raise WireFormatError("truncated data")
            data = view[pos : pos + n]
            pos += n
        else:
            pos = skip_field(view, wire_type, pos, end)
    return RawTensor(dtype, tuple(shape), data)


def read_tensor_map_entry(view: memoryview, pos: int, end: int) -> tuple[str, RawTensor]:
    """(key, tensor) of one serialized ``map<string, Tensor>`` entry in ``view[pos:end]``."""
    key = ""
    tensor = None
    while pos < end:
        tag, pos = read_varint(view, pos, end)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == _LEN and field in (1, 2):
            n, pos = read_varint(view, pos, end)
            if pos + n > end:
                raise WireFormatError("truncated map entry")
            if field == 1:
                try:
                    key = bytes(view[pos : pos + n]).decode("utf-8")
                except UnicodeDecodeError:
                    raise WireFormatError("map key is not UTF-8") from None
            elif tensor is None:
                tensor = read_tensor(view, pos, pos + n)
            else:  # protobuf would merge the two values: leave that to it
                raise WireFormatError("map entry value given twice")
            pos += n
        else:  # upb moves such an entry to the unknown fields: leave that to it
            raise WireFormatError("unknown field in a map entry")
    return key, tensor or RawTensor(0, (), b"")
