"""`Client`: the synchronous gRPC client of a gradserve server.

with gs.Client("127.0.0.1:50051") as c:
    c.evaluate(g, {"x": 0.7})
    c.grad(g, {"x": 0.7}, of="y", wrt="x")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _common as cm
from .errors import from_rpc_error
from .proto import gradient_service_pb2 as pb
from .proto import gradient_service_pb2_grpc as pb_grpc
from .training import Checkpoint, Run, dataset_chunks, decode_event, num_examples, total_steps

__all__ = ["Client"]

R = TypeVar("R")


class Client:
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

    def __init__(
        self,
        target: str = cm.DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: cm.TLS | None = None,
        timeout: float | None = None,
        retries: int = 4,
        max_message_bytes: int = cm.DEFAULT_MAX_MESSAGE_BYTES,
        load_balancing: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Any] = (),
    ) -> None:
        opts = cm.channel_options(
            retries=retries,
            max_message_bytes=max_message_bytes,
            load_balancing=load_balancing,
            tls=tls,
            extra=options,
        )
        if tls is None:
            channel = grpc.insecure_channel(target, options=opts)
        else:
            channel = grpc.secure_channel(target, tls.credentials(), options=opts)
        self._channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self.target = target
        self.timeout = timeout
        self._metadata = cm.call_metadata(token)
        self._stub = pb_grpc.GradientStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._graph_ids = cm.GraphIds()

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

    def _call(self, method: Callable[..., R], request: Any) -> R:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _graph_call(self, method: Callable[..., R], request: Any, meta: cm.GraphMeta) -> R:
        """A unary call carrying a graph: by id when known, resent in full on NOT_FOUND."""
        sent_id = self._graph_ids.attach(request, meta)
        try:
            response = self._call(method, request)
        except Exception as exc:
            if not self._graph_ids.resend(request, meta, sent_id, exc):
                raise
            response = self._call(method, request)
        self._graph_ids.remember(meta, response.graph_id)  # type: ignore[attr-defined]
        return response

    def _stream_jacobian(
        self, request: pb.JacobianRequest, meta: cm.GraphMeta
    ) -> dict[str, dict[str, cm.Array]]:
        """The Jacobians of ``request`` through StreamJacobian, assembled into dense arrays."""
        stream = cm.stream_jacobian_request(request)
        for attempt in (0, 1):
            sent_id = stream.graph_id or None
            assembler = cm.JacobianAssembler()
            try:
                for block in self._stub.StreamJacobian(
                    stream, timeout=self.timeout, metadata=self._metadata
                ):
                    assembler.add(block)
            except grpc.RpcError as rpc_error:
                exc = from_rpc_error(rpc_error)
                if attempt or not self._graph_ids.resend(stream, meta, sent_id, exc):
                    raise exc from None
                continue
            self._graph_ids.remember(meta, assembler.graph_id)
            return assembler.result(request.of, request.wrt)
        raise AssertionError("unreachable")

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
        meta = cm.graph_meta(graph)
        wanted, _ = cm.names(outputs, (), "outputs")
        request = cm.evaluate_request(meta, inputs, wanted)
        response = self._graph_call(self._stub.Evaluate, request, meta)
        return cm.decode(response.outputs, wanted or meta.outputs)

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
        meta = cm.graph_meta(graph)
        of_names, one_of = cm.names(of, meta.outputs, "of")
        wrt_names, one_wrt = cm.names(wrt, meta.float_inputs, "wrt")
        request = cm.jacobian_request(meta, inputs, of_names, wrt_names, mode)
        try:
            response = self._graph_call(self._stub.Jacobian, request, meta)
            result = cm.decode_jacobian(response)
        except Exception as exc:
            if not cm.is_jacobian_too_large(exc):
                raise
            result = self._stream_jacobian(request, meta)
        return cm.select(result, of_names, wrt_names, one_of and one_wrt)

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
        meta = cm.graph_meta(graph)
        of = cm.the_output(meta, of)
        seed = np.ones((), cm.scalar_output(meta, of))
        wrt_names, single = cm.names(wrt, meta.float_inputs, "wrt")
        request = cm.vjp_request(meta, inputs, {of: seed}, wrt_names)
        response = self._graph_call(self._stub.Vjp, request, meta)
        return cm.one_or_dict(cm.decode(response.gradients), wrt_names, single)

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
        meta = cm.graph_meta(graph)
        wrt_names, single = cm.names(wrt, meta.float_inputs, "wrt")
        request = cm.vjp_request(meta, inputs, cotangents, wrt_names)
        response = self._graph_call(self._stub.Vjp, request, meta)
        return cm.one_or_dict(cm.decode(response.gradients), wrt_names, single)

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
        meta = cm.graph_meta(graph)
        of_names, single = cm.names(of, meta.outputs, "of")
        request = cm.jvp_request(meta, inputs, tangents, of_names)
        response = self._graph_call(self._stub.Jvp, request, meta)
        return cm.one_or_dict(cm.decode(response.tangents), of_names, single)

    def train(
        self,
        graph: cm.GraphLike,
        *,
        loss: str | None = None,
        params: Mapping[str, npt.ArrayLike],
        data: Mapping[str, npt.ArrayLike],
        optimizer: Any,
        schedule: Any = None,
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
        meta = cm.graph_meta(graph)
        loss = cm.the_output(meta, loss)
        feeds = cm.arrays(params, meta.input_dtypes, "params")
        arrays = cm.arrays(data, meta.input_dtypes, "data")
        request = cm.train_request(
            meta, loss=loss, params=feeds, optimizer=optimizer, schedule=schedule,
            batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed,
            shuffle=shuffle, report_every=report_every, checkpoint_every=checkpoint_every,
            resume=resume,
        )  # fmt: skip
        train_data = cm.TrainData(arrays)
        calls: list[Any] = []

        def events() -> Any:
            train_data.attach(request)
            for attempt in range(3):
                sent_id = self._graph_ids.attach(request, meta)
                call = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
                calls.append(call)
                try:
                    first = next(call)
                except StopIteration:
                    return
                except grpc.RpcError as rpc_error:
                    exc = from_rpc_error(rpc_error)
                    if attempt < 2 and self._graph_ids.resend(request, meta, sent_id, exc):
                        continue
                    if attempt < 2 and not train_data.inline and cm.is_dataset_not_found(exc):
                        request.dataset_id = self.put_dataset(train_data.arrays, timeout=timeout)
                        continue
                    raise exc from None
                break
            self._graph_ids.remember(meta, first.graph_id)
            yield decode_event(first)
            try:
                for event in call:
                    yield decode_event(event)
            except grpc.RpcError as rpc_error:
                raise from_rpc_error(rpc_error) from None

        def cancel() -> None:
            if calls:
                calls[-1].cancel()

        total = total_steps(num_examples(arrays), batch_size or 0, epochs, max_steps)
        start = resume.step if resume is not None else 0
        return Run(events, cancel, total=total, start=start, progress=progress)

    def put_dataset(
        self, data: Mapping[str, npt.ArrayLike], *, timeout: float | None = None
    ) -> str:
        """Upload arrays (sharing their leading dimension) once, in chunks; returns the
        dataset id (a content hash) that `train` uses. `train` calls this by itself."""
        arrays = cm.arrays(data, {}, "data")
        try:
            info = self._stub.PutDataset(
                dataset_chunks(arrays), timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return info.dataset_id

    def operators(self) -> list[cm.OperatorInfo]:
        """The server's operators: name, arity, attributes, differentiability and doc line."""
        return cm.decode_operators(self._call(self._stub.ListOperators, pb.ListOperatorsRequest()))

    def server_info(self) -> cm.ServerInfo:
        """The server's version, opset, limits and features."""
        return cm.decode_server_info(
            self._call(self._stub.GetServerInfo, pb.GetServerInfoRequest())
        )

    def health(self, service: str = "") -> str:
        """The standard gRPC health status: "SERVING", "NOT_SERVING", ... (``service`` "" is
        the whole server)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
