"""Uploaded datasets: PutDataset's chunk assembly and the bounded (bytes) LRU cache.

A dataset is a set of named arrays sharing their leading dimension (the examples). Its id is
a content hash (`gradserve_client.proto.dataset_codec`: sha256 over the sorted names, dtypes,
shapes and bytes), so the SDK can compute it without uploading and the same data uploaded
twice, by any client, is stored once.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from gradserve_client.proto import tensor_codec
from gradserve_client.proto.dataset_codec import dataset_array_header, dataset_hasher, dataset_id

from gradserve.rpc.errors import DATASET_NOT_FOUND, InvalidArgument, LimitExceeded, NotFound

Arrays = dict[str, np.ndarray]
Hook = Callable[[], None]


def _field(name: str, what: str = "") -> str:
    return f'chunks["{name}"]' + (f".{what}" if what else "")


class _Array:
    """One array being received: its preallocated bytes and how many have arrived."""

    __slots__ = ("buffer", "dtype", "filled", "name", "shape")

    def __init__(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape
        self.buffer = np.empty(math.prod(shape) * dtype.itemsize, np.uint8)
        self.filled = 0

    def add(self, data: bytes) -> None:
        end = self.filled + len(data)
        if end > self.buffer.size:
            raise InvalidArgument(
                _field(self.name, "data"),
                f"more bytes than shape {list(self.shape)} x {self.dtype.itemsize} bytes"
                f" = {self.buffer.size} bytes",
            )
        self.buffer[self.filled : end] = np.frombuffer(data, np.uint8)
        self.filled = end

    def array(self) -> np.ndarray:
        if self.filled != self.buffer.size:
            raise InvalidArgument(
                _field(self.name, "data"),
                f"got {self.filled} bytes; shape {list(self.shape)} needs {self.buffer.size}",
            )
        out = self.buffer.view(self.dtype).reshape(self.shape)
        out.flags.writeable = False
        return out


def assemble(chunks: Iterable, *, max_elements: int, max_bytes: int) -> tuple[str, Arrays]:
    """(dataset id, arrays) from a stream of DatasetChunk messages.

    Each array is one or more consecutive chunks with its name; dtype and shape are read from
    its first chunk only. INVALID_ARGUMENT names the chunk field at fault; an array over
    ``max_elements`` or a dataset over ``max_bytes`` is RESOURCE_EXHAUSTED, refused as soon as
    the first chunk declares it.
    """
    done: dict[str, np.ndarray] = {}
    current: _Array | None = None
    total = 0
    # Arrays sent in name order (as the SDK does) are hashed as they arrive.
    hasher, in_order = dataset_hasher(), True
    for chunk in chunks:
        name = chunk.name
        if current is None or name != current.name:
            if current is not None:
                done[current.name] = current.array()
            if not name:
                raise InvalidArgument("chunks.name", "every chunk needs the name of its array")
            if name in done:
                raise InvalidArgument(
                    _field(name), "the chunks of an array must be consecutive; this name is back"
                )
            try:
                dtype = tensor_codec.dtype_to_numpy(chunk.dtype)
            except ValueError as exc:
                raise InvalidArgument(_field(name, "dtype"), str(exc)) from None
            shape = tuple(int(d) for d in chunk.shape)
            if not shape:
                raise InvalidArgument(
                    _field(name, "shape"), "a data array needs a leading (examples) dimension"
                )
            if any(d < 0 for d in shape):
                raise InvalidArgument(_field(name, "shape"), f"negative dimension in {shape}")
            # Python ints: numpy's int64 product wraps ([2**32, 2**32] would be 0 elements). The
            # zero dimensions are left out of the check because numpy refuses an empty array
            # whose other dimensions overflow too ([0, 2**62, 4]).
            elements = math.prod(shape)
            extent = math.prod(d or 1 for d in shape)
            if extent > max_elements:
                counted = "" if elements else " (not counting its zero dimensions)"
                raise LimitExceeded(
                    f"{_field(name)} of shape {list(shape)} has {extent} elements{counted}, more "
                    f"than max_tensor_elements={max_elements}; split it or raise "
                    "--max-tensor-elements",
                    limit="max_tensor_elements",
                )
            total += elements * dtype.itemsize
            if total > max_bytes:
                raise LimitExceeded(
                    f"the dataset is over {total} bytes, more than dataset_cache_bytes="
                    f"{max_bytes}; send less data or raise --dataset-cache-bytes",
                    limit="dataset_cache_bytes",
                )
            current = _Array(name, dtype, shape)
            in_order = in_order and all(name > other for other in done)
            if in_order:
                hasher.update(
                    dataset_array_header(name, tensor_codec.dtype_name(chunk.dtype), shape)
                )
        data = chunk.data  # (read once: a protobuf message copies a bytes field at each read)
        current.add(data)
        if in_order:
            hasher.update(data)
    if current is None:
        raise InvalidArgument("chunks", "the upload has no chunks")
    done[current.name] = current.array()
    sizes = {n: a.shape[0] for n, a in done.items()}
    if len(set(sizes.values())) > 1:
        first, n = next(iter(sizes.items()))
        other = next(k for k, v in sizes.items() if v != n)
        raise InvalidArgument(
            _field(other, "shape"),
            f"leading dimension {sizes[other]} differs from {first}'s {n}: every array of a"
            " dataset has one row per example",
        )
    return ("ds-" + hasher.hexdigest()) if in_order else dataset_id(done), done


class DatasetCache:
    """A thread-safe LRU of datasets by id, bounded by their total bytes."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self._entries: OrderedDict[str, tuple[Arrays, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.on_hit: list[Hook] = []
        self.on_miss: list[Hook] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, key: str, arrays: Mapping[str, np.ndarray]) -> Arrays:
        """Store ``arrays`` (evicting the least recently used); the stored arrays."""
        size = sum(a.nbytes for a in arrays.values())
        if size > self.capacity:
            raise LimitExceeded(
                f"the dataset has {size} bytes, more than dataset_cache_bytes={self.capacity}",
                limit="dataset_cache_bytes",
            )
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:
                self._entries.move_to_end(key)
                return existing[0]
            while self._bytes + size > self.capacity and self._entries:
                _, (_, freed) = self._entries.popitem(last=False)
                self._bytes -= freed
            self._entries[key] = (dict(arrays), size)
            self._bytes += size
        return dict(arrays)

    def get(self, key: str) -> Arrays:
        """The dataset ``key``; NOT_FOUND (reason DATASET_NOT_FOUND) if it is not stored."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        for hook in self.on_hit if entry is not None else self.on_miss:
            hook()
        if entry is None:
            raise NotFound(
                f"unknown dataset_id {key!r} (the server restarted or evicted it): upload it"
                " again with PutDataset",
                reason=DATASET_NOT_FOUND,
                metadata={"dataset_id": key},
            )
        return entry[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
