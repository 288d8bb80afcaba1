"""The BLAS threads of a server process: the automatic count, and the live reading that
GetServerInfo reports (a real server subprocess: tests/integration/test_server_process.py)."""

from __future__ import annotations

import pytest
from gradserve import blas
from gradserve.config import Settings
from gradserve.rpc import GradientServicer
from gradserve_client._info import decode_server_info
from gradserve_client.proto import gradient_service_pb2 as pb
from threadpoolctl import threadpool_limits


@pytest.mark.parametrize(
    ("cores", "flags", "expected"),
    [
        (2, {}, 1),  # 64 concurrent RPCs share 2 cores: one thread each
        (16, {"max_concurrent_rpcs": 4}, 4),
        (16, {"max_concurrent_rpcs": 4, "workers": 2}, 2),  # 8 cores per process
        (16, {"max_concurrent_rpcs": 0, "worker_threads": 8}, 2),  # unlimited: the pool bounds
        (3, {"max_concurrent_rpcs": 2}, 1),  # rounded down: 2 x 1 <= 3
        (1, {"max_concurrent_rpcs": 1, "workers": 4}, 1),  # never 0
        (2, {"blas_threads": 5}, 5),  # the setting wins
    ],
)
def test_planned_threads_keep_rpc_threads_times_blas_threads_within_the_cores(
    monkeypatch, cores, flags, expected
):
    monkeypatch.setattr(blas, "_cores", lambda: cores)
    settings = Settings(**flags)
    planned = blas.planned_threads(settings)
    assert planned == expected
    if not settings.blas_threads and planned > 1:
        per_process = cores // settings.workers
        assert planned * (settings.max_concurrent_rpcs or settings.worker_threads) <= per_process


def test_negative_blas_threads_are_refused():
    with pytest.raises(ValueError, match="blas_threads"):
        Settings(blas_threads=-1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_get_server_info_reads_the_live_blas_limit(threads):
    servicer = GradientServicer(Settings(blas_threads=7))  # the setting is not what is read
    with threadpool_limits(limits=threads, user_api="blas"):
        response = servicer.GetServerInfo(pb.GetServerInfoRequest(), None)
    assert response.blas_threads == threads
    assert decode_server_info(response).blas_threads == threads
