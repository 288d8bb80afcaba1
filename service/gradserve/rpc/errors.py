"""The one place where exceptions become gRPC statuses.

Handlers raise the ``RpcError`` subclasses below (or let core exceptions through); the
``rpc_method`` decorator turns each into a status with rich details (grpcio-status):

| exception | code | ErrorInfo reason |
|---|---|---|
| ``InvalidArgument``, ``GraphError`` | INVALID_ARGUMENT + BadRequest | INVALID_GRAPH, _INPUT |
| ``LimitExceeded`` | RESOURCE_EXHAUSTED | LIMIT_EXCEEDED |
| ``JacobianTooLarge`` | RESOURCE_EXHAUSTED | JACOBIAN_TOO_LARGE |
| ``StreamTooLarge`` | RESOURCE_EXHAUSTED | LIMIT_EXCEEDED (limit max_stream_jacobian_elements) |
| core ``MemoryLimitExceeded`` | RESOURCE_EXHAUSTED | LIMIT_EXCEEDED (limit max_request_bytes) |
| ``MemoryError`` | RESOURCE_EXHAUSTED, logged | OUT_OF_MEMORY |
| ``NotFound`` | NOT_FOUND | GRAPH_NOT_FOUND / DATASET_NOT_FOUND |
| core ``Cancelled`` | DEADLINE_EXCEEDED if the deadline passed, else CANCELLED | |
| anything else | INTERNAL, logged: it is a bug | |

Every ErrorInfo has ``domain="gradserve"``; clients switch on its ``reason``. An exception
raised by a step of a plan carries the executor's note naming the node and its source
(`ir.at_node`): the description, or the message, says ``at node "h" (take), built at ...``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gradserve.autodiff import Cancelled, GraphError, Program, TensorType
from gradserve.autodiff.ir import value_name
from gradserve.autodiff.memory import MemoryLimitExceeded, nbytes

log = logging.getLogger("gradserve.rpc")

DOMAIN = "gradserve"

# ErrorInfo reasons (contract for clients).
INVALID_GRAPH = "INVALID_GRAPH"
INVALID_INPUT = "INVALID_INPUT"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
JACOBIAN_TOO_LARGE = "JACOBIAN_TOO_LARGE"
GRAPH_NOT_FOUND = "GRAPH_NOT_FOUND"
DATASET_NOT_FOUND = "DATASET_NOT_FOUND"
OUT_OF_MEMORY = "OUT_OF_MEMORY"

# Fields of the request messages (as opposed to the graph) that core errors can name.
_REQUEST_FIELDS = frozenset(
    {"inputs", "cotangents", "tangents", "of", "wrt", "outputs", "mode", "loss", "params"}
)


class RpcError(Exception):
    """An error with a status code, a message and optional details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = ""

    def __init__(self, message: str, *, reason: str = "", metadata: Mapping[str, str] = ()):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = dict(metadata)

    def details(self) -> list[Any]:
        if not self.reason:
            return []
        return [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        ]


class InvalidArgument(RpcError):
    """Bad input: one field violation naming the field (e.g. ``inputs["x"].shape``)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = INVALID_INPUT

    def __init__(self, field: str, description: str, *, reason: str = INVALID_INPUT) -> None:
        super().__init__(f"{field}: {description}" if field else description, reason=reason)
        self.violations = [(field, description)]

    def details(self) -> list[Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in self.violations
            ]
        )
        return [bad, *super().details()]


class LimitExceeded(RpcError):
    """A configured limit was exceeded; the message says which and how to avoid it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = LIMIT_EXCEEDED

    def __init__(self, message: str, *, limit: str, reason: str = LIMIT_EXCEEDED) -> None:
        super().__init__(message, reason=reason, metadata={"limit": limit})


class JacobianTooLarge(LimitExceeded):
    """A unary Jacobian over max_jacobian_elements: the client should use StreamJacobian."""

    reason = JACOBIAN_TOO_LARGE

    def __init__(self, elements: int, limit: int) -> None:
        super().__init__(
            f"the Jacobian has {elements} elements, more than max_jacobian_elements={limit} "
            "for one Jacobian response; use StreamJacobian, which sends it in row blocks",
            limit="max_jacobian_elements",
            reason=JACOBIAN_TOO_LARGE,
        )
        self.metadata["elements"] = str(elements)
        self.metadata["max_jacobian_elements"] = str(limit)


class StreamTooLarge(LimitExceeded):
    """A StreamJacobian (or StreamHessian) over max_stream_jacobian_elements, refused before
    its first block; ``counted`` says what: dense elements, or a sparse stream's stored entries."""

    def __init__(self, elements: int, limit: int, counted: str) -> None:
        super().__init__(
            f"{counted.format(elements)}, more than max_stream_jacobian_elements={limit} for one"
            " stream; ask for fewer `of` or `wrt` (or smaller ones) per call, or raise the"
            " server's --max-stream-jacobian-elements",
            limit="max_stream_jacobian_elements",
        )
        self.metadata["elements"] = str(elements)
        self.metadata["max_stream_jacobian_elements"] = str(limit)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def where(exc: BaseException) -> str:
    """The node whose step raised ``exc`` while a plan ran, and where the client built it
    (``node "h" (take), built at model.py:3 in f``: the executor's note, `ir.at_node`), or ""."""
    return "; ".join(getattr(exc, "__notes__", ()))


def _primal_of(program: Program, t: TensorType) -> str:
    """The largest node of ``program`` whose type a derivative's value ``t`` (maybe with a
    leading batch axis) carries: most likely the one being differentiated when it was made."""
    best, size = "", 0
    for node in program.nodes:
        own = program.types[node.name]
        if own.dtype == t.dtype and own.size > size and t.shape[t.ndim - own.ndim :] == own.shape:
            best, size = node.name, own.size
    return best


