"""The SDK's exceptions: `GradserveError` and one subclass per gRPC status code.

`from_rpc_error` is the one place where a `grpc.RpcError` (from the sync or the asyncio API)
becomes one of these, with the server's `google.rpc.BadRequest` field violations and the
`google.rpc.ErrorInfo` reason decoded from the rich status (grpcio-status).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GradserveError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "from_rpc_error",
]


class GradserveError(Exception):
    """A failed gradserve call.

    Attributes:
        code: the `grpc.StatusCode` of the failure.
        message: the server's (or the SDK's) description.
        field_violations: ``(field, description)`` pairs from a ``google.rpc.BadRequest``
            detail: which request field, node or input is wrong, and why. Empty if none.
        reason: the ``google.rpc.ErrorInfo`` reason (e.g. ``"GRAPH_NOT_FOUND"``), or "".
        metadata: the ``google.rpc.ErrorInfo`` metadata, e.g. which limit was exceeded.
    """

    #: The status code of this class; subclasses set it.
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        extra = [f"{f}: {d}" for f, d in self.field_violations if f"{f}: {d}" not in self.message]
        return f"{text} ({'; '.join(extra)})" if extra else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field_violations={self.field_violations})"


class Cancelled(GradserveError):
    """CANCELLED: the call was cancelled, usually by the caller."""

    code = grpc.StatusCode.CANCELLED


class Unknown(GradserveError):
    """UNKNOWN: an error without a better code (a bug somewhere)."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(GradserveError):
    """INVALID_ARGUMENT: bad input; `field_violations` names the node, input or field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(GradserveError):
    """DEADLINE_EXCEEDED: the call took longer than its timeout."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(GradserveError):
    """NOT_FOUND: e.g. an unknown graph_id (the SDK resends the graph by itself)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(GradserveError):
    """ALREADY_EXISTS."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(GradserveError):
    """PERMISSION_DENIED."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(GradserveError):
    """RESOURCE_EXHAUSTED: over a configured limit; the message says which and how to avoid it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(GradserveError):
    """FAILED_PRECONDITION: the server is not in a state to answer (e.g. shutting down)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(GradserveError):
    """ABORTED."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(GradserveError):
    """OUT_OF_RANGE."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(GradserveError):
    """UNIMPLEMENTED: the server does not offer this RPC (e.g. an older version)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(GradserveError):
    """INTERNAL: a bug in gradserve; please report it."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(GradserveError):
    """UNAVAILABLE: the server cannot be reached (retried by the channel before this is raised)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(GradserveError):
    """DATA_LOSS."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(GradserveError):
    """UNAUTHENTICATED: missing or wrong credentials (see ``token=`` and ``tls=``)."""

    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[GradserveError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_class(code: grpc.StatusCode) -> type[GradserveError]:
    """The `GradserveError` subclass of a status code."""
    return _BY_CODE.get(code, GradserveError)


def from_rpc_error(error: grpc.RpcError) -> GradserveError:
    """Convert a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``) to a GradserveError.

    The subclass follows the status code; the ``grpc-status-details-bin`` trailer, if any, gives
    the field violations (``google.rpc.BadRequest``) and the reason (``google.rpc.ErrorInfo``).
    """
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(error, "details", None)
    message = (details_fn() if callable(details_fn) else None) or str(error)
    violations: list[tuple[str, str]] = []
    reason = ""
    metadata: dict[str, str] = {}
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):  # a malformed or mismatched rich status
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
    return error_class(code)(
        message, code=code, field_violations=violations, reason=reason, metadata=metadata
    )
