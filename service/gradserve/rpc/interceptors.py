"""Server interceptors: metrics and access logs for every RPC, and the concurrency limit.

``server.default_interceptors`` orders them, outermost first: ``MetricsInterceptor`` (so that
calls refused by authentication or by the limit are counted too), then authentication, then
``ConcurrencyLimitInterceptor``; the server runs them as one, ``Chain``.

``MetricsInterceptor`` records, for every RPC of every service (health included):
``gradserve_requests_total{method,code}`` (``code`` is the status *name*, ``method`` the full
path), ``gradserve_request_duration_seconds{method}``, ``gradserve_inflight_requests``, the
request and response message size histograms, ``gradserve_jacobian_elements`` for Jacobian,
Hessian and their streams (told by their response types), and
``gradserve_train_active_streams`` (Train streams open; the training code counts
``gradserve_train_steps_total``). A streaming RPC is counted when its stream ends
(or is cancelled). Calls that grpc ends before any handler runs (their deadline passed while
they waited for a thread) are counted by ``CountingThreadPool``, the server's pool. Calls
refused with RESOURCE_EXHAUSTED are also counted in ``gradserve_refusals_total{method,limit}``,
``limit`` naming the setting that refused them (from the status's ErrorInfo), so that load
shedding (``max_concurrent_rpcs``) is told apart from requests too large. It also writes one
access-log line per RPC on the ``gradserve.access`` logger: DEBUG for OK, INFO for the outcomes
of normal SDK use (NOT_FOUND for a graph or dataset id, which the SDK then sends; CANCELLED),
WARNING for any other code, with the method, the code and the duration.

Requests whose bytes do not parse, for every service, are answered INVALID_ARGUMENT naming the
message type (and counted), instead of grpc's uncounted INTERNAL: this is the one place that
handles them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, Protocol

import grpc
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from gradserve_client.proto import gradient_service_pb2, training_pb2

from gradserve import metrics
from gradserve.rpc.auth import OPEN_SERVICES
from gradserve.rpc.errors import InvalidArgument, LimitExceeded, status_of

access_log = logging.getLogger("gradserve.access")

# What the metrics record by a method's response type: the elements of the blocks of a
# JacobianResponse or a HessianResponse and of a stream of JacobianRowBlocks (StreamJacobian,
# StreamHessian), and open Train streams.
_JACOBIAN_BLOCKS = frozenset(
    m.DESCRIPTOR.full_name
    for m in (gradient_service_pb2.JacobianResponse, gradient_service_pb2.HessianResponse)
)
_JACOBIAN_ROWS = gradient_service_pb2.JacobianRowBlock.DESCRIPTOR.full_name
_TRAIN_EVENTS = training_pb2.TrainEvent.DESCRIPTOR.full_name

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


def message_types(method: str) -> tuple[str, str]:
    """The full names of a method's request and response messages ("/pkg.Service/Method"),
    from the protobuf descriptors; ("request", "response") if they do not know it."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return "request", "response"
    return found.input_type.full_name, found.output_type.full_name


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error", "message_type")

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error

    def abort(self, context: grpc.ServicerContext) -> None:
        refusal = InvalidArgument(
            "request", f"the request is not a valid {self.message_type} message ({self.error})"
        )
        context.abort_with_status(status_of(refusal, context, self.message_type))


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
    """The recorders of one method's metric children, looked up once (``labels()`` takes a lock
    and builds a key on every call)."""

    __slots__ = (
        "duration",
        "jacobian_blocks",
        "jacobian_rows",
        "method",
        "request_bytes",
        "request_type",
        "requests",
        "response_bytes",
        "train",
    )

    def __init__(self, method: str) -> None:
        self.method = method
        self.request_type, response_type = message_types(method)
        self.jacobian_blocks = response_type in _JACOBIAN_BLOCKS
        self.jacobian_rows = response_type == _JACOBIAN_ROWS
        self.train = response_type == _TRAIN_EVENTS
        self.duration = metrics.recorder(metrics.REQUEST_DURATION.labels(method))
        self.request_bytes = metrics.recorder(metrics.REQUEST_MESSAGE_BYTES.labels(method))
        self.response_bytes = metrics.recorder(metrics.RESPONSE_MESSAGE_BYTES.labels(method))
        self.requests: dict[str, metrics.CounterRecorder] = {}  # status code name -> recorder

    def count(self, code: str) -> None:
        requests = self.requests.get(code)
        if requests is None:
            requests = metrics.recorder(metrics.REQUESTS.labels(self.method, code))
            self.requests[code] = requests
        requests.inc()


