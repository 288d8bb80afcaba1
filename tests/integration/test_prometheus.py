"""A real Prometheus server (Debian's ``prometheus`` package) scrapes a live gradserve, and
``promtool check metrics`` checks its live ``/metrics``. Never skipped in CI (CI=true)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from tools import free_port, scrape, tool
from wire import G, call_error, tensors

EVALUATE = "/gradserve.v1.Gradient/Evaluate"
GRAPH = G([("x", "float64", [2])], [("y", "exp", ["x"], {})], ["y"])
FEED = tensors({"x": np.array([0.0, 1.0])})


@pytest.fixture
def gradserve(server_process):
    """A gradserve process with its metrics port, after 3 OK and 2 INVALID_ARGUMENT calls."""
    port = free_port()
    proc = server_process("--metrics-port", str(port))
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.GradientStub(channel)
        for _ in range(3):
            stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=10)
        for _ in range(2):
            err = call_error(stub.Evaluate, pb.EvaluateRequest(inputs=FEED), timeout=10)
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    return port


def test_promtool_finds_the_live_metrics_clean(gradserve):
    text = scrape(gradserve)
    assert f'gradserve_requests_total{{code="OK",method="{EVALUATE}"}} 3.0' in text
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip()


def query(api: str, promql: str) -> list[dict]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_requests_by_method_and_code(gradserve, tmp_path: Path):
    prometheus = tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: gradserve\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{gradserve}']\n"
    )
    web = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{web}"
    try:
        found: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                result = query(api, 'gradserve_requests_total{job="gradserve"}')
            except OSError:  # not listening yet
                result = []
            found = {
                (r["metric"]["method"], r["metric"]["code"]): float(r["value"][1]) for r in result
            }
            if (EVALUATE, "INVALID_ARGUMENT") in found:
                break
            time.sleep(0.25)
        assert found.get((EVALUATE, "OK")) == 3, found
        assert found.get((EVALUATE, "INVALID_ARGUMENT")) == 2, found
        # the target is healthy and the other series are there too
        assert [float(r["value"][1]) for r in query(api, 'up{job="gradserve"}')] == [1.0]
        assert query(api, "gradserve_request_duration_seconds_count")
        assert query(api, "gradserve_build_info")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
