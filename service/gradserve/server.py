"""The server process: a grpc.Server with gradserve.v1.Gradient, health and reflection.

``create_server(settings)`` builds and starts one (tests use it in-process);
``serve(settings)`` runs it until SIGTERM/SIGINT, then drains it gracefully.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gradserve.config import Settings
from gradserve.rpc import SERVICE_NAME, GradientServicer, add_to_server
from gradserve.rpc.auth import TokenAuthInterceptor, read_tokens

log = logging.getLogger("gradserve.server")

# The services whose health is reported: the whole server ("") and the Gradient service.
HEALTH_SERVICES = ("", SERVICE_NAME)


def default_interceptors(settings: Settings) -> list[grpc.ServerInterceptor]:
    """The interceptors every server gets, outermost first. Add metrics here."""
    interceptors: list[grpc.ServerInterceptor] = []
    if settings.auth_token_file is not None:
        interceptors.append(TokenAuthInterceptor(read_tokens(settings.auth_token_file)))
    return interceptors


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def create_server(
    settings: Settings,
    *,
    interceptors: Sequence[grpc.ServerInterceptor] | None = None,
    servicer: GradientServicer | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build, bind and start a server; returns (server, bound port, health servicer).

    ``interceptors`` defaults to ``default_interceptors(settings)``.
    """
    if interceptors is None:
        interceptors = default_interceptors(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.worker_threads, thread_name_prefix="gradserve-rpc"
        ),
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # One process owns its port; with --workers the processes share it on purpose.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
    )
    add_to_server(servicer or GradientServicer(settings), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    credentials = _credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for name in HEALTH_SERVICES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


def _start_metrics(settings: Settings) -> str:
    if settings.metrics_port == 0:
        return "metrics off"
    try:
        from gradserve.metrics import start_metrics_server
    except ImportError:
        return "metrics unavailable"
    start_metrics_server(settings.metrics_port, settings.host)
    return f"metrics on :{settings.metrics_port}"


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; then NOT_SERVING, drain for shutdown_grace, return 0."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.workers > 1:
        log.warning(
            "--workers %d: multi-process serving is not implemented yet; running one process",
            settings.workers,
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server, port, health_servicer = create_server(settings)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"gradserve serve: error: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        metrics = _start_metrics(settings)
    except OSError as exc:
        server.stop(None)
        print(f"gradserve serve: error: metrics port: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"gradserve listening on {settings.host}:{port} ({metrics})", flush=True)
    while not stop.wait(3600):
        pass
    log.info("shutting down: draining for up to %ss", settings.shutdown_grace)
    health_servicer.enter_graceful_shutdown()
    server.stop(settings.shutdown_grace).wait()
    return 0
