"""The metrics interceptor: every RPC counted (validation, garbage, authentication and limit
refusals included), streams counted when they end, caches, Jacobian sizes, message sizes, the
concurrency limit, and the access log."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import numpy as np
import pytest
from gradserve import metrics
from gradserve.server import HEADROOM, thread_pool_size
from gradserve_client.proto import gradient_service_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wire import G, call_error, tensors

R = metrics.REGISTRY
SVC = "/gradserve.v1.Gradient/"
GRAPH = G([("x", "float64", [3])], [("y", "sin", ["x"], {})], ["y"])
FEED = tensors({"x": np.array([0.1, 0.2, 0.3])})


def value(name: str, **labels: str) -> float:
    return R.get_sample_value(name, labels) or 0.0


def requests(method: str, code: str) -> float:
    return value("gradserve_requests_total", method=SVC + method, code=code)


class Delta:
    """Counter values at the start, to compare with at the end."""

    def __init__(self, *keys: tuple[str, dict[str, str]]) -> None:
        self.keys = keys
        self.before = [value(n, **lab) for n, lab in keys]

    def __call__(self) -> list[float]:
        return [value(n, **lab) - b for (n, lab), b in zip(self.keys, self.before, strict=True)]


def req(method: str, code: str) -> tuple[str, dict[str, str]]:
    return ("gradserve_requests_total", {"method": SVC + method, "code": code})


def test_ok_invalid_and_garbage_calls_are_counted(stub, channel):
    delta = Delta(
        req("Evaluate", "OK"),
        req("Evaluate", "INVALID_ARGUMENT"),
        ("gradserve_request_duration_seconds_count", {"method": SVC + "Evaluate"}),
        ("gradserve_request_message_bytes_count", {"method": SVC + "Evaluate"}),
        ("gradserve_response_message_bytes_sum", {"method": SVC + "Evaluate"}),
    )
    stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=10)
    call_error(stub.Evaluate, pb.EvaluateRequest(inputs=FEED))  # no graph
    garbage = channel.unary_unary(SVC + "Evaluate")
    with pytest.raises(grpc.RpcError) as info:
        garbage(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok, invalid, timed, received, sent = delta()
    assert (ok, invalid, timed, received) == (1, 2, 3, 3)
    assert sent > 0


def test_health_is_counted_and_its_garbage_is_invalid_argument(channel):
    method = "/grpc.health.v1.Health/Check"
    ok = ("gradserve_requests_total", {"method": method, "code": "OK"})
    bad = ("gradserve_requests_total", {"method": method, "code": "INVALID_ARGUMENT"})
    delta = Delta(ok, bad)
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(method)(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert delta() == [1, 1]


def test_stream_is_counted_when_it_ends_with_jacobian_elements(stub):
    g = G([("x", "float64", [40])], [("y", "tanh", ["x"], {})], ["y"])
    delta = Delta(
        req("StreamJacobian", "OK"),
        ("gradserve_jacobian_elements_count", {}),
        ("gradserve_jacobian_elements_sum", {}),
        ("gradserve_response_message_bytes_count", {"method": SVC + "StreamJacobian"}),
    )
    request = pb.StreamJacobianRequest(
        graph=g.proto(), inputs=tensors({"x": np.linspace(-1, 1, 40)}), rows_per_message=10
    )
    stream = stub.StreamJacobian(request, timeout=10)
    assert len(list(stream)) == 4
    assert delta() == [1, 1, 1600, 4]


def test_hessians_are_counted_as_jacobians_are(stub):
    """Hessian's blocks and StreamHessian's row blocks are counted in
    gradserve_jacobian_elements as Jacobian's and StreamJacobian's are (one observation per
    call, when it ends: the elements of every block), dense or structured."""
    g = G(
        [("x", "float64", [30]), ("y", "float64", [20])],
        [("p", "multiply", ["x", "x"], {}), ("s", "sum", ["p"], {}),
         ("q", "multiply", ["y", "y"], {}), ("t", "sum", ["q"], {}), ("f", "add", ["s", "t"], {})],
        ["f"],
    )  # fmt: skip
    feed = tensors({"x": np.linspace(-1, 1, 30), "y": np.linspace(0, 1, 20)})
    delta = Delta(
        req("Hessian", "OK"),
        req("StreamHessian", "OK"),
        ("gradserve_jacobian_elements_count", {}),
        ("gradserve_jacobian_elements_sum", {}),
    )
    for structured in (False, True):
        stub.Hessian(
            pb.HessianRequest(graph=g.proto(), inputs=feed, structured=structured), timeout=10
        )
        request = pb.StreamHessianRequest(
            graph=g.proto(), inputs=feed, rows_per_message=7, structured=structured
        )
        blocks = list(stub.StreamHessian(request, timeout=10))
        assert len(blocks) == 2 * (5 + 3)  # (x, x), (x, y) in 5 runs each, (y, ...) in 3
    assert delta() == [2, 2, 4, 4 * (30 + 20) ** 2]


def test_unary_jacobian_elements_and_graph_cache(stub):
    g = G([("x", "float64", [3]), ("w", "float64", [2])], [("y", "sin", ["x"], {})], ["y"])
    feed = tensors({"x": np.ones(3), "w": np.ones(2)})
    delta = Delta(
        ("gradserve_jacobian_elements_sum", {}),
        ("gradserve_graph_cache_misses_total", {}),
        ("gradserve_graph_cache_hits_total", {}),
    )
    first = stub.Jacobian(pb.JacobianRequest(graph=g.proto(), inputs=feed, wrt=["x"]))
    stub.Jacobian(pb.JacobianRequest(graph_id=first.graph_id, inputs=feed, wrt=["x", "w"]))
    elements, misses, hits = delta()
    assert elements == 9 + (9 + 6)
    assert misses >= 1 and hits >= 1


def cancel_a_stream(stub) -> None:
    """Start a StreamJacobian of 3000 one-row messages, read one, and cancel it."""
    g = G([("x", "float64", [3000])], [("y", "tanh", ["x"], {})], ["y"])
    request = pb.StreamJacobianRequest(
        graph=g.proto(), inputs=tensors({"x": np.zeros(3000)}), rows_per_message=1
    )
    stream = stub.StreamJacobian(request, timeout=30)
    next(stream)
    stream.cancel()


def test_cancelled_stream_is_counted_as_cancelled(make_server):
    running = make_server()
    _, stub = running.stub()
    delta = Delta(req("StreamJacobian", "CANCELLED"))
    inflight = value("gradserve_inflight_requests")
    cancel_a_stream(stub)
    deadline = time.monotonic() + 5
    while delta() != [1] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert delta() == [1]
    assert value("gradserve_inflight_requests") == inflight


def test_unauthenticated_calls_are_counted(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    running = make_server(auth_token_file=tokens)
    _, stub = running.stub()
    delta = Delta(req("GetServerInfo", "UNAUTHENTICATED"), req("GetServerInfo", "OK"))
    err = call_error(stub.GetServerInfo, pb.GetServerInfoRequest(), timeout=10)
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    stub.GetServerInfo(
        pb.GetServerInfoRequest(), metadata=[("authorization", "Bearer s3cret")], timeout=10
    )
    assert delta() == [1, 1]


def test_max_concurrent_rpcs_refuses_at_once_counted_health_exempt(make_server):
    running = make_server(worker_threads=2, max_concurrent_rpcs=2)
    assert thread_pool_size(running.settings) == 2 + HEADROOM
    assert value("gradserve_max_concurrent_rpcs") == 2
    channel, stub = running.stub()
    long = G(
        [("x", "float64", [200, 200])],
        [(f"h{i}", "tanh", [f"h{i - 1}" if i else "x"], {}) for i in range(20000)],
        ["h19999"],
    )
    feed = tensors({"x": np.zeros((200, 200))})
    delta = Delta(req("Evaluate", "RESOURCE_EXHAUSTED"))
    busy = [
        stub.Evaluate.future(pb.EvaluateRequest(graph=long.proto(), inputs=feed), timeout=20)
        for _ in range(2)
    ]
    deadline = time.monotonic() + 10
    while value("gradserve_inflight_requests") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        start = time.monotonic()
        err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED))
        assert time.monotonic() - start < 1  # at once, not after the busy calls
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (err.reason, err.metadata["limit"]) == ("LIMIT_EXCEEDED", "max_concurrent_rpcs")
        assert "--max-concurrent-rpcs" in err.message
        # health probes are never refused by the limit
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
        assert delta() == [1]
    finally:
        for f in busy:
            f.cancel()
    # the slots are freed: a call is served again
    deadline = time.monotonic() + 10
    while True:
        try:
            stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=5)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_access_log_lines(stub, caplog):
    def evaluate_records(code: str) -> list[logging.LogRecord]:
        # Calls of other tests that end late log too (a cancelled stream at info): pick ours.
        return [
            r
            for r in caplog.records
            if r.name == "gradserve.access"
            and r.fields["method"] == SVC + "Evaluate"
            and r.fields["code"] == code
        ]

    with caplog.at_level(logging.DEBUG, logger="gradserve.access"):
        stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=10)
        call_error(stub.Evaluate, pb.EvaluateRequest(inputs=FEED))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not (
            evaluate_records("OK") and evaluate_records("INVALID_ARGUMENT")
        ):
            time.sleep(0.01)
    ok, bad = evaluate_records("OK")[-1], evaluate_records("INVALID_ARGUMENT")[-1]
    assert ok.levelno == logging.DEBUG and bad.levelno == logging.WARNING
    assert "graph" in bad.fields["details"]
    assert float(ok.fields["duration"]) >= 0


def test_logfmt_format():
    from gradserve.logfmt import LogfmtFormatter

    record = logging.LogRecord("gradserve.access", logging.WARNING, "f", 1, "rpc failed", (), None)
    record.fields = {"method": "/a.B/C", "code": "INTERNAL", "details": 'a "b"\nc'}
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    assert line.startswith("time=") and " level=warning logger=gradserve.access pid=" in line
    assert line.endswith(' msg="rpc failed" method=/a.B/C code=INTERNAL details="a \\"b\\"\\nc"')


def test_concurrent_counting_is_exact(make_server):
    running = make_server()
    _, stub = running.stub()
    delta = Delta(req("Evaluate", "OK"), req("Evaluate", "INVALID_ARGUMENT"))

    def work():
        for _ in range(25):
            stub.Evaluate(pb.EvaluateRequest(graph=GRAPH.proto(), inputs=FEED), timeout=10)
            call_error(stub.Evaluate, pb.EvaluateRequest(inputs=FEED))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert delta() == [100, 100]


def refusals(method: str, limit: str) -> tuple[str, dict[str, str]]:
    return ("gradserve_refusals_total", {"method": SVC + method, "limit": limit})


def test_refusals_say_which_limit_refused_them(make_server):
    """Load shedding (max_concurrent_rpcs) and size limits are told apart by `limit`."""
    running = make_server(max_jacobian_elements=4, max_request_bytes=1 << 20)
    _, stub = running.stub()
    delta = Delta(
        refusals("Jacobian", "max_jacobian_elements"),
        refusals("Evaluate", "max_request_bytes"),
        refusals("Evaluate", "max_concurrent_rpcs"),
        req("Jacobian", "RESOURCE_EXHAUSTED"),
    )
    err = call_error(stub.Jacobian, pb.JacobianRequest(graph=GRAPH.proto(), inputs=FEED))
    assert err.reason == "JACOBIAN_TOO_LARGE"
    big = G([("x", "float64", [1000])], [("y", "outer", ["x", "x"], {})], ["y"])
    feed = tensors({"x": np.zeros(1000)})
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=big.proto(), inputs=feed))
    assert err.metadata["limit"] == "max_request_bytes"
    assert delta() == [1, 1, 0, 1]


def test_calls_that_end_before_a_thread_runs_them_are_counted(make_server):
    """50 calls at once with a 50 ms deadline: every one is counted, also those grpc ends
    before any handler runs (it never calls the interceptors' handlers for a call already dead
    when a pool thread gets to it). Before, 9 to 33 of the 50 were."""
    running = make_server()
    _, stub = running.stub()
    slow = G(
        [("x", "float64", [1])],
        [("w", "broadcast_to", ["x"], {"shape": [500, 500]})]
        + [(f"h{i}", "sin", [f"h{i - 1}" if i else "w"], {}) for i in range(200)],
        ["h199"],
    )
    request = pb.EvaluateRequest(graph=slow.proto(), inputs=tensors({"x": [0.5]}))
    stub.Evaluate(request, timeout=30)  # cached and compiled: the calls below only run
    codes = ("OK", "DEADLINE_EXCEEDED", "CANCELLED")
    delta = Delta(*(req("Evaluate", c) for c in codes))
    futures = [stub.Evaluate.future(request, timeout=0.05) for _ in range(50)]
    seen = dict.fromkeys(codes, 0)
    for f in futures:
        try:
            f.result()
            seen["OK"] += 1
        except grpc.RpcError as exc:
            seen[exc.code().name] += 1
    assert sum(seen.values()) == 50 and seen["DEADLINE_EXCEEDED"] > 25
    deadline = time.monotonic() + 20
    while sum(delta()) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    ok, expired, cancelled = delta()
    assert ok + expired + cancelled == 50 and ok == seen["OK"]
    # A client cancels its call when the deadline passes on its own clock, which can be just
    # before the server's (counted from the call's arrival): such a call is CANCELLED there.
    assert expired >= seen["DEADLINE_EXCEEDED"] - 3


def test_routine_outcomes_are_logged_at_info(make_server, caplog):
    """NOT_FOUND for a graph id (the SDK then sends the graph) and CANCELLED (a client that
    stops reading a stream) are normal SDK use: INFO, not WARNING."""
    running = make_server()
    _, stub = running.stub()
    with caplog.at_level(logging.INFO, logger="gradserve.access"):
        call_error(stub.Evaluate, pb.EvaluateRequest(graph_id="0" * 64, inputs=FEED))
        cancel_a_stream(stub)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            codes = {r.fields["code"]: r.levelno for r in caplog.records if hasattr(r, "fields")}
            if "CANCELLED" in codes:
                break
            time.sleep(0.02)
    assert codes == {"NOT_FOUND": logging.INFO, "CANCELLED": logging.INFO}
