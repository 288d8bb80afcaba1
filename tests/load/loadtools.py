"""Helpers of the load and fault tests, against ``python -m gradserve serve`` subprocesses on
loopback.

Durations are short by default, so that the directory runs in ``make test`` in well under a
minute or two; ``make soak`` sets ``LOAD_SECONDS`` for the long versions. Every loop is bounded
in count and time, and all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: The length of the timed phase of each load test, in seconds (``make soak`` raises it).
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "0") or 0)
#: The server's environment: one BLAS thread, as the deployment runs it.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def duration(short: float) -> float:
    """``short`` seconds, or LOAD_SECONDS when it is set (the soak)."""
    return LOAD_SECONDS or short


@dataclass(frozen=True)
class Stats:
    rss: int  # bytes
    threads: int
    cpu: float  # user + system seconds


def stats(pid: int) -> Stats:
    """A process's resident memory, threads and CPU time (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * _PAGE
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 of proc(5): utime is 14, stime 15, num_threads 20
    return Stats(rss, int(fields[17]), (int(fields[11]) + int(fields[12])) / _TICKS)
