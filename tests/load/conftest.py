"""Fixtures of the load and fault tests (helpers: ``loadtools.py``).

- ``serve(*flags)``: a ``python -m gradserve serve`` subprocess (``wire.ServerProcess``),
  stopped at the end; with one BLAS thread, as the deployment runs it (deploy/k8s sets
  OPENBLAS_NUM_THREADS=1).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))

from loadtools import ONE_BLAS_THREAD
from wire import ServerProcess


@pytest.fixture
def serve() -> Iterator:
    started: list[ServerProcess] = []

    def make(*flags: str) -> ServerProcess:
        proc = ServerProcess(*flags, env=ONE_BLAS_THREAD)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
