"""Registering the Gradient service so that a garbage payload is INVALID_ARGUMENT.

grpcio answers INTERNAL ("Exception deserializing request!") when a request deserializer
raises, before any handler runs. So the handlers are built here, from the service descriptor,
with a deserializer that never raises: a payload that does not parse becomes a ``BadPayload``,
which ``errors.rpc_method`` answers with INVALID_ARGUMENT. Otherwise this does what the
generated ``add_GradientServicer_to_server`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from gradserve_client.proto import gradient_service_pb2

from gradserve.rpc import wire

SERVICE = gradient_service_pb2.DESCRIPTOR.services_by_name["Gradient"]
SERVICE_NAME = SERVICE.full_name  # "gradserve.v1.Gradient"

# grpc's RpcMethodHandler constructors by (request streaming, response streaming).
HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class BadPayload:
    """Stands in for a request message whose bytes did not parse."""

    __slots__ = ("error", "message_type")

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error

    def describe(self) -> str:
        return f"the request is not a valid {self.message_type} message ({self.error})"


def lenient_deserializer(cls: Any) -> Callable[[bytes], Any]:
    """``cls.FromString``, returning a BadPayload instead of raising."""
    name = cls.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # DecodeError, or anything a broken payload provokes
            return BadPayload(name, exc)

    return deserialize


def serialize(message: Any) -> bytes:
    """A response's bytes: a protobuf message, or one of ``wire``'s pre-encoded responses."""
    return message.SerializeToString()


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """One RpcMethodHandler per RPC of the service, bound to ``servicer``'s methods."""
    handlers = {}
    for method in SERVICE.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        kind = HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        deserializer = lenient_deserializer(request_cls)
        if method.name == "Evaluate":  # large payloads read in place (see wire.py)
            deserializer = wire.evaluate_request_deserializer(deserializer)
        elif method.name == "PutDataset":
            deserializer = wire.dataset_chunk_deserializer(deserializer)
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=deserializer,
            response_serializer=serialize,
        )
    return handlers


def add_to_server(servicer: Any, server: grpc.Server) -> None:
    """Register ``servicer`` as gradserve.v1.Gradient on ``server``."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
