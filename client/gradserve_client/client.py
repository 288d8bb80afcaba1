"""`Client`: the synchronous gRPC client of a gradserve server.

with gs.Client("127.0.0.1:50051") as c:
    c.evaluate(g, {"x": 0.7})
    c.grad(g, {"x": 0.7}, of="y", wrt="x")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from . import _common as cm
from .errors import from_rpc_error
from .proto import gradient_service_pb2 as pb
from .training import Checkpoint, Event, Optimizer, Run, Schedule, dataset_chunks, decode_event

__all__ = ["Client"]

R = TypeVar("R")


class Client(cm.GrpcClientBase):
    """A connection to a gradserve server (``grpc.Channel`` underneath), safe to share between
    threads. Use it as a context manager, or call `close`.

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

    Graphs are sent in full once per client, then by their ``graph_id``; a server that does not
    know the id (restarted, or another replica) gets the full graph again, transparently.
    """

    def _open_channel(
        self,
        target: str,
        tls: cm.TLS | None,
        options: list[tuple[str, Any]],
        interceptors: Sequence[Any],
    ) -> grpc.Channel:
        if tls is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, tls.credentials(), options=options)
        return grpc.intercept_channel(channel, *interceptors) if interceptors else channel

    # -- lifecycle

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"

    # -- calls

    def _call(self, method: Callable[..., R], request: Any, timeout: float | None) -> R:
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _graph_call(self, method: Callable[..., R], request: Any, meta: cm.GraphMeta) -> R:
        """A call carrying a graph: by id when known, resent in full on NOT_FOUND."""
        sent_id = self._graph_ids.attach(request, meta)
        try:
            response = self._call(method, request, self.timeout)
        except Exception as exc:
            if not self._graph_ids.resend(request, meta, sent_id, exc):
                raise
            response = self._call(method, request, self.timeout)
        self._graph_ids.remember(meta, response.graph_id)  # type: ignore[attr-defined]
        return response

    def _stream_jacobian(
        self, request: pb.StreamJacobianRequest, timeout: float | None, metadata: Any
    ) -> cm.JacobianAssembler:
        """StreamJacobian, its row blocks assembled (a method for `_graph_call`)."""
        assembler = cm.JacobianAssembler()
        for block in self._stub.StreamJacobian(request, timeout=timeout, metadata=metadata):
            assembler.add(block)
        return assembler

    def _vjp(self, call: cm.Call) -> Any:
        response = self._graph_call(self._stub.Vjp, cm.vjp_request(call), call.meta)
        return call.by_wrt(cm.decode(response.gradients))

    # -- the API

    def evaluate(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        outputs: cm.Names = None,
    ) -> dict[str, np.ndarray]:
        """The values of the graph's outputs (all of them, or ``outputs``), by output name.

        ``inputs`` maps input names to numpy arrays, Python scalars or (nested) lists; the
        latter two take the input's declared dtype. The arrays returned are read-only views of
        the response.
        """
        call = cm.evaluate_call(graph, inputs, outputs)
        method, request = self._evaluate(call)
        return cm.decode_outputs(call, self._graph_call(method, request, call.meta))

    def jacobian(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: cm.Names = None,
        wrt: cm.Names = None,
        mode: str = "auto",
    ) -> Any:
        """The Jacobians d(of)/d(wrt), each of shape ``of.shape + wrt.shape`` (numerator layout).

        With ``of`` and ``wrt`` both single names, an ndarray; otherwise a nested dict
        ``J[of][wrt]``. ``of`` defaults to every output, ``wrt`` to every float input. ``mode``
        is "auto" (the cheaper of the two), "forward" or "reverse"; the result does not depend
        on it. A Jacobian larger than the server's unary limit is fetched with StreamJacobian
        and assembled here, transparently.
        """
        call = cm.jacobian_call(graph, inputs, of, wrt, mode)
        request = cm.jacobian_request(call)
        try:
            result = cm.decode_jacobian(self._graph_call(self._stub.Jacobian, request, call.meta))
        except Exception as exc:
            if not cm.is_jacobian_too_large(exc):
                raise
            stream = cm.stream_jacobian_request(request)
            assembler = self._graph_call(self._stream_jacobian, stream, call.meta)
            result = assembler.result(call.of, call.wrt)
        return call.jacobians(result)

    def grad(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: str | None = None,
        wrt: cm.Names = None,
    ) -> Any:
        """The gradient of the scalar output ``of`` (default: the graph's only output).

        ``wrt`` as a str gives one ndarray (the input's shape); a list, or None for every float
        input, gives a dict by input name.
        """
        return self._vjp(cm.grad_call(graph, inputs, of, wrt))

    def vjp(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        cotangents: Mapping[str, npt.ArrayLike],
        wrt: cm.Names = None,
    ) -> Any:
        """The vector-Jacobian products: the gradients of ``sum(cotangent * output)`` summed
        over the outputs in ``cotangents`` (each cotangent has its output's shape).

        ``wrt`` as a str gives one ndarray; a list, or None for every float input, a dict by
        input name of arrays with the inputs' shapes.
        """
        return self._vjp(cm.vjp_call(graph, inputs, cotangents, wrt))

    def jvp(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        tangents: Mapping[str, npt.ArrayLike],
        of: cm.Names = None,
    ) -> Any:
        """The Jacobian-vector products: the directional derivatives of the outputs ``of``
        along ``tangents`` (by input name, each of its input's shape; inputs without one are
        held constant).

        ``of`` as a str gives one ndarray; a list, or None for every output, a dict by output
        name of arrays with the outputs' shapes.
        """
        call = cm.jvp_call(graph, inputs, tangents, of)
        response = self._graph_call(self._stub.Jvp, cm.jvp_request(call), call.meta)
        return call.by_of(cm.decode(response.tangents))

    def train(
        self,
        graph: cm.GraphLike,
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
        checkpoint_every: int | None = 100,
        resume: Checkpoint | None = None,
        progress: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Train ``params`` (inputs, by name, with their initial values) to minimise the scalar
        output ``loss`` (default: the graph's only output), with the other inputs bound to
        batches of ``data`` (arrays sharing their leading dimension). Returns a `Run`: iterate
        it for the `TrainStep`s, then read ``run.params``; ``run.checkpoint`` is the latest
        checkpoint, to pass back as ``resume=``.

        ``optimizer`` is `SGD` or `Adam`; ``schedule`` `StepLR`, `CosineLR` or None (constant).
        The run takes ``epochs`` passes (default 1) or stops after ``max_steps`` steps, in
        total, whichever comes first. ``batch_size`` None means the whole data in one batch;
        the last partial batch is used. With ``shuffle`` every epoch's order is a permutation
        seeded by (``seed``, epoch). A step is reported every ``report_every`` steps (and the
        last), a checkpoint sent every ``checkpoint_every`` steps (None: never).

        Nothing is sent until the run is iterated; errors (INVALID_ARGUMENT naming the field,
        FAILED_PRECONDITION for a NaN loss, ...) are raised by the iteration. Data over 4 MiB
        is uploaded once with PutDataset and referenced by its content id (uploaded again if
        the server has forgotten it). ``timeout`` is the deadline of the whole run (the
        client's ``timeout`` does not apply to training streams). ``progress`` shows a tqdm
        bar with the loss.
        """
        train = cm.RemoteTrain(cm.train_call(
            graph, loss=loss, params=params, data=data, optimizer=optimizer, schedule=schedule,
            batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed,
            shuffle=shuffle, report_every=report_every, checkpoint_every=checkpoint_every,
            resume=resume,
        ), self._graph_ids)  # fmt: skip

        def events() -> Iterator[Event]:
            for attempt in range(cm.TRAIN_ATTEMPTS):
                call = train.started(
                    self._stub.Train(train.request(), timeout=timeout, metadata=self._metadata)
                )
                try:
                    first = next(call)
                except StopIteration:
                    return
                except grpc.RpcError as rpc_error:
                    exc = from_rpc_error(rpc_error)
                    retry = train.retry(attempt, exc)
                    if retry == cm.UPLOAD:
                        train.uploaded(self.put_dataset(train.data.arrays, timeout=timeout))
                    elif not retry:
                        raise exc from None
                    continue
                yield train.first(first)
                try:
                    for event in call:
                        yield decode_event(event)
                except grpc.RpcError as rpc_error:
                    raise from_rpc_error(rpc_error) from None
                return

        run = train.call
        return Run(events, train.cancel, total=run.total, start=run.start, progress=progress)

    def put_dataset(
        self, data: Mapping[str, npt.ArrayLike], *, timeout: float | None = None
    ) -> str:
        """Upload arrays (sharing their leading dimension) once, in chunks; returns the
        dataset id (a content hash) that `train` uses. `train` calls this by itself."""
        chunks = dataset_chunks(cm.arrays(data, {}, "data"))
        return self._call(self._stub.PutDataset, chunks, timeout).dataset_id

    def operators(self) -> list[cm.OperatorInfo]:
        """The server's operators: name, arity, attributes, differentiability and doc line."""
        request = pb.ListOperatorsRequest()
        return cm.decode_operators(self._call(self._stub.ListOperators, request, self.timeout))

    def server_info(self) -> cm.ServerInfo:
        """The server's version, opset, limits and features."""
        request = pb.GetServerInfoRequest()
        return cm.decode_server_info(self._call(self._stub.GetServerInfo, request, self.timeout))

    def health(self, service: str = "") -> str:
        """The standard gRPC health status: "SERVING", "NOT_SERVING", ... (``service`` "" is
        the whole server)."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, request, self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
