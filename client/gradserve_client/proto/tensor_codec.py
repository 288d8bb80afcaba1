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
    code = _BY_NUMPY.get(array.dtype)
    if code is None:
        code = dtype_from_numpy(array.dtype)
        # only the byte order differs: one converting copy, in C order
        array = array.astype(_TO_NUMPY[code], order="C")
    # tobytes is the one unavoidable copy (a protobuf bytes field needs a bytes object); it also
    # linearises a non-contiguous array in row-major order.
    return tensor_pb2.Tensor(dtype=code, shape=array.shape, data=array.tobytes(order="C"))


def from_tensor(
    tensor: tensor_pb2.Tensor, *, max_elements: int | None = None, field: str = ""
) -> np.ndarray[Any, np.dtype[Any]]:
    """Decode a Tensor into a read-only numpy array that views the message's bytes (no copy).

    Raises ``TensorDecodeError`` when the dtype is unspecified or unknown, a dimension is
    negative, or the byte count is not product(shape) * itemsize, and ``TensorTooLargeError``
    when the tensor has more than ``max_elements`` elements. ``field`` names the tensor in the
    error messages.
    """
    # Each field is read once: under the upb runtime every read of ``data`` copies it.
    return array_from_parts(
        tensor.dtype, tuple(tensor.shape), tensor.data, max_elements=max_elements, field=field
    )


def array_from_parts(
    code: int,
    shape: tuple[int, ...],
    data: Any,
    *,
    max_elements: int | None = None,
    field: str = "",
) -> np.ndarray[Any, np.dtype[Any]]:
    """``from_tensor`` on a Tensor's fields: wire dtype, shape and data (any buffer: bytes, or
    a memoryview of a received message, which the array then views without a copy)."""
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
    array = np.frombuffer(data, dtype=np_dtype)
    if shape != array.shape:
        array = array.reshape(shape)
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
