"""``gradserve serve --workers 2``: two processes share the port, one scrape sees their sum,
SIGTERM drains both and the parent exits 0; a worker that dies is reported."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import grpc
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from tools import free_port, samples, scrape, tool

INFO = "/gradserve.v1.Gradient/GetServerInfo"
CHANNELS = 24


def banner_pids(banner: str) -> set[int]:
    match = re.search(r"2 workers, pids (\d+) (\d+)\)", banner)
    assert match, banner
    return {int(match.group(1)), int(match.group(2))}


def test_two_workers_share_the_port_and_the_metrics(server_process, tmp_path):
    port = free_port()
    proc = server_process(
        "--workers", "2", "--metrics-port", str(port), "--log-level", "debug",
        "--max-concurrent-rpcs", "10",
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
    )  # fmt: skip
    pids = banner_pids(proc.banner)
    # Separate connections (no shared subchannel pool), so the kernel spreads them.
    for _ in range(CHANNELS):
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(proc.address, options=options) as channel:
            pb_grpc.GradientStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    text = scrape(port)
    requests = samples(text, "gradserve_requests_total")
    assert requests[f'gradserve_requests_total{{code="OK",method="{INFO}"}}'] == CHANNELS
    assert samples(text, "gradserve_max_concurrent_rpcs") == {
        "gradserve_max_concurrent_rpcs": 20.0  # 10 per live worker
    }
    check = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr

    assert proc.stop() == 0
    served_by = {
        int(m.group(1))
        for m in re.finditer(r"pid=(\d+) msg=rpc method=(\S+)", proc.stderr)
        if m.group(2) == INFO
    }
    assert served_by == pids, proc.stderr  # both workers served requests


def test_a_worker_that_dies_is_reported(server_process):
    proc = server_process("--workers", "2", "--shutdown-grace", "5")
    dead, alive = sorted(banner_pids(proc.banner))
    os.kill(dead, signal.SIGKILL)
    assert proc.proc.wait(30) == 1
    proc.stop()
    assert f"pid {dead}) exited unexpectedly (signal SIGKILL); stopping the others" in proc.stderr
    assert f"(pid {alive}) stopped" in proc.stderr  # the other one drained