def memory_limit_error(exc: MemoryLimitExceeded, program: Program | None = None) -> LimitExceeded:
    """The refusal of a computation over --max-request-bytes, naming its largest value (and,
    for a derivative's value, the node of the request's ``program`` with its shape)."""
    peak = exc.peak
    largest = ""
    if peak.type is not None:
        what = value_name(peak.node, peak.op)
        if peak.node.startswith("%") and program is not None:
            origin = _primal_of(program, peak.type)
            if origin:
                what += f', from differentiating node "{origin}"'
        largest = f"{what} would hold {peak.type} ({_size(nbytes(peak.type))}); "
    err = LimitExceeded(
        f"{largest}the computation needs {_size(peak.nbytes)} at its peak, more than"
        f" max_request_bytes={exc.limit} ({_size(exc.limit)}) allows: make the request smaller,"
        " or raise the server's --max-request-bytes",
        limit="max_request_bytes",
    )
    err.metadata.update(node=peak.node, bytes=str(peak.nbytes), max_request_bytes=str(exc.limit))
    return err


class NotFound(RpcError):
    code = grpc.StatusCode.NOT_FOUND


class Unimplemented(RpcError):
    code = grpc.StatusCode.UNIMPLEMENTED


def graph_error_field(
    exc: GraphError, input_names: Iterable[str] = (), *, running: bool = False
) -> str:
    """The request field a core GraphError is about.

    While building a Program (``running=False``) every error is about the graph:
    ``graph.nodes["h1"].attrs.axis``, ``graph.inputs["x"].dtype``, ``graph.outputs[0]``. While
    running one, errors about request fields keyed by name (checked inputs, cotangents,
    tangents, outputs, of, wrt) name them: ``inputs["x"].shape``, ``wrt["x"]``.
    """
    node, field = exc.node, exc.field
    head, dot, rest = field.partition(".")
    if running and head in _REQUEST_FIELDS:
        return f'{head}["{node}"]{dot}{rest}' if node else field
    if not node or head.startswith("outputs"):
        return f"graph.{field}"
    if node in set(input_names):
        return f'graph.inputs["{node}"].{field}'
    return f'graph.nodes["{node}"].{field}'


def from_graph_error(
    exc: GraphError, input_names: Iterable[str] = (), *, running: bool = False
) -> InvalidArgument:
    """The InvalidArgument for a core GraphError, naming the field it is about."""
    field = graph_error_field(exc, input_names, running=running)
    reason = INVALID_GRAPH if field.startswith("graph") else INVALID_INPUT
    at = where(exc)
    return InvalidArgument(field, f"{exc.reason} (at {at})" if at else exc.reason, reason=reason)


class core_errors:  # a lower-case name: it reads as the function it replaced
    """Core GraphErrors raised while running ``program``, as INVALID_ARGUMENT naming the
    request field; a plan over --max-request-bytes as RESOURCE_EXHAUSTED naming the program's
    node. A class, not a @contextmanager: every RPC enters one, and a generator-based context
    manager costs several times more."""

    __slots__ = ("program",)

    def __init__(self, program: Program) -> None:
        self.program = program

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, GraphError):
            raise from_graph_error(exc, self.program.input_names, running=True) from None
        if isinstance(exc, MemoryLimitExceeded):
            raise memory_limit_error(exc, self.program) from None
        return False


def _to_status(code: grpc.StatusCode, message: str, details: Iterable[Any] = ()) -> Any:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    )


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def status_of(exc: BaseException, context: grpc.ServicerContext, method: str) -> Any:
    """The grpc.Status answering ``exc``."""
    if isinstance(exc, RpcError):
        return _to_status(exc.code, exc.message, exc.details())
    if isinstance(exc, GraphError):
        wrapped = from_graph_error(exc)
        return _to_status(wrapped.code, wrapped.message, wrapped.details())
    if isinstance(exc, MemoryLimitExceeded):
        wrapped = memory_limit_error(exc)
        return _to_status(wrapped.code, wrapped.message, wrapped.details())
    at = where(exc)
    if isinstance(exc, MemoryError):
        log.warning("%s ran out of memory%s: %s", method, f" at {at}" if at else "", exc)
        return _to_status(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"this {method} request ran out of memory{f' at {at}' if at else ''}"
            f" ({type(exc).__name__}: {exc}): make it"
            " smaller; the operator can lower --max-request-bytes so that such requests are"
            " refused before they start",
            [error_details_pb2.ErrorInfo(reason=OUT_OF_MEMORY, domain=DOMAIN)],
        )
    if isinstance(exc, Cancelled):
        if _deadline_passed(context):
            return _to_status(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        return _to_status(grpc.StatusCode.CANCELLED, "cancelled by the client")
    log.error("internal error in %s", method, exc_info=exc)
    return _to_status(
        grpc.StatusCode.INTERNAL,
        f"internal error (a bug in gradserve): {type(exc).__name__}{f' at {at}' if at else ''}",
    )


def rpc_method(fn: Callable) -> Callable:
    """Decorate a servicer method: its exceptions become statuses. Works for unary and
    streaming requests and responses. A call already aborted (a request of its stream did not
    parse: interceptors.py) keeps the status it was given."""
    name = fn.__name__

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from fn(self, request, context)
            except Exception as exc:
                if context.code() is not None:
                    raise
                status = status_of(exc, context, name)
            else:
                return
            context.abort_with_status(status)

        return stream

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as exc:
            if context.code() is not None:
                raise
            status = status_of(exc, context, name)
        context.abort_with_status(status)

    return unary
