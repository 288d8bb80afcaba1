"""The container image, run the way deploy/k8s runs it: read-only root filesystem (a tmpfs
on /tmp), every capability dropped, uid 10001, no-new-privileges, a CPU and memory limit.
Then gRPC health, a gradient against its closed form, /metrics, and `docker stop`
draining a call in flight and exiting 0.

Needs dockerd and the image ``$GRADSERVE_IMAGE`` (default ``gradserve:test``), which
``make image`` builds (deploy/docker/build-offline.sh). The tests are marked ``image``:
``make test`` leaves them out (pyproject's ``-m 'not image'``), ``make image-test`` (a
step of .ci/run) builds the image and runs them. A missing image or daemon fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradserve
import gradserve_client as gs
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.image

IMAGE = os.environ.get("GRADSERVE_IMAGE", "gradserve:test")
UID = 10001
# As the Deployment's securityContext and resources in deploy/k8s/base.
KUBERNETES_LIKE = [
    "--read-only",
    "--tmpfs", "/tmp:rw,size=256m",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--user", f"{UID}:{UID}",
    "--cpus", "1",
    "--memory", "1g",
    "-e", "OMP_NUM_THREADS=1",
    "-e", "OPENBLAS_NUM_THREADS=1",
]  # fmt: skip


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr.strip()}"
    return result


def inspect(what: str) -> Any:
    return json.loads(docker("inspect", what).stdout)[0]


@dataclass
class Container:
    name: str
    grpc: str
    metrics_port: int

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.name, *command], capture_output=True, text=True, timeout=30
        )

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return result.stdout + result.stderr


def published(name: str, port: int) -> tuple[str, int]:
    host, _, number = docker("port", name, f"{port}/tcp").stdout.splitlines()[0].rpartition(":")
    return host, int(number)


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        pytest.fail(f"no image {IMAGE}: build it with `make image` (dockerd must be running)")
    name = f"gradserve-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "--detach", "--name", name, *KUBERNETES_LIKE,
        "--publish", "127.0.0.1::50051", "--publish", "127.0.0.1::9090",
        IMAGE, "--host", "0.0.0.0", "--shutdown-grace", "30",
    )  # fmt: skip
    try:
        host, port = published(name, 50051)
        running = Container(name, f"{host}:{port}", published(name, 9090)[1])
        with gs.Client(running.grpc, timeout=2) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.health() == "SERVING":
                        break
                except gs.GradserveError:
                    pass
                assert time.monotonic() < deadline, f"not SERVING in 60 s:\n{running.logs()}"
                time.sleep(0.2)
        yield running
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def test_the_image_itself_runs_as_non_root() -> None:
    config = inspect(IMAGE)["Config"]
    assert config["User"] == f"{UID}:{UID}"  # numeric: Kubernetes' runAsNonRoot can check it
    assert config["Entrypoint"] == ["gradserve", "serve"]
    assert config["Cmd"] == ["--host", "0.0.0.0"]
    assert {"50051/tcp", "9090/tcp"} <= set(config["ExposedPorts"])


def test_the_server_runs_unprivileged_on_a_read_only_root(container: Container) -> None:
    status = container.exec("cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[:2] == [str(UID), str(UID)], "real and effective uid"
    assert fields["CapEff"].strip() == "0" * 16 and fields["CapPrm"].strip() == "0" * 16
    assert fields["NoNewPrivs"].strip() == "1"
    assert "gradserve" in container.exec("cat", "/proc/1/cmdline").stdout
    denied = container.exec("touch", "/opt/venv/written")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert container.exec("touch", "/tmp/written").returncode == 0


def test_grpc_health_is_serving(container: Container) -> None:
    with gs.Client(container.grpc, timeout=10) as client:
        assert client.health() == "SERVING"
        assert client.server_info().version == gradserve.__version__


def test_a_gradient_through_the_container(container: Container) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(4,))
    g.output("y", gs.sum(gs.sin(x) * x))
    at = np.array([0.0, 0.5, -1.25, 3.0])
    with gs.Client(container.grpc, timeout=30) as client:
        np.testing.assert_allclose(client.evaluate(g, {"x": at})["y"], np.sum(np.sin(at) * at))
        grad = client.grad(g, {"x": at}, wrt="x")
    np.testing.assert_allclose(grad, np.cos(at) * at + np.sin(at), rtol=1e-13, atol=1e-15)


def test_metrics_count_the_calls(container: Container) -> None:
    url = f"http://127.0.0.1:{container.metrics_port}/metrics"
    with gs.Client(container.grpc, timeout=10) as client:
        client.operators()
    with urllib.request.urlopen(url, timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    calls = {
        s.labels["method"]: s.value
        for s in families["gradserve_requests"].samples
        if s.name == "gradserve_requests_total" and s.labels["code"] == "OK"
    }
    assert calls.get("/gradserve.v1.Gradient/ListOperators", 0) >= 1, calls
    (info,) = families["gradserve_build_info"].samples
    assert info.labels["version"] == gradserve.__version__
    assert "process_resident_memory_bytes" in {s.name for f in families.values() for s in f.samples}


def slow_chain(steps: int, n: int = 300) -> gs.Graph:
    """h_i = tanh(h_{i-1} @ W): ``steps`` 300 x 300 matmuls."""
    g = gs.Graph()
    h, w = g.input("x", shape=(n, n)), g.input("W", shape=(n, n))
    for _ in range(steps):
        h = gs.tanh(h @ w)
    g.output("y", h)
    return g


def test_docker_stop_drains_a_call_in_flight_and_exits_0(container: Container) -> None:
    n = 300
    feed = {"x": np.full((n, n), 0.01), "W": np.eye(n)}
    expected = np.full((n, n), 0.01)  # W = I: y is tanh applied `steps` times
    with gs.Client(container.grpc, timeout=120) as client:
        start = time.monotonic()
        client.evaluate(slow_chain(50), feed)
        per_step = (time.monotonic() - start) / 50
        steps = max(50, int(3.0 / per_step))  # about 3 s
        graph = slow_chain(steps)
        for _ in range(steps):
            expected = np.tanh(expected)
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["y"] = client.evaluate(graph, feed)["y"]
            except gs.GradserveError as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        stopped = time.monotonic()
        docker("stop", "--time", "60", container.name, timeout=90)
        stop_took = time.monotonic() - stopped
        caller.join(30)
    state = inspect(container.name)["State"]
    assert state["ExitCode"] == 0 and not state["OOMKilled"], container.logs()
    assert "error" not in outcome, outcome
    np.testing.assert_allclose(outcome["y"], expected, rtol=1e-12)
    assert stop_took > 0.5, "docker stop returned before the call in flight could finish"
    logs = container.logs()
    assert "shutting down: draining" in logs and "stopped" in logs, logs
