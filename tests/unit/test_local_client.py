"""LocalClient: the SDK's methods in-process, with the server's conversions and errors."""

from __future__ import annotations

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve_client.proto import graph_pb2, tensor_pb2


@pytest.fixture
def local() -> gs.LocalClient:
    return gs.LocalClient()


def quadratic() -> gs.Graph:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    A = g.input("A", shape=(3, 3))
    g.output("y", A @ x)
    g.output("q", gs.sum(x * (A @ x)))
    return g


A0 = np.arange(9.0).reshape(3, 3) / 10
X0 = np.array([1.0, -2.0, 0.5])


def test_call_shapes(local: gs.LocalClient) -> None:
    g, at = quadratic(), {"x": X0, "A": A0}
    assert list(local.evaluate(g, at)) == ["y", "q"]
    np.testing.assert_allclose(local.jacobian(g, at, of="y", wrt="x"), A0)
    nested = local.jacobian(g, at, of=["q"], wrt=["x", "A"])
    np.testing.assert_allclose(nested["q"]["x"], (A0 + A0.T) @ X0)
    np.testing.assert_allclose(nested["q"]["A"], np.outer(X0, X0))
    np.testing.assert_allclose(local.grad(g, at, of="q", wrt="x"), (A0 + A0.T) @ X0)
    assert set(local.grad(g, at, of="q")) == {"x", "A"}
    np.testing.assert_allclose(local.vjp(g, at, {"y": [1.0, 0, 0]}, "x"), A0[0])
    np.testing.assert_allclose(local.jvp(g, at, {"x": [0, 1.0, 0]}, "y"), A0[:, 1])
    for mode in ("forward", "reverse"):
        np.testing.assert_allclose(local.jacobian(g, at, "y", "x", mode=mode), A0)


def test_python_values_take_the_declared_dtype(local: gs.LocalClient) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,), dtype="float32")
    g.output("y", x * 2.0)
    assert local.evaluate(g, {"x": [1, 2]})["y"].dtype == np.float32
    with pytest.raises(gs.InvalidArgument, match="strings") as info:
        local.evaluate(g, {"x": ["a", "b"]})
    assert isinstance(info.value, TypeError)


def test_errors_match_the_server(local: gs.LocalClient) -> None:
    g = quadratic()
    with pytest.raises(gs.InvalidArgument) as info:
        local.evaluate(g, {"x": [1.0, 2.0], "A": A0})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.field_violations == [('inputs["x"].shape', "got [2], expected [3]")]
    with pytest.raises(gs.InvalidArgument) as info:
        local.evaluate(g, {"x": X0})
    assert info.value.field_violations[0][0] == 'inputs["A"]'
    bad = graph_pb2.Graph(outputs=["y"])  # a wire graph the builder would not make
    bad.inputs.add(name="u", dtype=tensor_pb2.DTYPE_FLOAT64, shape=[2])
    bad.nodes.add(name="y", op="frobnicate", inputs=["u"])
    with pytest.raises(gs.InvalidArgument) as info:
        local.evaluate(bad, {"u": [1.0, 2.0]})
    assert info.value.field_violations[0][0] == 'graph.nodes["y"].op'
    assert info.value.reason == "INVALID_GRAPH"


def test_dynamic_shapes(local: gs.LocalClient) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(-1, 2))
    g.output("s", gs.sum(x * x))
    for n in (1, 3, 5):
        batch = np.ones((n, 2))
        assert local.evaluate(g, {"x": batch})["s"] == 2 * n
        np.testing.assert_allclose(local.grad(g, {"x": batch}, of="s", wrt="x"), 2 * batch)


def test_graph_converted_once_per_version(local: gs.LocalClient) -> None:
    g = quadratic()
    at = {"x": X0, "A": A0}
    local.evaluate(g, at)
    local.grad(g, at, of="q", wrt="x")
    assert len(local._graphs) == 1
    g.output("z", g.var("q") * 2.0)
    assert "z" in local.evaluate(g, at)
    assert len(local._graphs) == 2


def test_server_description(local: gs.LocalClient) -> None:
    ops = {op.name: op for op in local.operators()}
    assert ops["concatenate"].arity == -1 and not ops["greater"].differentiable
    assert local.health() == "SERVING"
    assert "local" in local.server_info().features


