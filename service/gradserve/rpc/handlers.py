"""Registering the Gradient service: what the generated ``add_GradientServicer_to_server``
does, with Evaluate's large requests read in place and pre-encoded responses written as they
are (see wire.py).

A payload that does not parse is answered INVALID_ARGUMENT, for this service and every other,
by ``interceptors.MetricsInterceptor``, which wraps every request deserializer (grpcio alone
would answer INTERNAL, "Exception deserializing request!", before any handler runs).
"""

from __future__ import annotations

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


def serialize(message: Any) -> bytes:
    """A response's bytes: a protobuf message, or one of ``wire``'s pre-encoded responses."""
    return message.SerializeToString()


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """One RpcMethodHandler per RPC of the service, bound to ``servicer``'s methods."""
    handlers = {}
    for method in SERVICE.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        kind = HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        deserializer = request_cls.FromString
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
