"""The size of a dense result, known before asking: refused over the client's budget, and sent
by the RPC that can carry it.

A Jacobian's size follows from the graph (the outputs' shapes) and the inputs (the `wrt`
shapes); a Hessian's from the `wrt` shapes. Over the client's ``max_result_bytes`` a dense one
is refused here, as the server would refuse it (`ResourceExhausted`), before anything is sent or
allocated. Over the server's unary limit (GetServerInfo's ``max_jacobian_elements``, asked once
per client) it is sent straight to the method's fallback, StreamJacobian or StreamHessian; the
fallback after JACOBIAN_TOO_LARGE stays as a safety net.

A sparse result's stored entries are not known before asking, but are at most its dense
elements: a sparse result whose dense size is over the unary limit goes to the stream too
(which sends CSR runs of rows, often in one message), and it is never refused here: the
server bounds its stored entries.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from .errors import ResourceExhausted

if TYPE_CHECKING:
    from . import _methods as m

DEFAULT_MAX_RESULT_BYTES = 2 << 30


@functools.cache
def _sized_methods() -> dict[m.Method[Any, Any], str]:
    """The methods whose result is one matrix per block, by what the result is. (Imported
    late: `_methods` imports `_channel`, which makes this module's `ResultBudget`.)"""
    from . import _methods as m

    return {
        m.JACOBIAN: "Jacobian",
        m.STREAM_JACOBIAN: "Jacobian",
        m.HESSIAN: "Hessian",
        m.STREAM_HESSIAN: "Hessian",
    }


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def dense_size(call: Any, hessian: bool = False) -> tuple[int, int, tuple[int, ...]] | None:
    """(elements, bytes, the largest block's shape) of the dense Jacobians (or, with
    ``hessian``, Hessian blocks) ``call`` asks for, or None when a shape is not known before
    asking (an output with -1 dimensions, an input left to its default)."""
    meta = call.meta
    elements = nbytes = 0
    largest: tuple[int, ...] = ()
    for row in call.wrt if hessian else call.of:
        if hessian:
            x = call.feeds.get(row)
            shape, dtype = (None, None) if x is None else (x.shape, x.dtype)
        else:
            shape, dtype = meta.output_shapes.get(row), meta.output_dtypes.get(row)
        if shape is None or any(d < 0 for d in shape):
            return None
        itemsize = np.dtype(dtype or "float64").itemsize
        for wrt in call.wrt:
            x = call.feeds.get(wrt)
            if x is None:
                return None
            block = (*shape, *x.shape)
            n = math.prod(block)
            elements += n
            nbytes += n * itemsize
            if n > math.prod(largest):
                largest = block
    return elements, nbytes, largest


class ResultBudget:
    """One client's budget for dense results, and the server's limits once asked."""

    def __init__(self, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> None:
        if max_result_bytes < 1:
            raise ValueError(f"max_result_bytes must be positive, got {max_result_bytes}")
        self.max_result_bytes = max_result_bytes
        self.server_limits: Mapping[str, int] | None = None  # GetServerInfo's, once answered

    def elements(self, method: m.Method[Any, Any], call: Any) -> int | None:
        """The elements of the dense result of ``call`` by ``method`` (None: not a Jacobian or
        Hessian, or a size not known before asking). Raises `ResourceExhausted` when a dense
        result is over the budget (a sparse one is bounded by its stored entries, by the
        server)."""
        what = _sized_methods().get(method)
        if what is None:
            return None
        size = dense_size(call, hessian=what == "Hessian")
        if size is None:
            return None
        elements, nbytes, largest = size
        if nbytes > self.max_result_bytes and not call.sparse:
            raise ResourceExhausted(
                f"the {what} asked for would take {_size(nbytes)} ({elements} elements; the"
                f" largest block has shape {list(largest)}), more than this client's"
                f" max_result_bytes={self.max_result_bytes} ({_size(self.max_result_bytes)}):"
                " ask for a sparse result (sparse=True) if it is sparse, or for its row blocks"
                " one at a time (an output of a slice of the rows, y[i:j]), or raise"
                " max_result_bytes",
                code=grpc.StatusCode.RESOURCE_EXHAUSTED,
                reason="RESULT_TOO_LARGE",
                metadata={
                    "limit": "max_result_bytes",
                    "bytes": str(nbytes),
                    "max_result_bytes": str(self.max_result_bytes),
                },
            )
        return elements

    def route(self, method: m.Method[Any, Any], elements: int) -> m.Method[Any, Any]:
        """``method``, or its fallback (StreamJacobian or StreamHessian) when the server said
        its unary limit cannot hold ``elements`` (dense: a sparse result has at most as many)."""
        limit = (self.server_limits or {}).get("max_jacobian_elements", 0)
        if method.fallback is not None and 0 < limit < elements:
            return method.fallback
        return method
