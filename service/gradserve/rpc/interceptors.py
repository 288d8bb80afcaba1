"""Server interceptors: metrics and access logs for every RPC, and the concurrency limit.

``server.default_interceptors`` orders them, outermost first: ``MetricsInterceptor`` (so that
calls refused by authentication or by the limit are counted too), then authentication, then
``ConcurrencyLimitInterceptor``.

``MetricsInterceptor`` records, for every RPC of every service (health included):
``gradserve_requests_total{method,code}`` (``code`` is the status *name*, ``method`` the full
path), ``gradserve_request_duration_seconds{method}``, ``gradserve_inflight_requests``, the
request and response message size histograms, and ``gradserve_jacobian_elements`` for Jacobian
and StreamJacobian, and ``gradserve_train_active_streams`` (Train streams open; the training
code counts ``gradserve_train_steps_total``). A streaming RPC is counted when its stream ends
(or is cancelled). It also writes one access-log line per RPC on the ``gradserve.access``
logger: DEBUG for OK, WARNING for any other code, with the method, the code and the duration.

Requests whose bytes do not parse (only possible for services registered with grpc's strict
deserializers, such as health: the Gradient service's deserializers never raise) are answered
INVALID_ARGUMENT and counted, instead of grpc's uncounted INTERNAL.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from gradserve import metrics
from gradserve.rpc.auth import OPEN_SERVICES
from gradserve.rpc.errors import LimitExceeded, status_of

access_log = logging.getLogger("gradserve.access")

_JACOBIAN = "/gradserve.v1.Gradient/Jacobian"
_STREAM_JACOBIAN = "/gradserve.v1.Gradient/StreamJacobian"
_TRAIN = "/gradserve.v1.Gradient/Train"

# Bound on the per-interceptor caches of wrapped handlers (a handful of methods in practice).
_MAX_CACHED_HANDLERS = 1024

_BEHAVIOR = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


def _behavior_name(handler: grpc.RpcMethodHandler) -> str:
    return _BEHAVIOR[(bool(handler.request_streaming), bool(handler.response_streaming))]


def wrap_behavior(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    """``handler`` with its behavior (unary_unary, ..., whichever is set) replaced by
    ``wrap(behavior)``."""
    name = _behavior_name(handler)
    return handler._replace(**{name: wrap(getattr(handler, name))})


class _Undecodable:
    """Stands in for a request whose bytes a strict deserializer refused."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def abort(self, context: grpc.ServicerContext) -> None:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid message ({type(self.error).__name__})",
        )


def _checked_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, _Undecodable):
            request.abort(context)
        yield request


def _checked(request: Any, context: grpc.ServicerContext, streaming: bool) -> Any:
    """The request (or request stream), aborting with INVALID_ARGUMENT where it did not parse."""
    if streaming:
        return _checked_stream(request, context)
    if isinstance(request, _Undecodable):
        request.abort(context)
    return request


def _cached_wrap(
    cache: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, Any]],
    method: str,
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler],
) -> grpc.RpcMethodHandler:
    """``wrap(method, handler)``, built once per handler: grpc asks the interceptors for every
    call, and the handlers behind them are the same objects every time."""
    key = (method, id(handler))
    cached = cache.get(key)
    if cached is not None and cached[0] is handler:
        return cached[1]
    wrapped = wrap(method, handler)
    if len(cache) >= _MAX_CACHED_HANDLERS:
        cache.clear()
    cache[key] = (handler, wrapped)
    return wrapped


def _elements(shape: Any) -> int:
    return math.prod(int(d) for d in shape)


class _MethodMetrics:
    """The metric children of one method, looked up once (``labels()`` takes a lock and builds
    a key on every call)."""

    __slots__ = ("duration", "method", "request_bytes", "requests", "response_bytes")

    def __init__(self, method: str) -> None:
        self.method = method
        self.duration = metrics.REQUEST_DURATION.labels(method)
        self.request_bytes = metrics.REQUEST_MESSAGE_BYTES.labels(method)
        self.response_bytes = metrics.RESPONSE_MESSAGE_BYTES.labels(method)
        self.requests: dict[str, Any] = {}  # status code name -> counter child

    def count(self, code: str) -> None:
        child = self.requests.get(code)
        if child is None:
            child = self.requests[code] = metrics.REQUESTS.labels(self.method, code)
        child.inc()


