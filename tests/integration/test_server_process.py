"""``python -m gradserve serve`` as a process: flags, start-up errors, restart, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import numpy as np
import pytest
from gradserve.config import Settings, load_settings
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wire import PYTHON, ROOT, G, arrays, call_error, tensors

GRAPH = G([("x", "float64", [2])], [("y", "exp", ["x"], {})], ["y"])
FEED = tensors({"x": np.array([0.0, 1.0])})
SERVING = health_pb2.HealthCheckResponse.SERVING
# A call that reaches a draining server over an open connection is CANCELLED by grpc; one that
# finds no connection is UNAVAILABLE.
REFUSED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def run_serve(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "gradserve", "serve", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_setting_with_its_default():
    out = run_serve("--help")
    assert out.returncode == 0
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in out.stdout
    for flag in ("--max-message-bytes", "--auth-token-file", "--tls-cert", "--tls-key"):
        assert flag in out.stdout
    assert "default: 50051" in out.stdout


@pytest.mark.parametrize(
    "flags",
    [
        ("--port", "70000"),
        ("--max-message-bytes", "lots"),
        ("--tls-cert", "missing.pem"),
        ("--tls-cert", __file__, "--tls-key", "missing.pem"),
        ("--auth-token-file", "no-such-file"),
        ("--log-level", "chatty"),
        ("--worker-threads", "0"),
        ("--workers", "0"),
        ("--max-concurrent-rpcs", "-1"),
        ("--shutdown-grace", "-1"),
        ("--metrics-port", "65536"),
        ("--tls-client-ca", __file__),
        ("--tls-key", __file__),
        ("--graph-cache-size", "0"),
        ("--max-tensor-elements", "many"),
    ],
)
def test_invalid_values_exit_2_with_one_line(flags, capsys):
    with pytest.raises(SystemExit) as info:
        load_settings(list(flags))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gradserve serve: error: --")


def test_token_file_without_tokens_is_refused(tmp_path, capsys):
    empty = tmp_path / "tokens"
    empty.write_text("\n   \n")
    with pytest.raises(SystemExit):
        load_settings(["--auth-token-file", str(empty)])
    err = capsys.readouterr().err.strip()
    assert err == f"gradserve serve: error: --auth-token-file: no token in {empty}"


def test_help_shows_every_default():
    out = run_serve("--help").stdout
    flat = " ".join(out.split())
    for name, info in Settings.model_fields.items():
        assert f"env GRADSERVE_{name.upper()}" in flat, name
        if info.default_factory is None and info.default is not None:
            default = info.default
            if name in ("max_jacobian_elements", "max_request_bytes"):  # 0: computed
                assert f"default: {default} (" in flat, name
            else:
                assert f"default: {default};" in flat, name


def test_invalid_value_in_the_environment_stops_the_process():
    out = run_serve(env={**os.environ, "GRADSERVE_PORT": "-1"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "gradserve serve: error: --port (GRADSERVE_PORT): Input should be greater than or equal"
        " to 0"
    ]


def test_flags_override_environment(server_process):
    proc = server_process("--max-graph-nodes", "7", env={"GRADSERVE_MAX_GRAPH_NODES": "3"})
    with grpc.insecure_channel(proc.address) as channel:
        info = pb_grpc.GradientStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.limits.max_graph_nodes == 7


def _server_info(address: str) -> pb.GetServerInfoResponse:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GradientStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)


def test_blas_threads_are_limited_in_the_server_process(server_process):
    proc = server_process("--blas-threads", "1")
    assert proc.banner.endswith("; BLAS threads: 1)"), proc.banner
    assert _server_info(proc.address).blas_threads == 1
    assert proc.stop() == 0
    assert "BLAS threads: 1" in proc.stderr


def _serving_line(proc) -> str:
    """The start-up log line of a stopped server process."""
    return next(line for line in proc.stderr.splitlines() if "serving on" in line)


def test_the_server_restarts_itself_with_huge_pages_for_large_buffers(server_process):
    proc = server_process(env={"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    pid = proc.proc.pid
    assert proc.stop() == 0
    # Re-executed in place (the pid Popen started) with huge pages asked of glibc.
    line = _serving_line(proc)
    assert f"pid={pid} " in line and line.endswith('malloc huge pages: on"'), line


def test_the_operators_huge_page_setting_is_kept(server_process):
    proc = server_process(env={"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert proc.stop() == 0
    assert _serving_line(proc).endswith('malloc huge pages: off"')


def test_automatic_blas_threads_share_the_cores(server_process):
    cores = len(os.sched_getaffinity(0))
    many = _server_info(server_process().address).blas_threads  # 64 concurrent RPCs
    assert 1 <= many <= cores
    assert many == max(1, cores // 64)
    alone = _server_info(server_process("--max-concurrent-rpcs", "1").address).blas_threads
    assert alone == cores  # one RPC at a time gets every core


def test_restart_forgets_graph_ids(server_process):
    proc = server_process()
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.GradientStub(channel)
        first = stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=10)
        again = stub.Evaluate(pb.EvaluateRequest(graph_id=first.graph_id, inputs=FEED))
        assert again.graph_id == first.graph_id
    proc.restart()
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.GradientStub(channel)
        err = call_error(stub.Evaluate, pb.EvaluateRequest(graph_id=first.graph_id, inputs=FEED))
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "GRAPH_NOT_FOUND")
        # the client resends the graph; the id is a content hash, so it is the same
        resent = stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=10)
        assert resent.graph_id == first.graph_id
        np.testing.assert_array_equal(arrays(resent.outputs)["y"], np.exp([0.0, 1.0]))


def _info_code(stub) -> grpc.StatusCode:
    try:
        stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_sigterm_drains_in_flight_calls_and_exits_0(server_process):
    # a request that takes a second or more, even on a fast machine
    n = 300
    nodes, prev = [], "x"
    for i in range(300):
        nodes += [(f"m{i}", "matmul", [prev, "W"], {}), (f"h{i}", "tanh", [f"m{i}"], {})]
        prev = f"h{i}"
    slow = G([("x", "float64", [n, n]), ("W", "float64", [n, n])], nodes, [prev])
    feed = tensors({"x": np.full((n, n), 0.01), "W": np.eye(n)})
    # a grace far beyond the call, which a loaded machine (CI shares its cores) slows down
    proc = server_process("--shutdown-grace", "120")
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.GradientStub(channel)
        start = time.monotonic()
        stub.Evaluate(pb.EvaluateRequest(graph=slow.proto(), inputs=feed), timeout=60)
        duration = time.monotonic() - start
        health = health_pb2_grpc.HealthStub(channel)
        # A watcher sees the flip to NOT_SERVING even though new calls are refused
        # right after it (server.stop follows at once); it is in flight, so it is drained.
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=20)
        assert next(watch).status == SERVING
        future = stub.Evaluate.future(pb.EvaluateRequest(graph=slow.proto(), inputs=feed))
        time.sleep(min(0.2, duration / 3))
        proc.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # while it drains, new calls are refused: from server.stop(), which follows the flip
        # at once, but a loaded machine may let a call in between the two
        assert not future.done(), "the slow request should still be running"
        refused_by = time.monotonic() + 5
        while (code := _info_code(stub)) == grpc.StatusCode.OK:
            assert time.monotonic() < refused_by, "new calls still served 5 s after NOT_SERVING"
            time.sleep(0.01)
        assert code in REFUSED
        result = future.result(timeout=150)
        assert result.outputs[prev].shape == [n, n]
        assert proc.proc.wait(150) == 0
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            status = None
        assert status != health_pb2.HealthCheckResponse.SERVING
