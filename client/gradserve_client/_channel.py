"""Channels: `TLS`, the channel options (message limits, gRPC's retry policy, load balancing),
the call metadata, and `ChannelClient`, the constructor `Client` and `AsyncClient` share, with
the channels that the shares of a parallel call go over."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from ._graphs import GraphIds
from ._result_size import DEFAULT_MAX_RESULT_BYTES, ResultBudget

if TYPE_CHECKING:
    from ._methods import Rpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SERVICE = "gradserve.v1.Gradient"
#: A channel option: channels to one address share one connection by default (gRPC's global
#: subchannel pool), so several Clients in one process reach one ``--workers`` process; with
#: ``options=[OWN_CONNECTION]`` a Client opens a TCP connection of its own.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS settings for `Client` and `AsyncClient`.

    Each of ``ca`` (the CA certificates to trust; None: the system's), ``cert`` and ``key``
    (a client certificate chain and its private key, for mutual TLS) is a file path or the PEM
    bytes. ``server_name`` overrides the name checked against the server's certificate.
    """

    ca: str | os.PathLike[str] | bytes | None = None
    cert: str | os.PathLike[str] | bytes | None = None
    key: str | os.PathLike[str] | bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The ``grpc.ssl_channel_credentials`` of these settings."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: give both cert and key (mutual TLS), or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca),
            private_key=_pem(self.key),
            certificate_chain=_pem(self.cert),
        )


def _pem(value: str | os.PathLike[str] | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def channel_options(
    *,
    retries: int,
    max_message_bytes: int,
    load_balancing: str | None,
    tls: TLS | None,
    extra: Sequence[tuple[str, Any]] = (),
) -> list[tuple[str, Any]]:
    """The channel options: message limits, and a service config with a retry policy for
    UNAVAILABLE (gRPC's own retries, with exponential backoff) and the load-balancing policy."""
    config: dict[str, Any] = {}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE}, {"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    # gRPC caps maxAttempts at 5.
                    "maxAttempts": min(retries + 1, 5),
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    if load_balancing:
        config["loadBalancingConfig"] = [{load_balancing: {}}]
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
    ]
    if config:
        options.append(("grpc.service_config", json.dumps(config)))
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    options.extend(extra)
    return options


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The per-call metadata: the bearer token, if any."""
    return (("authorization", f"Bearer {token}"),) if token else None


def open_channel(
    target: str,
    tls: TLS | None,
    options: list[tuple[str, Any]],
    interceptors: Sequence[Any],
    *,
    asyncio: bool,
) -> Any:
    """A ``grpc.aio`` channel (``asyncio``) or a ``grpc`` channel, with the interceptors."""
    credentials = None if tls is None else tls.credentials()
    if asyncio:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options, interceptors=interceptors or None)
        return grpc.aio.secure_channel(
            target, credentials, options, interceptors=interceptors or None
        )
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


class ChannelClient:
    """What `Client` and `AsyncClient` share: the constructor (channel options, metadata, the
    graph-id cache) and the multicallables of the methods, made once per client."""

    #: Whether the channel is a ``grpc.aio`` one (set by each client class).
    _ASYNCIO = False

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TLS | None = None,
        timeout: float | None = None,
        retries: int = 4,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        load_balancing: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Any] = (),
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        opts = channel_options(
            retries=retries,
            max_message_bytes=max_message_bytes,
            load_balancing=load_balancing,
            tls=tls,
            extra=options,
        )
        self._channel = open_channel(target, tls, opts, interceptors, asyncio=self._ASYNCIO)
        self._open_lane = functools.partial(
            open_channel, target, tls, [*opts, OWN_CONNECTION], interceptors, asyncio=self._ASYNCIO
        )
        # Channels of their own for the shares of parallel calls, and the server process each
        # reached (AsyncClient._share_lanes).
        self._lanes: list[Any] = []
        self._lane_processes: list[str] = []
        self._balanced = bool(load_balancing)
        self._features: frozenset[str] | None = None  # the server's, once asked
        self.target = target
        self.timeout = timeout
        self._metadata = call_metadata(token)
        self._graph_ids = GraphIds()
        self._results = ResultBudget(max_result_bytes)
        self._multicallables: dict[tuple[Rpc, int | None], Any] = {}

    def _multicallable(self, rpc: Rpc, lane: int | None = None) -> Any:
        """The multicallable of an RPC on the client's channel (or on lane ``lane``), made on
        first use."""
        callable_ = self._multicallables.get((rpc, lane))
        if callable_ is None:
            channel = self._channel if lane is None else self._lanes[lane]
            callable_ = self._multicallables[rpc, lane] = multicallable(channel, rpc)
        return callable_


def multicallable(channel: Any, rpc: Rpc) -> Any:
    """The channel's multicallable of an RPC."""
    return getattr(channel, rpc.kind)(
        rpc.path,
        request_serializer=rpc.serialize,
        response_deserializer=rpc.deserialize,
        _registered_method=True,
    )