# Outcomes of normal SDK use, logged at INFO: NOT_FOUND for a graph or dataset id (the SDK then
# sends the graph or the data), CANCELLED when a client stops reading a stream.
_ROUTINE = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.CANCELLED})


def _level(code: grpc.StatusCode) -> int:
    return logging.INFO if code in _ROUTINE else logging.WARNING


def _fields(method: str, code: str, duration: float, peer: str = "") -> dict[str, Any]:
    fields = {"method": method, "code": code, "duration": f"{duration:.6f}"}
    if peer:
        fields["peer"] = peer
    return fields


_STATUS_DETAILS = "grpc-status-details-bin"

_INFLIGHT = metrics.recorder(metrics.INFLIGHT_REQUESTS)


def _refusing_limit(context: grpc.ServicerContext) -> str:
    """Which limit refused a RESOURCE_EXHAUSTED call: the ``limit`` of its ErrorInfo (the
    setting: max_concurrent_rpcs, max_request_bytes, ...), else its reason, else "other"."""
    for key, value in context.trailing_metadata() or ():
        if key != _STATUS_DETAILS:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info.metadata.get("limit") or info.reason.lower() or "other"
    return "other"


class _Call:
    """One RPC being measured: finished exactly once (by the handler, or on termination)."""

    __slots__ = ("_done", "_lock", "context", "jacobian", "method", "metrics", "start")

    def __init__(
        self,
        method: str,
        context: grpc.ServicerContext,
        children: _MethodMetrics,
        start: float | None = None,
    ):
        self.method = method
        self.metrics = children
        self.context = context
        self.start = time.perf_counter() if start is None else start
        self.jacobian: dict[tuple[str, str], int] = {}  # row blocks: (of, wrt) -> elements
        self._done = False
        self._lock = threading.Lock()
        _INFLIGHT.inc()
        if children.train:
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
        _INFLIGHT.dec()
        if self.metrics.train:
            metrics.TRAIN_ACTIVE_STREAMS.dec()
        code = self._code(error)
        name = code.name
        self.metrics.count(name)
        self.metrics.duration.observe(duration)
        if code is grpc.StatusCode.OK:
            if self.metrics.jacobian_blocks and response is not None:
                metrics.JACOBIAN_ELEMENTS.observe(sum(_elements(b.shape) for b in response.blocks))
            elif self.metrics.jacobian_rows and self.jacobian:
                metrics.JACOBIAN_ELEMENTS.observe(sum(self.jacobian.values()))
            if access_log.isEnabledFor(logging.DEBUG):
                fields = _fields(self.method, name, duration, self.context.peer())
                access_log.debug("rpc", extra={"fields": fields})
            return
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            metrics.REFUSALS.labels(self.method, _refusing_limit(self.context)).inc()
        level = _level(code)
        if access_log.isEnabledFor(level):
            fields = _fields(self.method, name, duration, self.context.peer())
            details = self.context.details()
            if isinstance(details, bytes):
                details = details.decode("utf-8", "replace")
            if details:
                fields["details"] = details
            access_log.log(level, "rpc failed", extra={"fields": fields})

    def on_termination(self) -> None:
        # Runs when grpc ends the call; a no-op unless the handler did not finish it (a
        # response stream the client cancelled or whose deadline passed).
        self.finish(GeneratorExit())

    def stream(self, responses: Iterator[Any]) -> Iterator[Any]:
        error: BaseException | None = None
        rows = self.metrics.jacobian_rows
        try:
            for response in responses:
                if rows:
                    self.jacobian[(response.of, response.wrt)] = _elements(response.shape)
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.finish(error)


# Hands each call over from MetricsInterceptor.intercept_service, which grpc calls as the call
# arrives, in its polling thread, to CountingThreadPool.submit, which grpc calls next in that
# thread to run the call (``arrival``), and then, in the pool thread, to the measured handler
# (``running``).
_handover = threading.local()


class _Arrival:
    """A call that has arrived; ``handled`` once its measured handler has started."""

    __slots__ = ("children", "handled", "start")

    def __init__(self, children: _MethodMetrics) -> None:
        self.children = children
        self.start = time.perf_counter()
        self.handled = False

    def unhandled(self, has_deadline: bool) -> None:
        """Count a call that ended before any handler ran (grpc found it finished when a thread
        got to it): DEADLINE_EXCEEDED if it had a deadline (a client cancels its call once the
        deadline has passed on its own clock, maybe before the server's), else CANCELLED."""
        code = grpc.StatusCode.DEADLINE_EXCEEDED if has_deadline else grpc.StatusCode.CANCELLED
        duration = time.perf_counter() - self.start
        self.children.count(code.name)
        self.children.duration.observe(duration)
        level = _level(code)
        if access_log.isEnabledFor(level):
            fields = _fields(self.children.method, code.name, duration)
            fields["details"] = "ended before a handler thread started it"
            access_log.log(level, "rpc failed", extra={"fields": fields})


