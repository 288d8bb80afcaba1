"""What every server process shares, whether it serves alone or is the parent of workers: the
stop signals and the metrics HTTP server. Nothing here imports grpc, so the parent of
``--workers`` can use it and still fork workers that have never seen grpc."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from gradserve.config import Settings

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGTERM and SIGINT in this thread while threads are started, so that those threads
    (grpc's, the pool's, the metrics server's) inherit the mask and the kernel delivers the
    signals to the main thread: Python runs signal handlers only there, and a signal delivered
    to another thread would not wake a main thread blocked in a wait."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start_metrics(settings: Settings) -> str:
    """Serve ``/metrics`` on ``--metrics-port`` from a thread (signals blocked in it); returns
    the banner's words for it. Raises OSError if the port cannot be bound."""
    if settings.metrics_port == 0:
        return "metrics off"
    from gradserve.metrics import start_metrics_server

    with stop_signals_blocked():
        start_metrics_server(settings.metrics_port, settings.host)
    return f"metrics on :{settings.metrics_port}"