class _Call:
    """One RPC being measured: finished exactly once (by the handler, or on termination)."""

    __slots__ = ("_done", "_lock", "context", "jacobian", "method", "metrics", "start")

    def __init__(self, method: str, context: grpc.ServicerContext, children: _MethodMetrics):
        self.method = method
        self.metrics = children
        self.context = context
        self.start = time.perf_counter()
        self.jacobian: dict[tuple[str, str], int] = {}  # StreamJacobian: (of, wrt) -> elements
        self._done = False
        self._lock = threading.Lock()
        metrics.INFLIGHT_REQUESTS.inc()
        if method == _TRAIN:
            metrics.TRAIN_ACTIVE_STREAMS.inc()

    def _code(self, error: BaseException | None) -> grpc.StatusCode:
        code = self.context.code()
        if code is not None:
            return code
        if error is None:
            return grpc.StatusCode.OK
        if isinstance(error, GeneratorExit) or not self.context.is_active():
            remaining = self.context.time_remaining()
            if remaining is not None and remaining <= 0:
                return grpc.StatusCode.DEADLINE_EXCEEDED
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.UNKNOWN  # grpc's answer to an exception without a status

    def finish(self, error: BaseException | None = None, response: Any = None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        duration = time.perf_counter() - self.start
        metrics.INFLIGHT_REQUESTS.dec()
        if self.method == _TRAIN:
            metrics.TRAIN_ACTIVE_STREAMS.dec()
        code = self._code(error)
        name = code.name
        self.metrics.count(name)
        self.metrics.duration.observe(duration)
        if code is grpc.StatusCode.OK:
            if self.method == _JACOBIAN and response is not None:
                metrics.JACOBIAN_ELEMENTS.observe(sum(_elements(b.shape) for b in response.blocks))
            elif self.method == _STREAM_JACOBIAN and self.jacobian:
                metrics.JACOBIAN_ELEMENTS.observe(sum(self.jacobian.values()))
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug("rpc", extra={"fields": self._fields(name, duration)})
        elif access_log.isEnabledFor(logging.WARNING):
            fields = self._fields(name, duration)
            details = self.context.details()
            if isinstance(details, bytes):
                details = details.decode("utf-8", "replace")
            if details:
                fields["details"] = details
            access_log.warning("rpc failed", extra={"fields": fields})

    def _fields(self, code: str, duration: float) -> dict[str, Any]:
        return {
            "method": self.method,
            "code": code,
            "duration": f"{duration:.6f}",
            "peer": self.context.peer(),
        }

    def on_termination(self) -> None:
        # Runs when grpc ends the call; a no-op unless the handler did not finish it (a
        # response stream the client cancelled or whose deadline passed).
        self.finish(GeneratorExit())

    def stream(self, responses: Iterator[Any]) -> Iterator[Any]:
        error: BaseException | None = None
        try:
            for response in responses:
                if self.method == _STREAM_JACOBIAN:
                    self.jacobian[(response.of, response.wrt)] = _elements(response.shape)
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.finish(error)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and sizes every RPC, and writes its access-log line."""

    def __init__(self) -> None:
        # (method, id(handler)) -> (handler, measured handler)
        self._wrapped: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, Any]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED, not counted
            return None
        return _cached_wrap(self._wrapped, handler_call_details.method, handler, self._measured)

    def _measured(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        children = _MethodMetrics(method)
        request_bytes = children.request_bytes
        response_bytes = children.response_bytes
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer

        def request_deserializer(data: bytes) -> Any:
            request_bytes.observe(len(data))
            if deserialize is None:
                return data
            try:
                return deserialize(data)
            except Exception as exc:  # strict deserializers (health): answered below
                return _Undecodable(exc)

        def response_serializer(message: Any) -> bytes:
            data = serialize(message) if serialize is not None else message
            response_bytes.observe(len(data))
            return data

        request_streaming = handler.request_streaming

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if handler.response_streaming:

                def measured_stream(request: Any, context: grpc.ServicerContext) -> Any:
                    call = _Call(method, context, children)
                    context.add_callback(call.on_termination)
                    try:
                        request = _checked(request, context, request_streaming)
                        responses = behavior(request, context)
                    except BaseException as exc:
                        call.finish(exc)
                        raise
                    return call.stream(responses)

                return measured_stream

            def measured(request: Any, context: grpc.ServicerContext) -> Any:
                call = _Call(method, context, children)
                try:
                    response = behavior(_checked(request, context, request_streaming), context)
                except BaseException as exc:
                    call.finish(exc)
                    raise
                call.finish(None, response)
                return response

            return measured

        return wrap_behavior(handler, wrap)._replace(
            request_deserializer=request_deserializer, response_serializer=response_serializer
        )


class ConcurrencyLimitInterceptor(grpc.ServerInterceptor):
    """At most ``limit`` RPCs at once (health excepted); more get RESOURCE_EXHAUSTED at once.

    The check runs when a call starts on a worker thread, and the server's thread pool has
    room for ``limit`` calls plus ``server.HEADROOM`` (health probes and refusals), so an
    admitted call never waits in a queue and a refused one is answered in microseconds. grpc's
    own ``maximum_concurrent_rpcs`` is set to the pool size as a backstop: grpc refuses calls
    beyond it before any interceptor runs, so those few are not counted in the metrics.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be >= 1")
        self.limit = limit
        self._active = 0
        self._lock = threading.Lock()
        self._wrapped: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, Any]] = {}
        self._refusal = LimitExceeded(
            f"too many concurrent RPCs: this server process handles at most {limit} "
            "(--max-concurrent-rpcs); retry with backoff",
            limit="max_concurrent_rpcs",
        )

    @property
    def active(self) -> int:
        return self._active

    def _acquire(self) -> bool:
        with self._lock:
            if self._active >= self.limit:
                return False
            self._active += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def _refuse(self, context: grpc.ServicerContext, method: str) -> None:
        context.abort_with_status(status_of(self._refusal, context, method))

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        return _cached_wrap(self._wrapped, method, handler, self._limited)

    def _limited(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if handler.response_streaming:

                def limited_stream(request: Any, context: grpc.ServicerContext) -> Any:
                    if not self._acquire():
                        self._refuse(context, method)
                    once = threading.Lock()

                    def release() -> None:  # by the stream's end or by termination
                        if once.acquire(blocking=False):
                            self._release()

                    context.add_callback(release)
                    try:
                        responses = behavior(request, context)
                    except BaseException:
                        release()
                        raise

                    def stream() -> Iterator[Any]:
                        try:
                            yield from responses
                        finally:
                            release()

                    return stream()

                return limited_stream

            def limited(request: Any, context: grpc.ServicerContext) -> Any:
                if not self._acquire():
                    self._refuse(context, method)
                try:
                    return behavior(request, context)
                finally:
                    self._release()

            return limited

        return wrap_behavior(handler, wrap)