def _has_deadline(args: tuple[Any, ...]) -> bool:
    """Whether the call grpc submits with ``args`` has a deadline (its ``call_details``)."""
    for arg in args:
        details = getattr(arg, "call_details", None)
        if details is not None:
            deadline = getattr(details, "deadline", None)
            return isinstance(deadline, float) and math.isfinite(deadline)
    return False


def _run_arrival(arrival: _Arrival, fn: Callable[..., Any], *args: Any):
    _handover.running = arrival
    try:
        return fn(*args)
    finally:
        _handover.running = None
        if not arrival.handled:
            arrival.unhandled(_has_deadline(args))


def _started() -> float | None:
    """Mark the call this pool thread runs as handled; the time it arrived, if known."""
    arrival = getattr(_handover, "running", None)
    if arrival is None:
        return None
    arrival.handled = True
    return arrival.start


class CountingThreadPool(futures.ThreadPoolExecutor):
    """The server's thread pool. grpc runs a call's handler in it only if the call is still
    alive when a thread gets to it, and ends the others silently, before any interceptor code
    runs; under overload those are most calls with short deadlines. This pool counts them (with
    MetricsInterceptor, which tells it each call's method as the call arrives)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future:
        arrival = getattr(_handover, "arrival", None)
        _handover.arrival = None
        if arrival is None or kwargs:
            return super().submit(fn, *args, **kwargs)
        return super().submit(_run_arrival, arrival, fn, *args)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and sizes every RPC, and writes its access-log line. A call's time starts
    when it arrives; with CountingThreadPool as the server's pool, calls that end before a
    handler ran are counted too."""

    def __init__(self) -> None:
        # (method, id(handler)) -> (handler, measured handler)
        self._wrapped: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, Any]] = {}
        self._children: dict[str, _MethodMetrics] = {}

    def _method_metrics(self, method: str) -> _MethodMetrics:
        children = self._children.get(method)
        if children is None:
            if len(self._children) >= _MAX_CACHED_HANDLERS:
                self._children.clear()
            children = self._children[method] = _MethodMetrics(method)
        return children

    def intercept_service(self, continuation, handler_call_details):
        return self.wrap(handler_call_details, continuation(handler_call_details))

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        """The measured ``handler`` of this call (see `Chain`)."""
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED, not counted
            return None
        method = details.method
        _handover.arrival = _Arrival(self._method_metrics(method))
        return _cached_wrap(self._wrapped, method, handler, self._measured)

    def _measured(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        children = self._method_metrics(method)
        request_bytes = children.request_bytes
        response_bytes = children.response_bytes
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer
        message_type = children.request_type

        def request_deserializer(data: bytes) -> Any:
            request_bytes.observe(len(data))
            if deserialize is None:
                return data
            try:
                return deserialize(data)
            except Exception as exc:  # DecodeError, or anything a broken payload provokes
                return _Undecodable(message_type, exc)

        def response_serializer(message: Any) -> bytes:
            data = serialize(message) if serialize is not None else message
            response_bytes.observe(len(data))
            return data

        request_streaming = handler.request_streaming

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if handler.response_streaming:

                def measured_stream(request: Any, context: grpc.ServicerContext) -> Any:
                    call = _Call(method, context, children, _started())
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
                call = _Call(method, context, children, _started())
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
        return self.wrap(handler_call_details, continuation(handler_call_details))

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        """The limited ``handler`` of this call (see `Chain`)."""
        method = details.method
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


class Wrapping(Protocol):
    """An interceptor as a function of the handler it intercepts (all of this module's and
    `auth.TokenAuthInterceptor`)."""

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any: ...


class Chain(grpc.ServerInterceptor):
    """The server's one interceptor: ``interceptors`` (outermost first) applied in one call.

    grpc runs each interceptor of a server through a continuation of its own, a closure and a
    call more per interceptor and RPC; here the handler is looked up once and each
    interceptor, innermost first, wraps (or replaces) it.
    """

    def __init__(self, interceptors: Sequence[Wrapping]) -> None:
        self.interceptors = tuple(interceptors)
        self._inside_out = self.interceptors[::-1]

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        for interceptor in self._inside_out:
            handler = interceptor.wrap(handler_call_details, handler)
        return handler
