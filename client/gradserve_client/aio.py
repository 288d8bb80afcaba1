"""`AsyncClient`: the asyncio (grpc.aio) twin of `Client`, with the same methods as coroutines.

async with gs.AsyncClient("127.0.0.1:50051") as c:
    await c.evaluate(g, {"x": 0.7})
    await c.grad(g, {"x": 0.7}, of="y", wrt="x")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _common as cm
from .errors import from_rpc_error
from .proto import gradient_service_pb2 as pb
from .proto import gradient_service_pb2_grpc as pb_grpc
from .training import AsyncRun, Checkpoint, dataset_chunks, decode_event, num_examples, total_steps

__all__ = ["AsyncClient"]

R = TypeVar("R")


class AsyncClient:
    """An asyncio connection to a gradserve server (``grpc.aio.Channel`` underneath). Create it
    inside a running event loop; use it as an async context manager, or await `close`. The
    methods and their results are those of `Client`.

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
        interceptors: ``grpc.aio`` client interceptors (tracing, logging, tests).

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
            self._channel = grpc.aio.insecure_channel(
                target, options=opts, interceptors=interceptors or None
            )
        else:
            self._channel = grpc.aio.secure_channel(
                target, tls.credentials(), options=opts, interceptors=interceptors or None
            )
        self.target = target
        self.timeout = timeout
        self._metadata = cm.call_metadata(token)
        self._stub = pb_grpc.GradientStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._graph_ids = cm.GraphIds()

    # -- lifecycle

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.target!r})"

    # -- calls

    async def _call(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _graph_call(
        self, method: Callable[..., Awaitable[R]], request: Any, meta: cm.GraphMeta
    ) -> R:
        """A unary call carrying a graph: by id when known, resent in full on NOT_FOUND."""
        sent_id = self._graph_ids.attach(request, meta)
        try:
            response = await self._call(method, request)
        except Exception as exc:
            if not self._graph_ids.resend(request, meta, sent_id, exc):
                raise
            response = await self._call(method, request)
        self._graph_ids.remember(meta, response.graph_id)  # type: ignore[attr-defined]
        return response

    async def _stream_jacobian(
        self, request: pb.JacobianRequest, meta: cm.GraphMeta
    ) -> dict[str, dict[str, cm.Array]]:
        """The Jacobians of ``request`` through StreamJacobian, assembled into dense arrays."""
        stream = cm.stream_jacobian_request(request)
        for attempt in (0, 1):
            sent_id = stream.graph_id or None
            assembler = cm.JacobianAssembler()
            try:
                async for block in self._stub.StreamJacobian(
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

    async def evaluate(
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
        response = await self._graph_call(self._stub.Evaluate, request, meta)
        return cm.decode(response.outputs, wanted or meta.outputs)

    async def jacobian(
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
            response = await self._graph_call(self._stub.Jacobian, request, meta)
            result = cm.decode_jacobian(response)
        except Exception as exc:
            if not cm.is_jacobian_too_large(exc):
                raise
            result = await self._stream_jacobian(request, meta)
        return cm.select(result, of_names, wrt_names, one_of and one_wrt)

    async def grad(
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
        response = await self._graph_call(self._stub.Vjp, request, meta)
        return cm.one_or_dict(cm.decode(response.gradients), wrt_names, single)

    async def vjp(
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
        response = await self._graph_call(self._stub.Vjp, request, meta)
        return cm.one_or_dict(cm.decode(response.gradients), wrt_names, single)

    async def jvp(
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
        response = await self._graph_call(self._stub.Jvp, request, meta)
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
    ) -> AsyncRun:
        """As `Client.train`, returning an `AsyncRun`: ``async for step in run``, then
        ``run.params`` (or ``params = await run.wait()``)."""
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

        async def events() -> Any:
            train_data.attach(request)
            for attempt in range(3):
                sent_id = self._graph_ids.attach(request, meta)
                call = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
                calls.append(call)
                stream = call.__aiter__()
                try:
                    first = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except grpc.RpcError as rpc_error:
                    exc = from_rpc_error(rpc_error)
                    if attempt < 2 and self._graph_ids.resend(request, meta, sent_id, exc):
                        continue
                    if attempt < 2 and not train_data.inline and cm.is_dataset_not_found(exc):
                        request.dataset_id = await self.put_dataset(
                            train_data.arrays, timeout=timeout
                        )
                        continue
                    raise exc from None
                break
            self._graph_ids.remember(meta, first.graph_id)
            yield decode_event(first)
            try:
                async for event in stream:
                    yield decode_event(event)
            except grpc.RpcError as rpc_error:
                raise from_rpc_error(rpc_error) from None

        def cancel() -> None:
            if calls:
                calls[-1].cancel()

        total = total_steps(num_examples(arrays), batch_size or 0, epochs, max_steps)
        start = resume.step if resume is not None else 0
        return AsyncRun(events, cancel, total=total, start=start, progress=progress)

    async def put_dataset(
        self, data: Mapping[str, npt.ArrayLike], *, timeout: float | None = None
    ) -> str:
        """As `Client.put_dataset`: upload arrays in chunks; returns the dataset id."""
        arrays = cm.arrays(data, {}, "data")
        try:
            info = await self._stub.PutDataset(
                dataset_chunks(arrays), timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return info.dataset_id

    async def operators(self) -> list[cm.OperatorInfo]:
        """The server's operators: name, arity, attributes, differentiability and doc line."""
        response = await self._call(self._stub.ListOperators, pb.ListOperatorsRequest())
        return cm.decode_operators(response)

    async def server_info(self) -> cm.ServerInfo:
        """The server's version, opset, limits and features."""
        response = await self._call(self._stub.GetServerInfo, pb.GetServerInfoRequest())
        return cm.decode_server_info(response)

    async def health(self, service: str = "") -> str:
        """The standard gRPC health status: "SERVING", "NOT_SERVING", ... (``service`` "" is
        the whole server)."""
        response = await self._call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service)
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
