"""Prometheus metric definitions for gradserve.

This module only *defines* the metrics and serves them; the gRPC interceptor in
``gradserve.rpc`` records them. It imports nothing from grpc or protobuf.

Names follow the Prometheus naming rules: a ``gradserve_`` prefix, base units
(seconds, bytes), ``_total`` on counters, histograms for latency and sizes.

Single process (default)
    Every metric lives in :data:`REGISTRY`, a registry private to this module that
    also carries the default process, platform and GC collectors.
    ``generate_latest(REGISTRY)`` gives the exposition text.

Multiprocess mode (``gradserve serve --workers N`` with N > 1)
    prometheus-client switches to multiprocess mode when the environment variable
    ``PROMETHEUS_MULTIPROC_DIR`` is set *before this module is imported*: every
    process then writes its values to mmap'd files in that directory, and the
    exposition reads all the files through a ``MultiProcessCollector`` attached to a
    fresh ``CollectorRegistry`` (see :func:`exposition_registry`). What the parent
    process (the one that forks the workers) must do:

    1. Create the directory and make it empty before any worker starts. Files left
       by an earlier run (a container restart keeps a Kubernetes emptyDir) would be
       added to the new run's values. :func:`clean_multiproc_dir` removes every file
       there except the calling process's own, so it is safe even after import.
    2. Set ``PROMETHEUS_MULTIPROC_DIR`` in the environment before forking (from the
       start-up script or before ``os.fork``/``multiprocessing`` start), so the
       children inherit it; setting it later from Python does not reach them.
    3. Serve ``/metrics`` from one process only (the parent), with
       :func:`start_metrics_server`.
    4. When a worker exits, call :func:`mark_process_dead` with its pid, so that the
       ``live*`` gauges (in-flight requests, active training streams) forget it.

    Limitations of multiprocess mode (prometheus-client's): custom collectors do
    not aggregate, so the ``process_*`` metrics describe only the process that
    serves ``/metrics``; gauges need a ``multiprocess_mode`` (set below); label
    removal is not supported.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gradserve import __version__

__all__ = [
    "BUILD_INFO",
    "BYTES_BUCKETS",
    "DATASET_CACHE_HITS",
    "DATASET_CACHE_MISSES",
    "DURATION_BUCKETS",
    "GRAPH_CACHE_HITS",
    "GRAPH_CACHE_MISSES",
    "INFLIGHT_REQUESTS",
    "JACOBIAN_ELEMENTS",
    "JACOBIAN_ELEMENTS_BUCKETS",
    "MAX_CONCURRENT_RPCS",
    "MULTIPROC_ENV",
    "REFUSALS",
    "REGISTRY",
    "REQUESTS",
    "REQUEST_DURATION",
    "REQUEST_MESSAGE_BYTES",
    "RESPONSE_MESSAGE_BYTES",
    "TRAIN_ACTIVE_STREAMS",
    "TRAIN_STEPS",
    "VERSION",
    "clean_multiproc_dir",
    "exposition_registry",
    "is_multiprocess",
    "mark_process_dead",
    "start_metrics_server",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# 100 µs .. 60 s, roughly 1-2.5-5 per decade: an Evaluate of a tiny graph takes
# ~100 µs, a large batched Jacobian or a training stream can take up to a minute.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# 64 B .. 64 MiB in powers of four (gRPC's default max message is 4 MiB).
BYTES_BUCKETS: tuple[float, ...] = tuple(float(64 * 4**i) for i in range(11))
# Number of elements of a returned Jacobian (rows x columns), 1 .. 1e8.
JACOBIAN_ELEMENTS_BUCKETS: tuple[float, ...] = tuple(float(10**i) for i in range(9))


def is_multiprocess() -> bool:
    """True when prometheus-client runs in multiprocess mode (env var set)."""
    return bool(os.environ.get(MULTIPROC_ENV))


VERSION = __version__


def _add_default_collectors(registry: CollectorRegistry) -> None:
    """The process, platform and GC collectors, describing the calling process."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


# Private registry: the metric objects register here, never in prometheus_client's
# global REGISTRY, so importing this module twice in tests or embedding gradserve in
# another process never collides.
REGISTRY = CollectorRegistry(auto_describe=True)
if not is_multiprocess():
    _add_default_collectors(REGISTRY)

_R = REGISTRY

