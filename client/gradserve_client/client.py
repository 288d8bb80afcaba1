"""`Client`: the synchronous gRPC client of a gradserve server.

with gs.Client("127.0.0.1:50051") as c:
    c.evaluate(g, {"x": 0.7})
    c.grad(g, {"x": 0.7}, of="y", wrt="x")

Generated from aio.py by scripts/gen_sync_client.py (``make sdk``): do not edit. The methods
are defined once, in aio.py; `LocalClient` shares them (`Methods`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from . import _methods as m
from . import _parallel
from ._args import (
    Names,
    arrays,
    derivative_call,
    evaluate_call,
    grad_call,
    hessian_call,
    jacobian_call,
    jvp_call,
    vjp_call,
)
from ._channel import ChannelClient, multicallable
from ._graphs import GraphLike
from ._info import OperatorInfo, ServerInfo, decode_server_info
from ._train_stream import RETRY, TRAIN_ATTEMPTS, UPLOAD, RemoteTrain, TrainCall, train_call
from .errors import GradserveError, from_rpc_error
from .graph import Graph
from .training import (
    REPORT_INTERVAL,
    Checkpoint,
    Event,
    Optimizer,
    Run,
    Schedule,
    decode_events,
)

__all__ = ["Client"]

C = TypeVar("C")
T = TypeVar("T")

#: How many connections a parallel call's lane tries for one that reaches the server process
#: with the fewest lanes (each new connection lands on a --workers process at random).
LANE_TRIES = 12


class Methods:
    """The public methods, each one line: resolve the arguments, then `_invoke` its `Method`.
    Subclasses say how a method is carried out (`_invoke`) and how a run trains (`_train`)."""

    timeout: float | None = None

    def _invoke(
        self, method: m.Method[C, T], call: C, timeout: float | None, parallel: int = 1
    ) -> T:
        raise NotImplementedError

    def _train(self, call: TrainCall, progress: bool, timeout: float | None) -> Run:
        raise NotImplementedError

    def evaluate(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        outputs: Names = None,
    ) -> dict[str, np.ndarray]:
        """The values of the graph's outputs (all of them, or ``outputs``), by output name.

        ``inputs`` maps input names to numpy arrays, Python scalars or (nested) lists; the
        latter two take the input's declared dtype. The arrays returned are read-only views of
        the response.
        """
        call = evaluate_call(graph, inputs, outputs)
        return self._invoke(m.EVALUATE, call, self.timeout)

    def jacobian(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: Names = None,
        wrt: Names = None,
        mode: str = "auto",
        sparse: bool = False,
        parallel: int = 1,
    ) -> Any:
        """The Jacobians d(of)/d(wrt), each of shape ``of.shape + wrt.shape`` (numerator layout).

        With ``of`` and ``wrt`` both single names, an ndarray; otherwise a nested dict
        ``J[of][wrt]``. ``of`` defaults to every output, ``wrt`` to every float input. ``mode``
        is "auto" (the cheaper of the two), "forward" or "reverse"; the result does not depend
        on it. A Jacobian larger than the server's unary limit is fetched with StreamJacobian
        and assembled here, transparently.

        With ``sparse``, each Jacobian is a ``scipy.sparse.csr_array`` of shape
        ``(of.size, wrt.size)`` (both flattened in C order): the server detects its sparsity
        pattern from the graph and computes it with one pass per colour of the pattern, so a
        diagonal or banded Jacobian costs a few passes and memory proportional to its non-zeros.
        One whose dense size is over the server's unary limit is streamed in CSR runs of rows
        (StreamJacobian) and assembled here, never densified.

        With ``parallel=K``, K requests each compute a share of the result (of its rows,
        columns or colours), sent at once and summed here into the same result: over a channel
        with ``load_balancing="round_robin"`` they spread over the replicas, and otherwise each
        goes over a connection of its own, which a server's ``--workers`` spread over its
        processes. `LocalClient` computes the result whole.
        """
        call = jacobian_call(graph, inputs, of, wrt, mode, sparse)
        return self._invoke(m.JACOBIAN, call, self.timeout, _parallel.checked(parallel))

    def jacobian_sparsity(
        self,
        graph: GraphLike,
        of: Names = None,
        wrt: Names = None,
        inputs: Mapping[str, npt.ArrayLike] | None = None,
    ) -> Any:
        """The structural sparsity pattern of d(of)/d(wrt), detected from the graph without
        computing any value: a boolean ``scipy.sparse.csr_array`` of shape
        ``(of.size, wrt.size)``, True where the entry may be non-zero for some inputs (a nested
        dict ``P[of][wrt]`` unless both are single names). ``inputs`` are needed only for their
        shapes, by a graph with -1 dimensions.
        """
        call = jacobian_call(graph, inputs, of, wrt)
        return self._invoke(m.JACOBIAN_SPARSITY, call, self.timeout)

    def hessian(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: str | None = None,
        wrt: Names = None,
        sparse: bool = False,
        parallel: int = 1,
    ) -> Any:
        """The Hessian of the scalar output ``of`` (default: the graph's only output): with
        ``wrt`` one name an ndarray of shape ``wrt.shape + wrt.shape``, else the nested dict of
        blocks ``H[wi][wj]`` (shape ``wi.shape + wj.shape``). With ``sparse``, each block is a
        ``scipy.sparse.csr_array`` of shape ``(wi.size, wj.size)``, its pattern detected and
        coloured as for `jacobian`. A Hessian larger than the server's unary limit is fetched
        with StreamHessian (dense rows, or CSR runs of rows with ``sparse``) and assembled here.
        ``parallel`` shares the work among concurrent requests, as for `jacobian`.
        """
        call = hessian_call(graph, inputs, of, wrt, sparse)
        return self._invoke(m.HESSIAN, call, self.timeout, _parallel.checked(parallel))

    def hvp(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: str | None,
        wrt: Names,
        v: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
    ) -> Any:
        """The Hessian-vector product H v of the scalar output ``of`` (None: the graph's only
        output), in one forward-over-reverse pass without forming H. With ``wrt`` one name,
        ``v`` is an array of its shape and so is the result; with a list (or None: every float
        input), ``v`` and the result are dicts by input name, ``(H v)[wi] = sum_j H[wi][wj]
        v[wj]``.
        """
        call = hessian_call(graph, inputs, of, wrt, v=v)
        return self._invoke(m.HVP, call, self.timeout)

    def derivative_program(
        self,
        graph: GraphLike,
        of: Names = None,
        wrt: Names = None,
        kind: str = "vjp",
    ) -> Graph:
        """The derivative program of the graph as a `Graph`, to read (``print(program)`` lists
        one node a line), save, or evaluate. ``kind`` is "vjp" (cotangents of ``of`` in,
        gradients of ``wrt`` out), "jvp" (tangents of ``wrt`` in, tangents of ``of`` out) or
        "hvp" (a scalar ``of``; vectors of ``wrt`` in, H v out).
        """
        call = derivative_call(graph, of, wrt, kind)
        return self._invoke(m.DERIVATIVE_PROGRAM, call, self.timeout)

    def grad(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: str | None = None,
        wrt: Names = None,
    ) -> Any:
        """The gradient of the scalar output ``of`` (default: the graph's only output).

        ``wrt`` as a str gives one ndarray (the input's shape); a list, or None for every float
        input, gives a dict by input name.
        """
        return self._invoke(m.VJP, grad_call(graph, inputs, of, wrt), self.timeout)

    def vjp(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        cotangents: Mapping[str, npt.ArrayLike],
        wrt: Names = None,
    ) -> Any:
        """The vector-Jacobian products: the gradients of ``sum(cotangent * output)`` summed
        over the outputs in ``cotangents`` (each cotangent has its output's shape).

        ``wrt`` as a str gives one ndarray; a list, or None for every float input, a dict by
        input name of arrays with the inputs' shapes.
        """
        call = vjp_call(graph, inputs, cotangents, wrt)
        return self._invoke(m.VJP, call, self.timeout)

    def jvp(
        self,
        graph: GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        tangents: Mapping[str, npt.ArrayLike],
        of: Names = None,
    ) -> Any:
        """The Jacobian-vector products: the directional derivatives of the outputs ``of``
        along ``tangents`` (by input name, each of its input's shape; inputs without one are
        held constant).

        ``of`` as a str gives one ndarray; a list, or None for every output, a dict by output
        name of arrays with the outputs' shapes.
        """
        call = jvp_call(graph, inputs, tangents, of)
        return self._invoke(m.JVP, call, self.timeout)

    def train(
        self,
        graph: GraphLike,
        *,
        loss: str | None = None,
        params: Mapping[str, npt.ArrayLike],
        data: Mapping[str, npt.ArrayLike],
        optimizer: Optimizer,
        schedule: Schedule | None = None,
        batch_size: int | None = 128,
        epochs: int | None = None,
        max_steps: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        report_every: int = 1,
        report_interval: float = REPORT_INTERVAL,
        checkpoint_every: int | None = 100,
        resume: Checkpoint | None = None,
        progress: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Train ``params`` (inputs, by name, with their initial values) to minimise the scalar
        output ``loss`` (default: the graph's only output), with the other inputs bound to
        batches of ``data`` (arrays sharing their leading dimension). Returns the run (`Run`):
        iterate it for the `TrainStep`s, then read ``run.params``; ``run.checkpoint`` is the
        latest checkpoint, to pass back as ``resume=``.

        ``optimizer`` is `SGD` or `Adam`; ``schedule`` `StepLR`, `CosineLR` or None (constant).
        The run takes ``epochs`` passes (default 1) or stops after ``max_steps`` steps, in
        total, whichever comes first. ``batch_size`` None means the whole data in one batch;
        the last partial batch is used. With ``shuffle`` every epoch's order is a permutation
        seeded by (``seed``, epoch). A step is reported every ``report_every`` steps (and the
        last), a checkpoint sent every ``checkpoint_every`` steps (None: never). The reported
        steps travel in batches, the first at once and then about every ``report_interval``
        seconds, because one message per fast step costs more than the step; 0 sends each
        step in a message of its own (in process, steps come one by one either way).

        Nothing is sent until the run is iterated; errors (INVALID_ARGUMENT naming the field,
        FAILED_PRECONDITION for a NaN loss, ...) are raised by the iteration. Data over 4 MiB
        is uploaded once with PutDataset and referenced by its content id (uploaded again if
        the server has forgotten it). ``timeout`` is the deadline of the whole run (the
        client's ``timeout`` does not apply to training streams). ``progress`` shows a tqdm
        bar with the loss.
        """
        call = train_call(
            graph, loss=loss, params=params, data=data, optimizer=optimizer, schedule=schedule,
            batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed,
            shuffle=shuffle, report_every=report_every, report_interval=report_interval,
            checkpoint_every=checkpoint_every, resume=resume,
        )  # fmt: skip
        return self._train(call, progress, timeout)

    def put_dataset(
        self, data: Mapping[str, npt.ArrayLike], *, timeout: float | None = None
    ) -> str:
        """Upload arrays (sharing their leading dimension) once, in chunks; returns the
        dataset id (a content hash) that `train` uses. `train` calls this by itself."""
        return self._invoke(m.PUT_DATASET, arrays(data, {}, "data"), timeout)

    def operators(self) -> list[OperatorInfo]:
        """The server's operators: name, arity, attributes, differentiability and doc line."""
        return self._invoke(m.OPERATORS, None, self.timeout)

    def server_info(self) -> ServerInfo:
        """The server's version, opset, limits and features."""
        return self._invoke(m.SERVER_INFO, None, self.timeout)

    def health(self, service: str = "") -> str:
        """The standard gRPC health status: "SERVING", "NOT_SERVING", ... (``service`` "" is
        the whole server)."""
        return self._invoke(m.HEALTH, service, self.timeout)


class Client(Methods, ChannelClient):
    """A connection to a gradserve server (a ``grpc`` channel underneath), safe to share
    between threads. Use it as a context manager, or call `close`.

    Args:
        target: ``"host:port"``, or any gRPC target such as ``"dns:///gradserve:50051"``.
        token: a bearer token, sent as ``authorization: Bearer <token>`` on every call.
        tls: `TLS` settings; None for a plaintext channel.
        timeout: the deadline of every call, in seconds (None: no deadline).
        retries: how many times gRPC retries a call that failed with UNAVAILABLE, with
            exponential backoff (the channel's retry policy; at most 4; 0 disables retries).
        max_message_bytes: the largest message sent or received (default 256 MiB).
        load_balancing: a gRPC load-balancing policy, e.g. ``"round_robin"`` to spread calls
            over every address a ``dns:///`` target resolves to (a headless Kubernetes Service).
        options: further ``grpc`` channel options.
        interceptors: ``grpc`` client interceptors (tracing, logging, tests).
        max_result_bytes: the largest dense result (a Jacobian) asked for (default 2 GiB):
            above it the call raises `ResourceExhausted` before anything is sent.

    Graphs are sent in full once per client, then by their ``graph_id``; a server that does not
    know the id (restarted, or another replica) gets the full graph again, transparently.
    """

    _ASYNCIO = False

    # -- lifecycle

    def close(self) -> None:
        """Close the channel (and those of parallel calls)."""
        for channel in (self._channel, *self._lanes):
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"

    # -- calls

    def _invoke(
        self, method: m.Method[C, T], call: C, timeout: float | None, parallel: int = 1
    ) -> T:
        """A method call: by another method if its `route` says so, or by its `fallback` if
        the server's limits cannot hold its dense result (whose size, over max_result_bytes, is
        refused here), and by its `fallback` when the first answer is an error it is for. With
        ``parallel`` > 1, shared among that many concurrent calls when the method and the
        server can (`_parallel`)."""
        method = method.route(call) or method
        elements = self._results.elements(method, call)  # refused here over max_result_bytes
        if elements is not None:
            if self._results.server_limits is None:
                self._results.server_limits = self._server_limits()
            method = self._results.route(method, elements)
        try:
            if parallel > 1 and self._can_share(method):
                return self._shared(method, call, timeout, parallel)
            return self._send(method, call, timeout)
        except GradserveError as exc:
            if method.fallback is None or not method.fallback_on(exc):
                raise
        return self._send(method.fallback, call, timeout)

    def _server_limits(self) -> Mapping[str, int] | None:
        """The server's limits (GetServerInfo), asked until it answers once; None if it did not
        answer (the call then goes as if there were none: an error is likely transient)."""
        try:
            info = self.server_info()
        except GradserveError:
            return None
        return info.limits

    def _can_share(self, method: m.Method[Any, Any]) -> bool:
        """Whether a call of ``method`` can be shared: a Jacobian or Hessian (not one routed to
        StreamJacobian), on a server that honours ``part`` (GetServerInfo, asked once)."""
        if method not in _parallel.SHAPES:
            return False
        if self._features is None:
            try:
                self._features = frozenset((self.server_info()).features)
            except GradserveError:
                return False  # this call goes whole; the next one asks again
        return _parallel.FEATURE in self._features

    def _shared(self, method: m.Method[C, T], call: C, timeout: float | None, parallel: int) -> T:
        """``method``'s result from ``parallel`` concurrent calls, one share of it each; a
        share refused for the server's load goes again, one at a time, after the others."""
        lanes = self._share_lanes(parallel)
        shares = _parallel.shares(method, parallel)  # type: ignore[arg-type]
        sends = [
            functools.partial(self._send, share, call, timeout, lane)
            for share, lane in zip(shares, lanes, strict=True)
        ]
        answers = _parallel.concurrently(sends, self._ASYNCIO)
        for i, answer in enumerate(answers):
            if isinstance(answer, GradserveError):
                answers[i] = sends[i]()
        return _parallel.merged(method, call, answers)  # type: ignore[arg-type]

    def _share_lanes(self, count: int) -> list[int | None]:
        """The lane of each of ``count`` shares of a parallel call. With a load-balancing
        policy, the client's channel (None): round_robin sends consecutive calls to different
        replicas. Without, a channel each, with a connection of its own: a server's
        ``--workers`` share its port by SO_REUSEPORT, which spreads connections, not calls."""
        if self._balanced:
            return [None] * count
        while len(self._lanes) < count:
            self._add_lane()
        return list(range(count))

    def _add_lane(self) -> None:
        """Open one more lane, on the server process with the fewest lanes, found within
        LANE_TRIES connections (SO_REUSEPORT hashes each connection to a process; the last one
        tried is kept). While every lane is on a process of its own, that is a new process;
        once lanes had to share one, every process has a lane, and it is one of those with
        the fewest, so that K shares over N processes put at most ceil(K / N) on each."""
        taken = self._lane_processes
        fewest = 0 if len(set(taken)) == len(taken) else min(map(taken.count, taken))
        for attempt in range(LANE_TRIES):
            channel = self._open_lane()
            info = multicallable(channel, m.SERVER_INFO.rpc)
            try:
                response = info(m.SERVER_INFO.request(None), timeout=self.timeout,
                                      metadata=self._metadata)  # fmt: skip
                process = decode_server_info(response).process
            except grpc.RpcError:
                process = ""  # the share's own call will report what is wrong
            except BaseException:  # cancelled (or interrupted) while asking: not kept
                channel.close()
                raise
            if not process or taken.count(process) <= fewest or attempt == LANE_TRIES - 1:
                self._lanes.append(channel)
                taken.append(process)
                return
            channel.close()

    def _send(
        self, method: m.Method[C, T], call: C, timeout: float | None, lane: int | None = None
    ) -> T:
        """One request (over the client's channel, or one of `_share_lanes`): its graph by id
        when known, resent in full on NOT_FOUND."""
        request = method.request(call)
        if not method.graph:
            return method.decode(call, self._rpc(method, request, timeout, lane))
        meta = call.meta  # type: ignore[attr-defined]
        sent_id = self._graph_ids.attach(request, meta)
        try:
            response = self._rpc(method, request, timeout, lane)
        except GradserveError as exc:
            if not self._graph_ids.resend(request, meta, sent_id, exc):
                raise
            response = self._rpc(method, request, timeout, lane)
        self._graph_ids.remember(meta, response.graph_id)
        return method.decode(call, response)

    def _rpc(
        self,
        method: m.Method[Any, Any],
        request: Any,
        timeout: float | None,
        lane: int | None = None,
    ) -> Any:
        """The RPC: its response, or a server stream's responses folded by `Method.collect`."""
        rpc = self._multicallable(method.rpc, lane)
        try:
            if method.collect is None:
                return _parallel.unary(rpc, request, timeout=timeout, metadata=self._metadata)
            collected = method.collect()
            for response in rpc(request, timeout=timeout, metadata=self._metadata):
                collected.add(response)
            return collected
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _train(self, call: TrainCall, progress: bool, timeout: float | None) -> Run:
        train = RemoteTrain(call, self._graph_ids)
        rpc = self._multicallable(m.TRAIN)

        def events() -> Iterator[Event]:
            for attempt in range(TRAIN_ATTEMPTS):
                stream = train.started(
                    rpc(train.request(), timeout=timeout, metadata=self._metadata)
                ).__iter__()
                try:
                    first = stream.__next__()
                except StopIteration:
                    return
                except grpc.RpcError as rpc_error:
                    exc = from_rpc_error(rpc_error)
                    retry = train.retry(attempt, exc)
                    if retry == UPLOAD:
                        train.uploaded(self.put_dataset(train.data.arrays, timeout=timeout))
                    elif retry != RETRY:
                        raise exc from None
                    continue
                for decoded in train.first(first):
                    yield decoded
                try:
                    for event in stream:
                        for decoded in decode_events(event):
                            yield decoded
                except grpc.RpcError as rpc_error:
                    raise from_rpc_error(rpc_error) from None
                return

        def replay(anchor: Checkpoint | None, step: int) -> Run:
            return self._train(call.replay(anchor, step), False, timeout)

        every = call.request.checkpoint_every
        return Run(events, train.cancel, replay, total=call.total, start=call.start,
                        checkpoint_every=every, progress=progress)  # fmt: skip
