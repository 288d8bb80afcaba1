"""Batching, and the checks of params and data against a graph's declared inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import TrainingConfigError

Batch = dict[str, np.ndarray]


def num_samples(data: Mapping[str, np.ndarray]) -> int:
    """The shared leading dimension of the data arrays; TrainingConfigError if they disagree."""
    if not data:
        raise TrainingConfigError("data", "no data arrays given")
    sizes: dict[str, int] = {}
    for name, arr in data.items():
        if not isinstance(arr, np.ndarray):
            raise TrainingConfigError(f"data.{name}", f"expected a numpy array, got {type(arr)}")
        if arr.ndim == 0:
            raise TrainingConfigError(f"data.{name}", "is a scalar: data needs a leading dimension")
        sizes[name] = arr.shape[0]
    if len(set(sizes.values())) > 1:
        (first, n), *_ = sizes.items()
        other = next(k for k, v in sizes.items() if v != n)
        raise TrainingConfigError(
            f"data.{other}",
            f"leading dimension {sizes[other]} differs from data.{first}'s {n}"
            f" (all sizes: {sizes})",
        )
    n = next(iter(sizes.values()))
    if n == 0:
        raise TrainingConfigError("data", "the data arrays are empty")
    return n


def batches_per_epoch(n: int, batch_size: int) -> int:
    """The last partial batch counts: ceil(n / batch_size)."""
    return -(-n // batch_size)


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray | None:
    """The sample order of `epoch` (None = in order), recomputable without earlier epochs."""
    if not shuffle:
        return None
    return np.random.default_rng((seed, epoch)).permutation(n)


def iter_batches(
    data: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    start: int = 0,
) -> Iterator[Batch]:
    """The batches of one epoch from batch index `start` on.

    In order, batches are views (no copy); shuffled, they are gathered copies. Every dtype
    (integer labels, bool masks) passes through untouched.
    """
    n = num_samples(data)
    order = epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)
    for b in range(start, batches_per_epoch(n, batch_size)):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        if order is None:
            yield {name: arr[lo:hi] for name, arr in data.items()}
        else:
            idx = order[lo:hi]
            yield {name: arr[idx] for name, arr in data.items()}


InputSpec = tuple[Sequence[int], Any]  # (declared shape, dtype-like); shape[0] == -1: any batch


def check_inputs(
    declared: Mapping[str, InputSpec],
    *,
    params: Mapping[str, np.ndarray],
    data: Mapping[str, np.ndarray],
    batch_size: int,
) -> None:
    """Check params and data against a graph's declared inputs; TrainingConfigError if not.

    For the rpc/core seam, which knows the graph. Every declared input must be bound to
    exactly one param or data array; a param must match its declared shape and dtype exactly;
    a data array must match its declared dtype and trailing dims, and its batches
    (`batch_size`, the last one possibly smaller) must fit the declared leading dimension,
    which may be -1 for any batch size.
    """
    both = sorted(params.keys() & data.keys())
    if both:
        raise TrainingConfigError(f"data.{both[0]}", "is bound both as a parameter and as data")
    for kind, bound in (("params", params), ("data", data)):
        for name in bound:
            if name not in declared:
                raise TrainingConfigError(f"{kind}.{name}", "is not an input of the graph")
    for name in declared:
        if name not in params and name not in data:
            raise TrainingConfigError(f"inputs.{name}", "is bound to neither a parameter nor data")

    for name, p in params.items():
        shape, dtype = declared[name]
        if tuple(shape) != p.shape or np.dtype(dtype) != p.dtype:
            raise TrainingConfigError(
                f"params.{name}",
                f"has shape {p.shape} and dtype {p.dtype}; the graph declares"
                f" {tuple(shape)} {np.dtype(dtype)}",
            )

    n = num_samples(data) if data else 0
    sizes = {min(batch_size, n)} | ({n % batch_size} if n % batch_size else set())
    for name, arr in data.items():
        shape, dtype = declared[name]
        shape = tuple(shape)
        if np.dtype(dtype) != arr.dtype:
            raise TrainingConfigError(
                f"data.{name}", f"has dtype {arr.dtype}; the graph declares {np.dtype(dtype)}"
            )
        if len(shape) != arr.ndim or shape[1:] != arr.shape[1:]:
            raise TrainingConfigError(
                f"data.{name}",
                f"has per-sample shape {arr.shape[1:]}; the graph declares {shape}"
                " (leading dimension = batch)",
            )
        lead = shape[0]
        if lead != -1 and sizes != {lead}:
            raise TrainingConfigError(
                f"data.{name}",
                f"batches have size {sorted(sizes, reverse=True)} but the graph declares a batch"
                f" dimension of {lead}; declare it as -1 to allow any batch size",
            )
