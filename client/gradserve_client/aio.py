"""`AsyncClient`: the asyncio (grpc.aio) twin of `Client`, with the same methods as coroutines.

async with gs.AsyncClient("127.0.0.1:50051") as c:
    await c.evaluate(g, {"x": 0.7})
    await c.grad(g, {"x": 0.7}, of="y", wrt="x")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from . import _common as cm
from .errors import from_rpc_error
from .proto import gradient_service_pb2 as pb
from .training import AsyncRun, Checkpoint, Event, Optimizer, Schedule, dataset_chunks, decode_event

__all__ = ["AsyncClient"]

R = TypeVar("R")


class AsyncClient(cm.GrpcClientBase):
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

    def _open_channel(
        self,
        target: str,
        tls: cm.TLS | None,
        options: list[tuple[str, Any]],
        interceptors: Sequence[Any],
    ) -> grpc.aio.Channel:
        if tls is None:
            return grpc.aio.insecure_channel(
                target, options=options, interceptors=interceptors or None
            )
        return grpc.aio.secure_channel(
            target, tls.credentials(), options=options, interceptors=interceptors or None
        )

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

    async def _call(
        self, method: Callable[..., Awaitable[R]], request: Any, timeout: float | None
    ) -> R:
        try:
            return await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _graph_call(
        self, method: Callable[..., Awaitable[R]], request: Any, meta: cm.GraphMeta
    ) -> R:
        """A call carrying a graph: by id when known, resent in full on NOT_FOUND."""
        sent_id = self._graph_ids.attach(request, meta)
        try:
            response = await self._call(method, request, self.timeout)
        except Exception as exc:
            if not self._graph_ids.resend(request, meta, sent_id, exc):
                raise
            response = await self._call(method, request, self.timeout)
        self._graph_ids.remember(meta, response.graph_id)  # type: ignore[attr-defined]
        return response

    async def _stream_jacobian(
        self, request: pb.StreamJacobianRequest, timeout: float | None, metadata: Any
    ) -> cm.JacobianAssembler:
        """StreamJacobian, its row blocks assembled (a method for `_graph_call`)."""
        assembler = cm.JacobianAssembler()
        async for block in self._stub.StreamJacobian(request, timeout=timeout, metadata=metadata):
            assembler.add(block)
        return assembler

    async def _vjp(self, call: cm.Call) -> Any:
        response = await self._graph_call(self._stub.Vjp, cm.vjp_request(call), call.meta)
        return call.by_wrt(cm.decode(response.gradients))

    # -- the API

    async def evaluate(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        outputs: cm.Names = None,
    ) -> dict[str, np.ndarray]:
        """As `Client.evaluate`: the values of the outputs (all, or ``outputs``), by output name."""
        call = cm.evaluate_call(graph, inputs, outputs)
        method, request = self._evaluate(call)
        return cm.decode_outputs(call, await self._graph_call(method, request, call.meta))

    async def jacobian(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: cm.Names = None,
        wrt: cm.Names = None,
        mode: str = "auto",
    ) -> Any:
        """As `Client.jacobian`: an ndarray for single names, else ``J[of][wrt]``; a Jacobian
        over the unary limit is fetched with StreamJacobian."""
        call = cm.jacobian_call(graph, inputs, of, wrt, mode)
        request = cm.jacobian_request(call)
        try:
            response = await self._graph_call(self._stub.Jacobian, request, call.meta)
            result = cm.decode_jacobian(response)
        except Exception as exc:
            if not cm.is_jacobian_too_large(exc):
                raise
            stream = cm.stream_jacobian_request(request)
            assembler = await self._graph_call(self._stream_jacobian, stream, call.meta)
            result = assembler.result(call.of, call.wrt)
        return call.jacobians(result)

    async def grad(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: str | None = None,
        wrt: cm.Names = None,
    ) -> Any:
        """As `Client.grad`: the gradient of the scalar output ``of``."""
        return await self._vjp(cm.grad_call(graph, inputs, of, wrt))

    async def vjp(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        cotangents: Mapping[str, npt.ArrayLike],
        wrt: cm.Names = None,
    ) -> Any:
        """As `Client.vjp`: the gradients of ``sum(cotangent * output)``."""
        return await self._vjp(cm.vjp_call(graph, inputs, cotangents, wrt))

    async def jvp(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        tangents: Mapping[str, npt.ArrayLike],
        of: cm.Names = None,
    ) -> Any:
        """As `Client.jvp`: the directional derivatives of the outputs ``of`` along ``tangents``."""
        call = cm.jvp_call(graph, inputs, tangents, of)
        response = await self._graph_call(self._stub.Jvp, cm.jvp_request(call), call.meta)
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
    ) -> AsyncRun:
        """As `Client.train`, returning an `AsyncRun`: ``async for step in run``, then
        ``run.params`` (or ``params = await run.wait()``)."""
        train = cm.RemoteTrain(cm.train_call(
            graph, loss=loss, params=params, data=data, optimizer=optimizer, schedule=schedule,
            batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed,
            shuffle=shuffle, report_every=report_every, checkpoint_every=checkpoint_every,
            resume=resume,
        ), self._graph_ids)  # fmt: skip

        async def events() -> AsyncIterator[Event]:
            for attempt in range(cm.TRAIN_ATTEMPTS):
                call = train.started(
                    self._stub.Train(train.request(), timeout=timeout, metadata=self._metadata)
                )
                stream = call.__aiter__()
                try:
                    first = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except grpc.RpcError as rpc_error:
                    exc = from_rpc_error(rpc_error)
                    retry = train.retry(attempt, exc)
                    if retry == cm.UPLOAD:
                        train.uploaded(await self.put_dataset(train.data.arrays, timeout=timeout))
                    elif not retry:
                        raise exc from None
                    continue
                yield train.first(first)
                try:
                    async for event in stream:
                        yield decode_event(event)
                except grpc.RpcError as rpc_error:
                    raise from_rpc_error(rpc_error) from None
                return

        run = train.call
        return AsyncRun(events, train.cancel, total=run.total, start=run.start, progress=progress)

    async def put_dataset(
        self, data: Mapping[str, npt.ArrayLike], *, timeout: float | None = None
    ) -> str:
        """As `Client.put_dataset`: upload arrays in chunks; returns the dataset id."""
        chunks = dataset_chunks(cm.arrays(data, {}, "data"))
        return (await self._call(self._stub.PutDataset, chunks, timeout)).dataset_id

    async def operators(self) -> list[cm.OperatorInfo]:
        """The server's operators: name, arity, attributes, differentiability and doc line."""
        request = pb.ListOperatorsRequest()
        response = await self._call(self._stub.ListOperators, request, self.timeout)
        return cm.decode_operators(response)

    async def server_info(self) -> cm.ServerInfo:
        """The server's version, opset, limits and features."""
        request = pb.GetServerInfoRequest()
        response = await self._call(self._stub.GetServerInfo, request, self.timeout)
        return cm.decode_server_info(response)

    async def health(self, service: str = "") -> str:
        """The standard gRPC health status: "SERVING", "NOT_SERVING", ... (``service`` "" is
        the whole server)."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(self._health.Check, request, self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
