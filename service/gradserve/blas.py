"""How many threads the BLAS libraries of a server process use (threadpoolctl).

numpy's BLAS starts one thread per core by default, and each RPC thread that multiplies
matrices wakes them all: with the pool's threads computing at once, the cores are
oversubscribed and a Jacobian that takes 5 ms alone took 12-31 ms next to another busy process
(issue 11). So each process limits its BLAS to its share of the cores: RPC threads that compute
at once x BLAS threads <= cores.
"""

from __future__ import annotations

import os

from gradserve.config import Settings


def _cores() -> int:
    """The cores this process may run on (its affinity mask, as `taskset` sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def planned_threads(settings: Settings) -> int:
    """``--blas-threads``, or if it is 0 the cores of one process (of ``--workers``) divided
    among the RPCs that compute at once (``--max-concurrent-rpcs``, or the pool's
    ``--worker-threads`` when that is unlimited), at least 1."""
    if settings.blas_threads:
        return settings.blas_threads
    computing = settings.max_concurrent_rpcs or settings.worker_threads
    return max(1, _cores() // settings.workers // computing)


def limit_threads(threads: int) -> int:
    """Limit every BLAS library of this process to ``threads`` threads, for good; returns
    `current_threads()`. threadpoolctl limits only the libraries already loaded, so numpy's
    and scipy's (scipy.linalg brings its own OpenBLAS) are loaded first."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    return current_threads()


def current_threads() -> int:
    """The most threads a loaded BLAS library of this process may use now, read from the
    libraries themselves (threadpoolctl); 0 if none is loaded."""
    from threadpoolctl import threadpool_info

    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(blas, default=0)