REQUESTS = Counter(
    "gradserve_requests_total",
    "RPCs handled, by full method name and gRPC status code (OK, INVALID_ARGUMENT, ...).",
    ["method", "code"],
    registry=_R,
)
REQUEST_DURATION = Histogram(
    "gradserve_request_duration_seconds",
    "RPC latency in seconds, from the call's arrival to its last response message.",
    ["method"],
    buckets=DURATION_BUCKETS,
    registry=_R,
)
REFUSALS = Counter(
    "gradserve_refusals_total",
    "RPCs refused with RESOURCE_EXHAUSTED, by method and by the limit that refused them: the"
    " setting (max_concurrent_rpcs: load shedding; max_request_bytes, max_jacobian_elements, ...:"
    " the request's size) or out_of_memory.",
    ["method", "limit"],
    registry=_R,
)
INFLIGHT_REQUESTS = Gauge(
    "gradserve_inflight_requests",
    "RPCs being handled right now (streams included).",
    multiprocess_mode="livesum",
    registry=_R,
)
MAX_CONCURRENT_RPCS = Gauge(
    "gradserve_max_concurrent_rpcs",
    "The configured --max-concurrent-rpcs of each server process (summed over the "
    "live worker processes); 0 when unlimited. Saturation = in-flight / this.",
    multiprocess_mode="livesum",
    registry=_R,
)
GRAPH_CACHE_HITS = Counter(
    "gradserve_graph_cache_hits_total",
    "Lookups of a compiled expression graph found in the cache.",
    registry=_R,
)
GRAPH_CACHE_MISSES = Counter(
    "gradserve_graph_cache_misses_total",
    "Lookups of a compiled expression graph not found in the cache.",
    registry=_R,
)
DATASET_CACHE_HITS = Counter(
    "gradserve_dataset_cache_hits_total",
    "Lookups of an uploaded training data set found in the cache.",
    registry=_R,
)
DATASET_CACHE_MISSES = Counter(
    "gradserve_dataset_cache_misses_total",
    "Lookups of an uploaded training data set not found in the cache.",
    registry=_R,
)
JACOBIAN_ELEMENTS = Histogram(
    "gradserve_jacobian_elements",
    "Number of elements (rows x columns) of each Jacobian computed.",
    buckets=JACOBIAN_ELEMENTS_BUCKETS,
    registry=_R,
)
TRAIN_STEPS = Counter(
    "gradserve_train_steps_total",
    "SGD steps run and streamed back by Train.",
    registry=_R,
)
TRAIN_ACTIVE_STREAMS = Gauge(
    "gradserve_train_active_streams",
    "Train streams open right now.",
    multiprocess_mode="livesum",
    registry=_R,
)
REQUEST_MESSAGE_BYTES = Histogram(
    "gradserve_request_message_bytes",
    "Serialized size in bytes of each request message received.",
    ["method"],
    buckets=BYTES_BUCKETS,
    registry=_R,
)
RESPONSE_MESSAGE_BYTES = Histogram(
    "gradserve_response_message_bytes",
    "Serialized size in bytes of each response message sent.",
    ["method"],
    buckets=BYTES_BUCKETS,
    registry=_R,
)
BUILD_INFO = Gauge(
    "gradserve_build_info",
    "Always 1; the version label tells which gradserve build is running.",
    ["version"],
    # Every process reports 1: "max" keeps one series without a pid label.
    multiprocess_mode="max",
    registry=_R,
)
BUILD_INFO.labels(version=VERSION).set(1)

del _R


def exposition_registry() -> CollectorRegistry:
    """The registry to expose on ``/metrics``.

    Single process: :data:`REGISTRY`. Multiprocess mode: a fresh registry whose
    ``MultiProcessCollector`` sums the files of every process, plus the default
    process collectors of the calling (exporting) process. A fresh registry is
    needed because the metric objects are also registered in :data:`REGISTRY`, and
    exposing both would duplicate them.
    """
    if not is_multiprocess():
        return REGISTRY
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)
    _add_default_collectors(registry)
    return registry


def start_metrics_server(port: int, host: str) -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread of this process.

    In multiprocess mode call it from the parent process only.
    """
    start_http_server(port, addr=host, registry=exposition_registry())


def clean_multiproc_dir(path: str | os.PathLike[str] | None = None) -> None:
    """Create the multiprocess directory and remove files of earlier processes.

    Keeps the calling process's own files, so it is safe to call after this module
    was imported. Call it in the parent, before forking workers.
    """
    directory = Path(path if path is not None else os.environ[MULTIPROC_ENV])
    directory.mkdir(parents=True, exist_ok=True)
    own = f"_{os.getpid()}.db"
    for f in directory.glob("*.db"):
        if not f.name.endswith(own):
            f.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """Tell multiprocess mode that worker ``pid`` has exited (no-op otherwise)."""
    if is_multiprocess():
        _multiprocess.mark_process_dead(pid)
