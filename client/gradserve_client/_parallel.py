"""One Jacobian or Hessian shared among K concurrent calls: the ``parallel=K`` of `jacobian`
and `hessian`.

Each call asks for one share of the result (the request's ``part``, a WorkPart): the server runs
the chunks of passes it would run for the whole request (rows in reverse mode, columns in
forward mode, colours of a structured block), split into K contiguous runs, and only this
share's run. Every entry of the result comes from exactly one share, and the others leave it
zero (dense) or out (sparse), so the sum of the K answers is the single call's result. The
calls go out at once (asyncio tasks, or threads for `Client`), each over its own connection or
spread by the channel's load balancing (`AsyncClient._share_lanes`). A share the server
refuses because it is computing as many RPCs as it may (``--max-concurrent-rpcs``) is sent
again once the others are done, so that ``parallel=K`` succeeds wherever the whole call would.
Any other error (or a Ctrl-C) cancels the shares still in flight: `AsyncClient` cancels their
tasks, `Client` the RPCs its threads wait on (`unary`).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias

import numpy as np

from . import _methods as m
from ._args import Call
from ._decode import decode_jacobian
from .errors import GradserveError, InvalidArgument, ResourceExhausted

#: The GetServerInfo feature of a server that honours ``part`` (an older one would ignore it
#: and answer the whole result to every share).
FEATURE = "work_part"
#: The most shares of one call: each is a request in flight, and a connection of its own.
MAX_PARALLEL = 64

#: Blocks by name pair: J[of][wrt], or H[wi][wj].
Blocks: TypeAlias = "dict[str, dict[str, Any]]"

#: The methods whose call can be shared, and how their blocks become the user's result.
SHAPES: dict[m.Method[Call, Any], Callable[[Call, Blocks], Any]] = {
    m.JACOBIAN: Call.jacobians,
    m.HESSIAN: Call.hessians,
}


def checked(parallel: int) -> int:
    """``parallel``, refused unless an int in [1, MAX_PARALLEL]."""
    if isinstance(parallel, bool) or not isinstance(parallel, int):
        reason = f"expected an int, got {type(parallel).__name__}"
    elif not 1 <= parallel <= MAX_PARALLEL:
        reason = f"must be between 1 and {MAX_PARALLEL}, got {parallel}"
    else:
        return parallel
    raise InvalidArgument(f"parallel: {reason}", field_violations=[("parallel", reason)])


def shares(method: m.Method[Call, Any], count: int) -> list[m.Method[Call, Blocks]]:
    """The ``count`` methods that each ask for one share of ``method``'s result and decode it
    as its blocks (no fallback: the whole call falls back, not a share)."""
    return [
        dataclasses.replace(
            method, request=_with_part(method.request, i, count), decode=_blocks, fallback=None
        )
        for i in range(count)
    ]


def _with_part(request: Callable[[Call], Any], index: int, count: int) -> Callable[[Call], Any]:
    def share_request(call: Call) -> Any:
        message = request(call)
        message.part.index, message.part.count = index, count
        return message

    return share_request


def _blocks(call: Call, response: Any) -> Blocks:
    return decode_jacobian(response, call.sparse)


def merged(method: m.Method[Call, Any], call: Call, answers: Sequence[Blocks]) -> Any:
    """The result of ``method`` from the blocks of every share, shaped as the user asked."""
    first = answers[0]
    total = {a: {b: _sum([answer[a][b] for answer in answers]) for b in first[a]} for a in first}
    return SHAPES[method](call, total)


def _sum(blocks: Sequence[Any]) -> Any:
    """One block from its shares, which hold disjoint entries. Dense: their sum (each entry is
    one share's value plus zeros; a -0.0 comes back as 0.0). CSR: every share's entries in
    (row, column) order, explicit zeros kept, as the whole block stores them."""
    if isinstance(blocks[0], np.ndarray):
        total = np.array(blocks[0])  # a copy: decoded arrays are read-only views
        for block in blocks[1:]:
            total += block
        return total
    from scipy import sparse as sp

    parts = [block.tocoo() for block in blocks]
    rows = np.concatenate([p.row for p in parts]).astype(np.int64)
    cols = np.concatenate([p.col for p in parts]).astype(np.int64)
    data = np.concatenate([p.data for p in parts])
    order = np.lexsort((cols, rows))
    shape = blocks[0].shape
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=shape[0]))))
    return sp.csr_array((data[order], cols[order], indptr), shape=shape)


def refused_for_load(exc: BaseException) -> bool:
    """Whether a share was refused because the server was at ``--max-concurrent-rpcs``."""
    return isinstance(exc, ResourceExhausted) and exc.metadata.get("limit") == "max_concurrent_rpcs"


class _InFlight:
    """The RPCs that the threads of one parallel call wait on, to cancel them together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Any] = []
        self._cancelled = False

    def started(self, call: Any) -> Any:
        with self._lock:
            self._calls.append(call)
            cancelled = self._cancelled
        if cancelled:  # started after the others were cancelled
            call.cancel()
        return call

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()


_IN_FLIGHT: contextvars.ContextVar[_InFlight | None] = contextvars.ContextVar(
    "gradserve_shares", default=None
)


def unary(rpc: Any, request: Any, **kwargs: Any) -> Any:
    """``rpc(request, **kwargs)``: grpc.aio's call (awaitable), or grpc's blocking call. In a
    thread of `concurrently` the blocking call is made as a future that a failing share can
    cancel (grpc's blocking call cannot be interrupted)."""
    in_flight = _IN_FLIGHT.get()
    if in_flight is None:
        return rpc(request, **kwargs)
    return in_flight.started(rpc.future(request, **kwargs)).result()


def concurrently(calls: Sequence[Callable[[], Any]], asyncio_: bool) -> Any:
    """Run the calls at once and return their outcomes in order, a result or the error of a
    call `refused_for_load`; any other error (or a KeyboardInterrupt) cancels the calls still
    running and is raised. For ``asyncio_`` the calls make coroutines and this is an
    awaitable; else each runs in a thread of its own and this is the list."""
    if asyncio_:
        return _gathered(calls)
    in_flight = _InFlight()

    def run(call: Callable[[], Any]) -> Any:
        _IN_FLIGHT.set(in_flight)  # in this share's copy of the caller's context
        return _outcome(call)

    with ThreadPoolExecutor(len(calls), thread_name_prefix="gradserve-share") as pool:
        futures = [pool.submit(contextvars.copy_context().run, run, call) for call in calls]
        try:
            return [future.result() for future in futures]
        except BaseException:
            in_flight.cancel()  # the threads' calls end at once, and the pool is joined
            raise


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except GradserveError as exc:
        if refused_for_load(exc):
            return exc
        raise


async def _async_outcome(call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await call()
    except GradserveError as exc:
        if refused_for_load(exc):
            return exc
        raise


async def _gathered(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    tasks = [asyncio.ensure_future(_async_outcome(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