def _elementwise(n: int) -> gs.Graph:
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("y", gs.sin(x) * 2.0)
    return g


def test_a_dense_result_over_max_result_bytes_is_refused_before_computing() -> None:
    """The same budget as Client's (2 GiB by default, RESULT_TOO_LARGE), checked before the
    core is asked: the 10^6 x 10^6 Jacobian (7.3 TiB) is refused at once."""
    with pytest.raises(gs.ResourceExhausted) as info:
        gs.LocalClient().jacobian(_elementwise(10**6), {"x": np.zeros(10**6)}, "y", "x")
    err = info.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "RESULT_TOO_LARGE"
    assert "7.3 TiB" in err.message and "max_result_bytes=2147483648 (2.0 GiB)" in err.message
    assert err.metadata["limit"] == "max_result_bytes"
    small = gs.LocalClient(max_result_bytes=1 << 10)
    eight = small.jacobian(_elementwise(8), {"x": np.zeros(8)}, "y", "x")  # 512 bytes
    np.testing.assert_allclose(eight, 2 * np.eye(8))
    with pytest.raises(gs.ResourceExhausted, match=r"3.1 KiB .* max_result_bytes=1024 "):
        small.jacobian(_elementwise(20), {"x": np.zeros(20)}, of="y", wrt="x")
    with pytest.raises(ValueError, match="max_result_bytes must be positive"):
        gs.LocalClient(max_result_bytes=0)


def test_a_sparse_result_is_the_users_to_change(local: gs.LocalClient) -> None:
    # The core's CSR results share their structure with the pattern it caches: changing one
    # in place (eliminate_zeros drops the zeros at x = 0) must not reach a later call's.
    g = gs.Graph()
    x = g.input("x", (6,))
    g.output("y", gs.sin(x) * x)
    g.output("s", gs.sum(gs.sin(x) * x))
    x0 = np.array([0.0, 1, 2, 0, 3, 4])
    J = local.jacobian(g, {"x": x0}, of="y", wrt="x", sparse=True)
    J.eliminate_zeros()
    H = local.hessian(g, {"x": x0}, of="s", wrt="x", sparse=True)
    H.data[:] = 0
    H.eliminate_zeros()
    x1 = np.arange(1.0, 7)
    J1 = local.jacobian(g, {"x": x1}, of="y", wrt="x", sparse=True)
    np.testing.assert_allclose(J1.toarray(), np.diag(np.sin(x1) + x1 * np.cos(x1)))
    H1 = local.hessian(g, {"x": x1}, of="s", wrt="x", sparse=True)
    np.testing.assert_allclose(H1.toarray(), np.diag(2 * np.cos(x1) - x1 * np.sin(x1)))


@pytest.mark.parametrize("timeout", [None, 600.0])
def test_a_local_run_stopped_by_its_user_ends_at_once(
    local: gs.LocalClient, timeout: float | None
) -> None:
    # cancel() inside the loop: the core sees the stop before its next step, with or without a
    # deadline, and the run ends as a stopped one (not DEADLINE_EXCEEDED).
    g = gs.Graph()
    X, w = g.input("X", shape=(-1, 2)), g.input("w", shape=(2,))
    g.output("loss", gs.sum((X @ w) ** 2))
    data = {"X": np.ones((4, 2))}
    run = local.train(g, params={"w": np.ones(2)}, data=data, optimizer=gs.SGD(lr=0.01),
                      batch_size=1, epochs=100, timeout=timeout)  # fmt: skip
    for step in run:
        if step.step == 3:
            run.cancel()
    assert 3 <= run.history[-1].step <= 4 and run.result is None
    with pytest.raises(RuntimeError, match="stopped"):
        _ = run.params


def test_a_local_run_past_its_deadline_is_deadline_exceeded(local: gs.LocalClient) -> None:
    g = gs.Graph()
    X, w = g.input("X", shape=(-1, 2)), g.input("w", shape=(2,))
    g.output("loss", gs.sum((X @ w) ** 2))
    data = {"X": np.ones((4, 2))}
    run = local.train(g, params={"w": np.ones(2)}, data=data, optimizer=gs.SGD(lr=0.01),
                      batch_size=1, epochs=10**6, timeout=0.2)  # fmt: skip
    with pytest.raises(gs.DeadlineExceeded, match="deadline exceeded"):
        list(run)
