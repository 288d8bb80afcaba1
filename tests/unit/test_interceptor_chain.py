"""interceptors.Chain: the server's interceptors applied in one call, outermost first, as
grpc's own pipeline of interceptors would apply them."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
from gradserve.rpc.interceptors import Chain
from grpc._interceptor import service_pipeline  # grpc's own chaining, to compare with


class Tag(grpc.ServerInterceptor):
    """Wraps a handler (a list of tags) in its own tag; ``None`` stays ``None``."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def intercept_service(self, continuation, handler_call_details):
        return self.wrap(handler_call_details, continuation(handler_call_details))

    def wrap(self, details, handler):
        return None if handler is None else [self.tag, *handler]


DETAILS = SimpleNamespace(method="/pkg.Service/Method", invocation_metadata=())


def test_the_chain_wraps_outermost_first_as_grpc_s_pipeline_does() -> None:
    interceptors = [Tag("metrics"), Tag("auth"), Tag("limit")]
    chained = Chain(interceptors).intercept_service(lambda d: ["handler"], DETAILS)
    assert chained == ["metrics", "auth", "limit", "handler"]
    assert chained == service_pipeline(interceptors).execute(lambda d: ["handler"], DETAILS)


def test_an_unknown_method_stays_unknown() -> None:
    assert Chain([Tag("a"), Tag("b")]).intercept_service(lambda d: None, DETAILS) is None


def test_the_continuation_is_asked_once_with_the_call_s_details() -> None:
    asked = []
    Chain([Tag("a"), Tag("b"), Tag("c")]).intercept_service(
        lambda d: asked.append(d) or ["h"], DETAILS
    )
    assert asked == [DETAILS]
