"""Deadlines, cancellation, concurrency, big tensors and a big streamed Jacobian."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from gradserve_client.proto import gradient_service_pb2 as pb
from wire import G, arrays, tensors

N = 300


def long_chain(steps: int) -> G:
    """h_i = tanh(h_{i-1} @ W): each step is a 300x300 matmul, so the run is long."""
    nodes, prev = [], "x"
    for i in range(steps):
        nodes += [(f"m{i}", "matmul", [prev, "W"], {}), (f"h{i}", "tanh", [f"m{i}"], {})]
        prev = f"h{i}"
    return G([("x", "float64", [N, N]), ("W", "float64", [N, N])], nodes, [prev])


LONG = long_chain(3000)
LONG_FEED = tensors({"x": np.full((N, N), 0.01), "W": np.eye(N)})
TINY = G([("x", "float64", [])], [("y", "sin", ["x"], {})], ["y"])


def _tiny_roundtrip(stub) -> float:
    start = time.monotonic()
    r = stub.Evaluate(
        pb.EvaluateRequest(graph=TINY.proto(), inputs=tensors({"x": 0.5})), timeout=10
    )
    assert arrays(r.outputs)["y"] == np.sin(0.5)
    return time.monotonic() - start


def one_thread_server(make_server):
    """A stub of a server with one pool thread (max_concurrent_rpcs=0 sizes the pool by
    worker_threads alone; a limit would add headroom threads), so that a tiny call is served
    only once the long one let go, and with LONG already in its graph cache and its plan
    compiled, so that the deadline falls while it runs (a deadline while it is compiled:
    ``test_a_deadline_while_compiling_frees_the_worker``)."""
    running = make_server(worker_threads=1, max_concurrent_rpcs=0)
    _, stub = running.stub()
    with pytest.raises(grpc.RpcError):
        stub.Evaluate(pb.EvaluateRequest(graph=LONG.proto(), inputs=LONG_FEED), timeout=0.3)
    _tiny_roundtrip(stub)  # served once the thread is free
    return stub


def test_deadline_exceeded_frees_the_worker(make_server):
    stub = one_thread_server(make_server)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Evaluate(pb.EvaluateRequest(graph=LONG.proto(), inputs=LONG_FEED), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 2
    # the single worker thread is free again at once: a tiny request is served promptly
    assert _tiny_roundtrip(stub) < 1.0


def test_client_cancellation_frees_the_worker(make_server):
    stub = one_thread_server(make_server)
    future = stub.Evaluate.future(pb.EvaluateRequest(graph=LONG.proto(), inputs=LONG_FEED))
    time.sleep(0.3)
    future.cancel()
    assert _tiny_roundtrip(stub) < 1.0


def slow_to_compile(n: int, size: int = 1_000_000) -> G:
    """y = x + sum(c) + sum(c) + ... (n sums of one constant c of ``size`` elements): quick to
    validate, but compiling folds every sum of the constant (most of a millisecond each), so
    the plan takes seconds to compile and no time to run."""
    nodes = [("c", "constant", [], {"value": np.ones(size)}), ("a0", "sum", ["c"], {})]
    for i in range(1, n):
        nodes += [(f"s{i}", "sum", ["c"], {}), (f"a{i}", "add", [f"a{i - 1}", f"s{i}"], {})]
    nodes.append(("y", "add", [f"a{n - 1}", "x"], {}))
    return G([("x", "float64", [])], nodes, ["y"])


def test_a_deadline_while_compiling_frees_the_worker(make_server):
    """A graph validated and cached by DerivativeProgram (which compiles nothing), then
    evaluated by id with a deadline that falls while its plan, 4 to 10 s of work, is compiled:
    the compilation stops at its next cancel check (256 sums later) instead of finishing."""
    running = make_server(worker_threads=1, max_concurrent_rpcs=0)
    _, stub = running.stub()
    graph = slow_to_compile(12_000).proto()
    kind = pb.DERIVATIVE_KIND_VJP
    graph_id = stub.DerivativeProgram(pb.DerivativeProgramRequest(graph=graph, kind=kind)).graph_id
    request = pb.EvaluateRequest(graph_id=graph_id, inputs=tensors({"x": 1.0}))
    with pytest.raises(grpc.RpcError) as info:
        stub.Evaluate(request, timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _tiny_roundtrip(stub) < 1.0  # the worker thread let go of the compilation


def test_max_concurrent_rpcs(make_server):
    running = make_server(worker_threads=2, max_concurrent_rpcs=1)
    _, stub = running.stub()
    future = stub.Evaluate.future(
        pb.EvaluateRequest(graph=LONG.proto(), inputs=LONG_FEED), timeout=5
    )
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as info:
        _tiny_roundtrip(stub)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    future.cancel()


MIXED = G(
    inputs=[("x", "float64", [3]), ("W", "float64", [2, 3])],
    nodes=[("h", "matmul", ["W", "x"], {}), ("y", "sin", ["h"], {})],
    outputs=["y"],
)


def test_8_threads_100_mixed_requests(stub):
    graph_id = stub.Evaluate(
        pb.EvaluateRequest(
            graph=MIXED.proto(), inputs=tensors({"x": np.ones(3), "W": np.ones((2, 3))})
        )
    ).graph_id
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(100):
            x, W = rng.normal(size=3), rng.normal(size=(2, 3))
            feed = tensors({"x": x, "W": W})
            h = W @ x
            source = {"graph_id": graph_id} if i % 2 else {"graph": MIXED.proto()}
            kind = i % 4
            if kind == 0:
                r = stub.Evaluate(pb.EvaluateRequest(**source, inputs=feed))
                ok = np.allclose(arrays(r.outputs)["y"], np.sin(h))
            elif kind == 1:
                r = stub.Jacobian(pb.JacobianRequest(**source, inputs=feed, wrt=["x"]))
                ok = np.allclose(arrays({"j": r.blocks[0].dense})["j"], np.cos(h)[:, None] * W)
            elif kind == 2:
                ct = rng.normal(size=2)
                r = stub.Vjp(
                    pb.VjpRequest(**source, inputs=feed, cotangents=tensors({"y": ct}), wrt=["x"])
                )
                ok = np.allclose(arrays(r.gradients)["x"], (ct * np.cos(h)) @ W)
            else:
                t = rng.normal(size=3)
                r = stub.Jvp(pb.JvpRequest(**source, inputs=feed, tangents=tensors({"x": t})))
                ok = np.allclose(arrays(r.tangents)["y"], np.cos(h) * (W @ t))
            if not ok or r.graph_id != graph_id:
                errors.append(f"thread {seed} request {i} kind {kind}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_100_mib_tensor_round_trip(stub):
    n = 100 * (1 << 20) // 8
    x = np.random.default_rng(0).normal(size=n)
    g = G([("x", "float64", [n])], [], ["x"])
    r = stub.Evaluate(pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": x})), timeout=60)
    np.testing.assert_array_equal(arrays(r.outputs)["x"], x)


def test_5000x5000_jacobian_streamed(make_server):
    """J of softmax(x) is diag(s) - s s^T: dense, 200 MB, cheap in reverse mode. With 16 MiB
    messages it needs many blocks; the rows must assemble to the local result."""
    running = make_server(max_message_bytes=16 << 20)
    _, stub = running.stub()
    n = 5000
    x = np.random.default_rng(3).normal(size=n)
    g = G([("x", "float64", [n])], [("y", "softmax", ["x"], {})], ["y"])
    request = pb.StreamJacobianRequest(graph=g.proto(), inputs=tensors({"x": x}))
    with pytest.raises(grpc.RpcError) as info:  # too big for one unary response
        stub.Jacobian(pb.JacobianRequest(graph=g.proto(), inputs=tensors({"x": x})))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    jac = np.full((n, n), np.nan)
    blocks = 0
    for block in stub.StreamJacobian(request, timeout=120):
        assert tuple(block.shape) == (n, n)
        assert block.ByteSize() <= 16 << 20
        jac[block.row_start : block.row_start + block.row_count] = arrays({"r": block.rows})["r"]
        blocks += 1
    assert blocks > 1
    s = np.exp(x - x.max())
    s /= s.sum()
    expected = np.diag(s) - np.outer(s, s)
    np.testing.assert_allclose(jac, expected, rtol=1e-10, atol=1e-15)


def test_concurrent_stream_and_unary(stub):
    g = G([("x", "float64", [50])], [("y", "softmax", ["x"], {})], ["y"])
    req = pb.StreamJacobianRequest(
        graph=g.proto(), inputs=tensors({"x": np.zeros(50)}), rows_per_message=7
    )

    def rows() -> int:
        return sum(b.row_count for b in stub.StreamJacobian(req))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: rows(), range(8))) == [50] * 8
