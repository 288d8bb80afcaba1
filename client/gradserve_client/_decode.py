"""Response decoding shared by the clients: tensor maps as read-only arrays, Jacobian blocks
(and StreamJacobian's row blocks) as J[of][wrt], and results shaped as the user asked."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

from .errors import DataLoss, GradserveError, ResourceExhausted
from .proto import gradient_service_pb2 as pb
from .proto import tensor_codec

Array: TypeAlias = "np.ndarray[Any, np.dtype[Any]]"


def decode(tensors_map: Mapping[str, Any], order: Sequence[str] = ()) -> dict[str, Array]:
    """A map of Tensors as read-only arrays, in ``order`` first (then the rest)."""
    from_tensor = tensor_codec.from_tensor
    if len(order) == len(tensors_map):  # the common case: exactly the names asked for
        got = [tensors_map.get(k) for k in order]  # (indexing a message map would insert)
        if None not in got:
            return {k: from_tensor(t, field=k) for k, t in zip(order, got, strict=True)}
    keys = [k for k in order if k in tensors_map]
    keys += [k for k in tensors_map if k not in keys]
    return {k: from_tensor(tensors_map[k], field=k) for k in keys}


def decode_jacobian(response: pb.JacobianResponse) -> dict[str, dict[str, Array]]:
    """J[of][wrt] from the dense blocks of a JacobianResponse."""
    out: dict[str, dict[str, Array]] = {}
    for block in response.blocks:
        if block.WhichOneof("structure") != "dense":
            raise GradserveError(
                f"Jacobian block d{block.of}/d{block.wrt} uses a representation this SDK "
                "does not know; upgrade gradserve_client"
            )
        array = tensor_codec.from_tensor(block.dense, field=f"{block.of}/{block.wrt}")
        out.setdefault(block.of, {})[block.wrt] = array.reshape(tuple(block.shape))
    return out


class JacobianAssembler:
    """Assembles the row blocks of StreamJacobian into dense J[of][wrt] arrays."""

    def __init__(self) -> None:
        self._dense: dict[tuple[str, str], Array] = {}
        self._missing: dict[tuple[str, str], int] = {}  # rows not yet received
        self.graph_id = ""

    def add(self, block: pb.JacobianRowBlock) -> None:
        """Copy one row block into its Jacobian."""
        self.graph_id = block.graph_id or self.graph_id
        key = (block.of, block.wrt)
        rows = tensor_codec.from_tensor(block.rows, field=f"{block.of}/{block.wrt}")
        dense = self._dense.get(key)
        shape = tuple(block.shape)
        if dense is None:
            dense = self._dense[key] = np.empty(shape, rows.dtype)
            self._missing[key] = math.prod(shape[: len(shape) - (rows.ndim - 1)])
        start, count = block.row_start, block.row_count
        if count:
            dense.reshape(-1, rows[0].size)[start : start + count] = rows.reshape(count, -1)
        self._missing[key] -= count

    def result(self, of: Sequence[str], wrt: Sequence[str]) -> dict[str, dict[str, Array]]:
        """J[of][wrt]; raises `DataLoss` if the stream ended before every row arrived."""
        out: dict[str, dict[str, Array]] = {}
        for o in of:
            for w in wrt:
                dense = self._dense.get((o, w))
                if dense is None or self._missing[(o, w)] > 0:
                    raise DataLoss(f"StreamJacobian ended before all of d{o}/d{w} arrived")
                out.setdefault(o, {})[w] = dense
        return out


def select(
    result: dict[str, dict[str, Array]], of: Sequence[str], wrt: Sequence[str], single: bool
) -> Array | dict[str, dict[str, Array]]:
    """The user's view of Jacobians: an array when of and wrt were single names, else J[of][wrt]
    ordered as asked."""
    if single:
        return result[of[0]][wrt[0]]
    return {o: {w: result[o][w] for w in wrt} for o in of}


def one_or_dict(values: dict[str, Array], order: Sequence[str], single: bool) -> Any:
    """An array when one name was given as a str, else a dict ordered as asked."""
    if single:
        return values[order[0]]
    return {n: values[n] for n in order}


def is_jacobian_too_large(err: Exception) -> bool:
    """RESOURCE_EXHAUSTED because a dense Jacobian exceeds the unary limit."""
    return isinstance(err, ResourceExhausted) and (
        err.reason == "JACOBIAN_TOO_LARGE" or (not err.reason and "StreamJacobian" in err.message)
    )
