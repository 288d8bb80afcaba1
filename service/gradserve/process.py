"""What every server process shares, whether it serves alone or is the parent of workers:
the stop signals, the metrics HTTP server, the malloc settings. Nothing here imports grpc (nor,
until a function needs it, anything else of gradserve's: `restart_with_huge_pages` runs first)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradserve.config import Settings

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class StopSignals:
    """SIGTERM and SIGINT, awaited by the main thread on a pipe that the interpreter's C-level
    signal handler writes (`signal.set_wakeup_fd`), whichever thread the kernel picked.

    Nothing of ours runs in Python when a signal comes. The handler used to set a
    `threading.Event` that the main thread waited on; when the signal was handled while the
    main thread held that Event's (non-reentrant) lock, inside ``wait()``, the handler blocked
    on it for ever and the server ignored SIGTERM: rare with a 1 s wait, more likely under load
    (`tests/unit/test_stop_signals.py`). Install it first, in the main thread: a signal from
    then on is kept until `wait` reads it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # the C handler must never block
        self._previous = signal.set_wakeup_fd(self._write)
        self._handlers = {sig: signal.signal(sig, _noted) for sig in STOP_SIGNALS}

    def wait(self) -> signal.Signals:
        """Block until a stop signal arrives (or has arrived since install); which one."""
        while True:
            for number in os.read(self._read, 64):  # retried after EINTR (PEP 475)
                if number in STOP_SIGNALS:
                    return signal.Signals(number)

    def close(self) -> None:
        """The previous handlers and wakeup fd back."""
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


def _noted(signum: int, frame: object) -> None:
    """A Python handler must be set for the C handler to write the wakeup pipe; it has
    nothing left to do (and takes no lock)."""


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


# glibc's mallopt parameters (malloc.h) and the values a server process runs with.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_ARENAS = 2  # Python runs one thread at a time, so more arenas buy no speed
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit
MALLOC_TRIM_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
    """Set glibc's malloc up for a process that allocates and frees arrays of a few MiB on
    every call. Returns False where malloc is not glibc's. Call it before threads start (the
    workers inherit it); `python -m bench` calls it for all its contenders alike.

    - Arenas: by default each thread of the pool can get an arena of its own (up to 8 per
      core), and the tensor buffers freed in each stay there: a server answering 40 MiB
      requests one after another grew from 90 to 250 MiB of resident memory in 30 calls, and
      with 2 arenas stays at about 130 MiB (tests/load/test_faults.py).
    - Reuse: by default a freed top of the heap above 128 KiB goes back to the kernel, so the
      next call's arrays are faulted in page by page again: a third of the W4 gradient's CPU
      time (10.2 -> 6.7 ms with these thresholds). Arrays up to 32 MiB now come from the heap,
      and up to 256 MiB of free heap is kept for the next call; larger arrays are mapped and
      unmapped as before. Setting either threshold alone is slower than the default (it
      stops glibc's own adjustment of the other). MALLOC_MMAP_THRESHOLD_ or
      MALLOC_TRIM_THRESHOLD_ in the environment keeps glibc's reading of them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
        ok = bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
        if not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & os.environ.keys():
            ok = bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and ok
            ok = bool(mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)) and ok
        return ok
    except (OSError, AttributeError):
        return False


# glibc's malloc tunable that backs the buffers malloc maps (those over MALLOC_MMAP_THRESHOLD: a
# large tensor's bytes in protobuf, grpc and Python) with transparent huge pages, where the
# kernel's THP mode is "madvise" or "always". Without it each new buffer is faulted in 4 KiB at
# a time: a copy into a new 64 MiB one took 30 ms here, 7 ms with it (docs/benchmarks.md, R2).
# numpy asks for huge pages for its own large arrays already. glibc reads tunables only as a
# process starts, hence the restart.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"


def _tunables(env: Mapping[str, str]) -> list[str]:
    """The name=value tunables of GLIBC_TUNABLES in ``env``."""
    return [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]


def _huge_pages_setting(env: Mapping[str, str]) -> str | None:
    """The value GLIBC_TUNABLES in ``env`` gives glibc.malloc.hugetlb, if any."""
    for tunable in _tunables(env):
        name, _, value = tunable.partition("=")
        if name == HUGE_PAGES_TUNABLE:
            return value
    return None


def huge_page_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """``env`` with ``glibc.malloc.hugetlb=1`` added to GLIBC_TUNABLES; None where it does not
    apply: not glibc, or GLIBC_TUNABLES already sets it (``glibc.malloc.hugetlb=0`` keeps huge
    pages off)."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # another libc: no such name, or None
        return None
    if not glibc or _huge_pages_setting(env) is not None:
        return None
    added = [*_tunables(env), f"{HUGE_PAGES_TUNABLE}=1"]
    return {**env, "GLIBC_TUNABLES": ":".join(added)}


def restart_with_huge_pages() -> None:
    """Re-execute this program once (the same interpreter, command line and pid) with
    `huge_page_environment`, when it applies; otherwise, or if the exec fails, return. Call it
    first thing, from the program's entry point: nothing done before it survives."""
    env = huge_page_environment(os.environ)
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):  # then it runs on without them
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def huge_pages_on() -> bool:
    """Whether this process's malloc was started with huge pages for the buffers it maps."""
    return _huge_pages_setting(os.environ) in ("1", "2")
