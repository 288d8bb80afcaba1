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

Recording from the hot path
    prometheus-client takes a lock for every update of a value (a histogram's sum and its
    bucket, found by a linear scan of the bounds, are two), which an RPC pays about ten times.
    The per-RPC metrics (`HOT_METRICS`) are therefore recorded through :func:`recorder`: in one
    process each thread adds to tallies of its own, without a lock, and collecting
    :data:`REGISTRY` (a scrape, ``get_sample_value``) first adds what the tallies gained since
    the last collection to the prometheus-client values, which then expose them as before. In
    multiprocess mode a recorder is the prometheus-client value itself: the files the exposing
    process reads are written as the values change.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar, overload

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gradserve import __version__

M = TypeVar("M", bound=MetricWrapperBase)

__all__ = [
    "BUILD_INFO",
    "BYTES_BUCKETS",
    "DATASET_CACHE_HITS",
    "DATASET_CACHE_MISSES",
    "DURATION_BUCKETS",
    "GRAPH_CACHE_HITS",
    "GRAPH_CACHE_MISSES",
    "HOT_METRICS",
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
    "CounterRecorder",
    "HistogramRecorder",
    "clean_multiproc_dir",
    "exposition_registry",
    "is_multiprocess",
    "mark_process_dead",
    "recorder",
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


class _Tallies:
    """Every thread's tallies: running totals by slot, each slot standing for one
    prometheus-client value (a counter's, a histogram's sum or one of its buckets).

    Only the owning thread writes a tally, so adding to it needs no lock; `fold` adds what each
    slot gained since the last fold to its value, under the lock. A thread's tally is dropped
    once it has ended and been folded a last time.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._values: list[Callable[[float], None]] = []  # slot -> adds an amount to its value
        # (thread, its tally, the totals of that tally already folded)
        self._threads: list[tuple[threading.Thread, defaultdict[int, float], dict[int, float]]] = []

    def slots(self, values: Iterable[Callable[[float], None]]) -> int:
        """The first of consecutive new slots, one per value adder."""
        with self._lock:
            first = len(self._values)
            self._values.extend(values)
            return first

    def mine(self) -> defaultdict[int, float]:
        """The calling thread's tally."""
        try:
            return self._local.tally
        except AttributeError:
            tally: defaultdict[int, float] = defaultdict(int)
            with self._lock:
                self._threads.append((threading.current_thread(), tally, {}))
            self._local.tally = tally
            return tally

    def fold(self) -> None:
        """Add to every value what its slot gained since the last fold."""
        with self._lock:
            kept = []
            for thread, tally, folded in self._threads:
                ended = not thread.is_alive()  # before the copy: then it holds every update
                for slot, total in tally.copy().items():  # one C call: atomic under the GIL
                    gained = total - folded.get(slot, 0)
                    if gained:
                        self._values[slot](gained)
                        folded[slot] = total
                if not ended:
                    kept.append((thread, tally, folded))
            self._threads = kept


_TALLIES = _Tallies()


class CounterRecorder(Protocol):
    """Updates a counter (``inc``) or a gauge (``inc``, ``dec``) from the hot path."""

    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class HistogramRecorder(Protocol):
    """Updates a histogram from the hot path."""

    def observe(self, amount: float) -> None: ...


class _TallyCounter:
    """A counter or gauge value updated through the calling thread's tally."""

    __slots__ = ("_slot",)

    def __init__(self, value: Counter | Gauge) -> None:
        self._slot = _TALLIES.slots([value.inc])

    def inc(self, amount: float = 1) -> None:
        _TALLIES.mine()[self._slot] += amount

    def dec(self, amount: float = 1) -> None:
        _TALLIES.mine()[self._slot] -= amount


class _TallyHistogram:
    """A histogram value updated through the calling thread's tally: one slot for its sum, then
    one per bucket (not cumulative, as prometheus-client keeps them)."""

    __slots__ = ("_bounds", "_sum")

    def __init__(self, value: Histogram) -> None:
        # prometheus-client's own fields: a histogram has no public way to add n observations
        # to one bucket. tests/unit/test_metrics_recorder.py checks what they expose.
        self._bounds = tuple(value._upper_bounds)  # ascending, +Inf last
        self._sum = _TALLIES.slots([value._sum.inc, *(b.inc for b in value._buckets)])

    def observe(self, amount: float) -> None:
        tally = _TALLIES.mine()
        # The first bound >= amount: prometheus-client's bucket for it.
        tally[self._sum + 1 + bisect.bisect_left(self._bounds, amount)] += 1
        tally[self._sum] += amount


_recorders: dict[int, tuple[MetricWrapperBase, CounterRecorder | HistogramRecorder]] = {}
_recorders_lock = threading.Lock()


@overload
def recorder(value: Histogram) -> HistogramRecorder: ...
@overload
def recorder(value: Counter | Gauge) -> CounterRecorder: ...
def recorder(value: Counter | Gauge | Histogram) -> CounterRecorder | HistogramRecorder:
    """How the hot path updates ``value`` (an unlabelled metric of `HOT_METRICS`, or a child
    from its ``labels()``): through per-thread tallies in one process, the value itself in
    multiprocess mode. One recorder per value, however often asked."""
    if is_multiprocess():
        return value
    with _recorders_lock:
        known = _recorders.get(id(value))
        if known is None or known[0] is not value:
            made = _TallyHistogram(value) if isinstance(value, Histogram) else _TallyCounter(value)
            known = _recorders[id(value)] = (value, made)
        return known[1]


class _Folding(Collector):
    """Collects a hot metric after folding the tallies into its values."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        self.metric = metric

    def describe(self) -> Iterable:
        return self.metric.describe()

    def collect(self) -> Iterable:
        _TALLIES.fold()
        return self.metric.collect()


def _hot(metric: M) -> M:
    """Register a metric that the hot path updates through `recorder`."""
    REGISTRY.register(_Folding(metric))
    return metric


_R = REGISTRY

REQUESTS = _hot(
    Counter(
        "gradserve_requests_total",
        "RPCs handled, by full method name and gRPC status code (OK, INVALID_ARGUMENT, ...).",
        ["method", "code"],
        registry=None,
    )
)
REQUEST_DURATION = _hot(
    Histogram(
        "gradserve_request_duration_seconds",
        "RPC latency in seconds, from the call's arrival to its last response message.",
        ["method"],
        buckets=DURATION_BUCKETS,
        registry=None,
    )
)
REFUSALS = Counter(
    "gradserve_refusals_total",
    "RPCs refused with RESOURCE_EXHAUSTED, by method and by the limit that refused them: the"
    " setting (max_concurrent_rpcs: load shedding; max_request_bytes, max_jacobian_elements, ...:"
    " the request's size) or out_of_memory.",
    ["method", "limit"],
    registry=_R,
)
INFLIGHT_REQUESTS = _hot(
    Gauge(
        "gradserve_inflight_requests",
        "RPCs being handled right now (streams included).",
        multiprocess_mode="livesum",
        registry=None,
    )
)
MAX_CONCURRENT_RPCS = Gauge(
    "gradserve_max_concurrent_rpcs",
    "The configured --max-concurrent-rpcs of each server process (summed over the "
    "live worker processes); 0 when unlimited. Saturation = in-flight / this.",
    multiprocess_mode="livesum",
    registry=_R,
)
GRAPH_CACHE_HITS = _hot(
    Counter(
        "gradserve_graph_cache_hits_total",
        "Lookups of a compiled expression graph found in the cache.",
        registry=None,
    )
)
GRAPH_CACHE_MISSES = _hot(
    Counter(
        "gradserve_graph_cache_misses_total",
        "Lookups of a compiled expression graph not found in the cache.",
        registry=None,
    )
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
REQUEST_MESSAGE_BYTES = _hot(
    Histogram(
        "gradserve_request_message_bytes",
        "Serialized size in bytes of each request message received.",
        ["method"],
        buckets=BYTES_BUCKETS,
        registry=None,
    )
)
RESPONSE_MESSAGE_BYTES = _hot(
    Histogram(
        "gradserve_response_message_bytes",
        "Serialized size in bytes of each response message sent.",
        ["method"],
        buckets=BYTES_BUCKETS,
        registry=None,
    )
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

# What the hot path updates through `recorder` (every RPC: the interceptor; every graph lookup).
HOT_METRICS = (
    REQUESTS,
    REQUEST_DURATION,
    INFLIGHT_REQUESTS,
    GRAPH_CACHE_HITS,
    GRAPH_CACHE_MISSES,
    REQUEST_MESSAGE_BYTES,
    RESPONSE_MESSAGE_BYTES,
)

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
