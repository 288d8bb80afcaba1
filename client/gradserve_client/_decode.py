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


def decode_jacobian(response: Any, sparse: bool = False) -> dict[str, dict[str, Any]]:
    """J[of][wrt] from the blocks of a JacobianResponse (or the H[wi][wj] of a
    HessianResponse): arrays of shape of.shape + wrt.shape, or with ``sparse`` scipy CSR
    arrays of shape (of.size, wrt.size)."""
    out: dict[str, dict[str, Any]] = {}
    for block in response.blocks:
        out.setdefault(block.of, {})[block.wrt] = decode_block(block, sparse)
    return out


def decode_block(block: pb.JacobianBlock, sparse: bool) -> Any:
    """One JacobianBlock: dense, diagonal or CSR on the wire; an ndarray, or a scipy CSR
    array (``sparse``) in the SDK."""
    from scipy import sparse as sp  # imported on first use: most calls never need it

    shape = tuple(block.shape)
    field = f"{block.of}/{block.wrt}"
    kind = block.WhichOneof("structure")
    if kind == "dense":
        dense = tensor_codec.from_tensor(block.dense, field=field).reshape(shape)
        if not sparse:
            return dense
        raise GradserveError(
            f"the server sent d{block.of}/d{block.wrt} dense, not structured: it is older than "
            "this SDK; ask with sparse=False"
        )
    if kind == "diagonal":
        diagonal = tensor_codec.from_tensor(block.diagonal, field=field)
        n = diagonal.size
        index = np.arange(n + 1)
        matrix = sp.csr_array((diagonal, index[:n], index), shape=(n, n))
    elif kind == "sparse":
        matrix = csr_array(block.sparse, field)
    else:
        raise GradserveError(
            f"Jacobian block d{block.of}/d{block.wrt} uses a representation this SDK "
            "does not know; upgrade gradserve_client"
        )
    return matrix if sparse else matrix.toarray().reshape(shape)


def csr_array(message: pb.SparseMatrix, field: str) -> Any:
    """A SparseMatrix as a scipy CSR array; a pattern (no values) as a boolean one."""
    from scipy import sparse as sp

    indptr = tensor_codec.from_tensor(message.indptr, field=f"{field}.indptr")
    indices = tensor_codec.from_tensor(message.indices, field=f"{field}.indices")
    if message.HasField("values"):
        values = tensor_codec.from_tensor(message.values, field=f"{field}.values")
    else:
        values = np.ones(indices.size, bool)
    return sp.csr_array((values, indices, indptr), shape=(message.rows, message.cols))


class JacobianAssembler:
    """Assembles the row blocks of StreamJacobian (or StreamHessian) into J[of][wrt]: dense
    rows into ndarrays, CSR runs of rows into scipy CSR arrays, whose arrays are concatenated
    once at the end (memory proportional to the stored entries, never densified)."""

    def __init__(self) -> None:
        self._dense: dict[tuple[str, str], Array] = {}
        self._runs: dict[tuple[str, str], list[tuple[int, Array, Array, Array]]] = {}
        self._shapes: dict[tuple[str, str], tuple[int, int]] = {}  # (rows, cols) of a CSR one
        self._missing: dict[tuple[str, str], int] = {}  # rows not yet received
        self.graph_id = ""

    def add(self, block: pb.JacobianRowBlock) -> None:
        """Copy one row block into its Jacobian (dense), or keep its CSR run."""
        self.graph_id = block.graph_id or self.graph_id
        key = (block.of, block.wrt)
        field = f"{block.of}/{block.wrt}"
        shape = tuple(block.shape)
        start, count = block.row_start, block.row_count
        kind = block.WhichOneof("structure")
        if kind == "sparse":
            run = csr_array(block.sparse, field)
            if key not in self._runs:
                cols = run.shape[1]
                rows = math.prod(shape) // cols if cols else count
                self._runs[key], self._shapes[key], self._missing[key] = [], (rows, cols), rows
            self._runs[key].append((start, run.indptr, run.indices, run.data))
        elif kind == "rows":
            rows = tensor_codec.from_tensor(block.rows, field=field)
            dense = self._dense.get(key)
            if dense is None:
                dense = self._dense[key] = np.empty(shape, rows.dtype)
                self._missing[key] = math.prod(shape[: len(shape) - (rows.ndim - 1)])
            if count:
                dense.reshape(-1, rows[0].size)[start : start + count] = rows.reshape(count, -1)
        else:
            raise GradserveError(
                f"a row block of d{block.of}/d{block.wrt} uses a representation this SDK does "
                "not know; upgrade gradserve_client"
            )
        self._missing[key] -= count

    def result(
        self, of: Sequence[str], wrt: Sequence[str], sparse: bool = False
    ) -> dict[str, dict[str, Any]]:
        """J[of][wrt], CSR arrays if ``sparse`` was asked; raises `DataLoss` if the stream
        ended before every row arrived."""
        out: dict[str, dict[str, Any]] = {}
        for o in of:
            for w in wrt:
                key = (o, w)
                if self._missing.get(key, 1) > 0:
                    raise DataLoss(f"the stream ended before all of d{o}/d{w} arrived")
                dense = self._dense.get(key)
                if dense is not None and sparse:
                    raise GradserveError(
                        f"the server streamed d{o}/d{w} dense, not structured: it is older than"
                        " this SDK; ask with sparse=False"
                    )
                out.setdefault(o, {})[w] = dense if dense is not None else self._csr(key)
        return out

    def _csr(self, key: tuple[str, str]) -> Any:
        """The CSR array of ``key``'s runs, in row order, each array copied once."""
        from scipy import sparse as sp

        runs = sorted(self._runs.pop(key), key=lambda run: run[0])
        rows, cols = self._shapes[key]
        indptr = np.empty(rows + 1, np.int64)
        indptr[0] = row = offset = 0
        for start, run_indptr, _, _ in runs:
            if start != row:
                raise DataLoss(f"the stream's rows of d{key[0]}/d{key[1]} are not consecutive runs")
            count = run_indptr.size - 1
            indptr[row + 1 : row + count + 1] = run_indptr[1:] + offset
            row, offset = row + count, offset + int(run_indptr[-1])
        indices = np.concatenate([run[2] for run in runs])
        data = np.concatenate([run[3] for run in runs])
        return sp.csr_array((data, indices, indptr), shape=(rows, cols))


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
