"""A dataset's content id, which the SDK computes before uploading and the server from the
chunks it receives: sha256 over the arrays sorted by name (name, dtype, shape, then the
little-endian row-major bytes). Part of the wire contract, so both sides share this one
definition."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import tensor_codec


def le_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes as the wire carries them: row-major, little-endian."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return memoryview(a.reshape(-1).view(np.uint8))  # (cast("B") refuses a 0 in the shape)


def dataset_id(arrays: Mapping[str, np.ndarray]) -> str:
    """The content id of a dataset (``ds-`` and a sha256 hex digest)."""
    h = dataset_hasher()
    for name in sorted(arrays):
        a = arrays[name]
        dtype = tensor_codec.dtype_name(tensor_codec.dtype_from_numpy(a.dtype))
        h.update(dataset_array_header(name, dtype, a.shape))
        h.update(le_bytes(a))
    return "ds-" + h.hexdigest()


def dataset_hasher() -> Any:
    """The hash object `dataset_id` starts from (the server hashes chunks as they arrive)."""
    return hashlib.sha256(b"gradserve-dataset-v1\0")


def dataset_array_header(name: str, dtype: str, shape: Iterable[int]) -> bytes:
    """What `dataset_id` hashes before an array's bytes."""
    return json.dumps([name, dtype, [int(d) for d in shape]]).encode() + b"\0"
