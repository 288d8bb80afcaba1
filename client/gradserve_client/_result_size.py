"""The size of a dense result, known before asking: refused over the client's budget, and sent
by the RPC that can carry it.

A Jacobian's size follows from the graph (the outputs' shapes) and the inputs (the `wrt`
shapes). Over the client's ``max_result_bytes`` it is refused here, as the server would refuse
it (`ResourceExhausted`), before anything is sent or allocated. Over the server's unary limit
(GetServerInfo's ``max_jacobian_elements``, asked once per client) it is sent straight to the
method's fallback, StreamJacobian; the fallback after JACOBIAN_TOO_LARGE stays as a safety net.
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
def _dense_methods() -> tuple[m.Method[Any, Any], ...]:
    """The methods whose result is one dense array per (of, wrt). (Imported late: `_methods`
    imports `_channel`, which makes this module's `ResultBudget`.)"""
    from . import _methods as m

    return (m.JACOBIAN, m.STREAM_JACOBIAN)


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def dense_size(call: Any) -> tuple[int, int, tuple[int, ...]] | None:
    """(elements, bytes, the largest block's shape) of the Jacobians ``call`` asks for, or
    None when a shape is not known before asking (an output with -1 dimensions, an input left
    to its default)."""
    meta = call.meta
    elements = nbytes = 0
    largest: tuple[int, ...] = ()
    for of in call.of:
        shape = meta.output_shapes.get(of)
        if shape is None or any(d < 0 for d in shape):
            return None
        itemsize = meta.output_dtypes.get(of, np.dtype("float64")).itemsize
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
        self.server_limits: Mapping[str, int] | None = None  # GetServerInfo's, once asked

    def elements(self, method: m.Method[Any, Any], call: Any) -> int | None:
        """The elements of the dense result of ``call`` by ``method`` (None: not a dense result,
        or a size not known before asking). Raises `ResourceExhausted` over the budget."""
        if method not in _dense_methods() or call.sparse:  # sparse: bounded by stored entries
            return None
        size = dense_size(call)
        if size is None:
            return None
        elements, nbytes, largest = size
        if nbytes > self.max_result_bytes:
            raise ResourceExhausted(
                f"the Jacobian asked for would take {_size(nbytes)} ({elements} elements; the"
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
        """``method``, or its fallback (StreamJacobian) when the server said its unary limit
        cannot hold ``elements``."""
        limit = (self.server_limits or {}).get("max_jacobian_elements", 0)
        if method.fallback is not None and 0 < limit < elements:
            return method.fallback
        return method
