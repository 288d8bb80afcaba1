"""Bearer-token authentication: a server interceptor (``--auth-token-file``).

Every RPC except the health service needs ``authorization: Bearer <token>``, with the token one
of the file's lines; tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import grpc

from gradserve.rpc.handlers import HANDLER_FACTORIES

OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def read_tokens(path: Path) -> list[bytes]:
    """The non-empty, stripped lines of a token file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip().encode() for line in lines if line.strip()]


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a valid bearer token with UNAUTHENTICATED."""

    def __init__(self, tokens: list[bytes]) -> None:
        if not tokens:
            raise ValueError("the auth token file has no tokens")
        self._tokens = tokens

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        self._deny = {kind: make(deny) for kind, make in HANDLER_FACTORIES.items()}

    def _valid(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                raw = value.encode() if isinstance(value, str) else value
                scheme, _, token = raw.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                # Compare with every token so the time does not depend on which one matched.
                return any([hmac.compare_digest(token.strip(), t) for t in self._tokens])
        return False

    def intercept_service(self, continuation, handler_call_details):
        return self.wrap(handler_call_details, continuation(handler_call_details))

    def wrap(self, details: grpc.HandlerCallDetails, handler: Any) -> Any:
        """``handler``, or one that refuses the call in its shape (see interceptors.Chain)."""
        if details.method.startswith(OPEN_SERVICES) or self._valid(details.invocation_metadata):
            return handler
        if handler is None:
            return None
        return self._deny[(handler.request_streaming, handler.response_streaming)]
