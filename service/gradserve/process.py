"""What every server process shares, whether it serves alone or is the parent of workers:
the stop signals, the metrics HTTP server, the malloc setting. Nothing here imports grpc."""

from __future__ import annotations

import contextlib
import ctypes
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


# glibc's mallopt parameter (malloc.h), and the arenas a server process needs: Python runs one
# thread at a time, so more arenas buy no speed.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Limit glibc's malloc to MALLOC_ARENAS arenas. By default each thread of the pool can get
    an arena of its own (up to 8 per core), and the tensor buffers freed in each stay there:
    a server answering 40 MiB requests one after another grew from 90 to 250 MiB of resident
    memory in 30 calls, and with 2 arenas stays at about 130 MiB (tests/load/test_faults.py).
    Call it before threads start (the workers inherit it). False where malloc is not glibc's."""
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):
        return False
