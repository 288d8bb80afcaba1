"""The server process: a grpc.Server with gradserve.v1.Gradient, health and reflection.

``create_server(settings)`` builds and starts one (tests use it in-process);
``serve(settings)`` runs it until SIGTERM/SIGINT, then drains it gracefully. ``--workers``
> 1 is ``gradserve.workers``, whose worker processes each run ``serve``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gradserve import blas
from gradserve.config import Settings
from gradserve.process import StopSignals, huge_pages_on, start_metrics, stop_signals_blocked
from gradserve.rpc import SERVICE_NAME, GradientServicer, add_to_server
from gradserve.rpc.auth import TokenAuthInterceptor, read_tokens
from gradserve.rpc.interceptors import Chain, CountingThreadPool, Wrapping

log = logging.getLogger("gradserve.server")

# The services whose health is reported: the whole server ("") and the Gradient service.
HEALTH_SERVICES = ("", SERVICE_NAME)


# Threads beyond --max-concurrent-rpcs: for health probes (never limited) and for answering
# refused calls, so that neither waits behind admitted RPCs.
HEADROOM = 16


def default_interceptors(settings: Settings) -> list[Wrapping]:
    """The interceptors every server gets, outermost first: metrics and access logs (so that
    calls refused by the next two are counted), bearer tokens, the concurrency limit."""
    from gradserve.rpc.interceptors import ConcurrencyLimitInterceptor, MetricsInterceptor

    interceptors: list[Wrapping] = [MetricsInterceptor()]
    if settings.auth_token_file is not None:
        interceptors.append(TokenAuthInterceptor(read_tokens(settings.auth_token_file)))
    if settings.max_concurrent_rpcs:
        interceptors.append(ConcurrencyLimitInterceptor(settings.max_concurrent_rpcs))
    return interceptors


def thread_pool_size(settings: Settings) -> int:
    """Threads of the server's pool: room for every admitted RPC plus HEADROOM, so an admitted
    call never waits in a queue (at least --worker-threads)."""
    if not settings.max_concurrent_rpcs:
        return settings.worker_threads
    return max(settings.worker_threads, settings.max_concurrent_rpcs + HEADROOM)


def _wire_metrics(settings: Settings, servicer: GradientServicer) -> None:
    from gradserve import metrics

    hooks = [  # a graph lookup comes with every RPC: recorded as the interceptor records
        (
            servicer.graph_cache,
            metrics.recorder(metrics.GRAPH_CACHE_HITS),
            metrics.recorder(metrics.GRAPH_CACHE_MISSES),
        ),
        (servicer.dataset_cache, metrics.DATASET_CACHE_HITS, metrics.DATASET_CACHE_MISSES),
    ]
    for cache, hits, misses in hooks:
        if hits.inc not in cache.on_hit:
            cache.on_hit.append(hits.inc)
        if misses.inc not in cache.on_miss:
            cache.on_miss.append(misses.inc)
    metrics.MAX_CONCURRENT_RPCS.set(settings.max_concurrent_rpcs)


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
    interceptors: Sequence[Wrapping] | None = None,
    servicer: GradientServicer | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build, bind and start a server; returns (server, bound port, health servicer).

    ``interceptors`` defaults to ``default_interceptors(settings)``; they run as one
    (``interceptors.Chain``), outermost first. The graph and dataset caches' hit and miss
    hooks and ``gradserve_max_concurrent_rpcs`` are wired to the metrics.
    """
    if interceptors is None:
        interceptors = default_interceptors(settings)
    servicer = servicer or GradientServicer(settings)
    _wire_metrics(settings, servicer)
    pool = thread_pool_size(settings)
    server = grpc.server(
        CountingThreadPool(max_workers=pool, thread_name_prefix="gradserve-rpc"),
        interceptors=[Chain(interceptors)] if interceptors else [],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # One process owns its port; with --workers the processes share it on purpose.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
        # A backstop: ConcurrencyLimitInterceptor refuses (and counts) calls above the limit;
        # grpc refuses, uncounted, only what would not find a free thread.
        maximum_concurrent_rpcs=pool if settings.max_concurrent_rpcs else None,
    )
    add_to_server(servicer, server)
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


def _fail(message: str, ready: int | None) -> int:
    if ready is not None:
        os.write(ready, message.encode() + b"\n")
        os.close(ready)
    print(message, file=sys.stderr, flush=True)
    return 1


def serve(settings: Settings, *, worker: bool = False, ready: int | None = None) -> int:
    """Run one server process until SIGTERM or SIGINT; then NOT_SERVING, drain for
    shutdown_grace, return 0.

    ``worker``: a child of ``gradserve.workers.serve_workers`` (which ``--workers`` > 1 runs
    instead): no banner and no metrics server (the parent serves them); it writes one line to
    the pipe ``ready`` once it serves, or the error that stopped it.
    """
    stop = StopSignals()
    try:
        return _serve(settings, stop, worker, ready)
    finally:
        stop.close()


def _serve(settings: Settings, stop: StopSignals, worker: bool, ready: int | None) -> int:
    with stop_signals_blocked():
        blas_threads = blas.limit_threads(blas.planned_threads(settings))  # before serving
        try:
            server, port, health_servicer = create_server(settings)
        except (OSError, RuntimeError, ValueError) as exc:
            return _fail(f"gradserve serve: error: {exc}", ready)
    try:
        metrics = "" if worker else start_metrics(settings)
    except OSError as exc:
        server.stop(None)
        return _fail(f"gradserve serve: error: metrics port: {exc}", ready)
    if ready is not None:
        os.write(ready, b"ok\n")
        os.close(ready)
    if not worker:
        banner = f"{settings.host}:{port} ({metrics}; BLAS threads: {blas_threads})"
        print(f"gradserve listening on {banner}", flush=True)
    huge_pages = "on" if huge_pages_on() else "off"
    log.info(
        "serving on %s:%s, BLAS threads: %d, malloc huge pages: %s",
        settings.host,
        port,
        blas_threads,
        huge_pages,
    )
    signum = stop.wait()
    log.info("%s: shutting down: draining for up to %ss", signum.name, settings.shutdown_grace)
    health_servicer.enter_graceful_shutdown()
    server.stop(settings.shutdown_grace).wait()
    log.info("stopped")
    return 0
