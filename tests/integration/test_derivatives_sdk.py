"""Structured and second-order derivatives against a real server (design section 10): sparse
Jacobians and their patterns, Hessians, HVPs and derivative programs, through the wire, the SDK
(Client, AsyncClient and LocalClient alike) and their errors."""

from __future__ import annotations

import asyncio
from typing import Any

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec
from scipy import sparse as sp
from wire import G, rich_error, tensors

RNG = np.random.default_rng(7)
N = 12
X0 = RNG.normal(size=N)
Y0 = RNG.normal(size=N)


def tridiagonal() -> gs.Graph:
    """r_i = x_i**2 - x_{i-1} * x_{i+1} for the interior points: a banded Jacobian."""
    g = gs.Graph()
    x = g.input("x", shape=(N,))
    g.output("r", x[1:-1] ** 2 - x[:-2] * x[2:])
    return g


def tridiagonal_jacobian(x: np.ndarray) -> np.ndarray:
    J = np.zeros((N - 2, N))
    for i in range(N - 2):
        J[i, i] = -x[i + 2]
        J[i, i + 1] = 2 * x[i + 1]
        J[i, i + 2] = -x[i]
    return J


def scalar_function() -> gs.Graph:
    """f = sum(x**2 * y + sin(x)): H_xx = diag(2y - sin x), H_xy = diag(2x), H_yy = 0."""
    g = gs.Graph()
    x = g.input("x", shape=(N,))
    y = g.input("y", shape=(N,))
    g.output("f", gs.sum(x**2 * y + gs.sin(x)))
    return g


def closed_hessian(x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {
        "x": {"x": np.diag(2 * y - np.sin(x)), "y": np.diag(2 * x)},
        "y": {"x": np.diag(2 * x), "y": np.zeros((N, N))},
    }


@pytest.fixture(params=["client", "async", "local"])
def call(request: Any, server: Any) -> Any:
    """``call(method, *args, **kwargs)`` on a Client, an AsyncClient or a LocalClient."""
    if request.param == "local":
        local = gs.LocalClient()
        return lambda name, *a, **k: getattr(local, name)(*a, **k)
    if request.param == "client":
        client = gs.Client(server.address)
        request.addfinalizer(client.close)
        return lambda name, *a, **k: getattr(client, name)(*a, **k)

    def run(name: str, *a: Any, **k: Any) -> Any:
        async def go() -> Any:
            async with gs.AsyncClient(server.address) as client:
                return await getattr(client, name)(*a, **k)

        return asyncio.run(go())

    return run


# ---- sparse Jacobians and patterns ---------------------------------------------------------------


def test_sparse_jacobian_equals_the_dense_one_and_the_closed_form(call: Any) -> None:
    g = tridiagonal()
    J = call("jacobian", g, {"x": X0}, of="r", wrt="x", sparse=True)
    assert isinstance(J, sp.csr_array) and J.shape == (N - 2, N)
    assert J.nnz == 3 * (N - 2)
    np.testing.assert_allclose(J.toarray(), tridiagonal_jacobian(X0), rtol=1e-12)
    np.testing.assert_array_equal(J.toarray(), call("jacobian", g, {"x": X0}, of="r", wrt="x"))


def test_sparse_jacobian_of_an_elementwise_op_is_its_diagonal(call: Any) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2, 3))
    g.output("s", gs.sin(x) * 2.0)
    x0 = RNG.normal(size=(2, 3))
    nested = call("jacobian", g, {"x": x0}, of=["s"], wrt=["x"], sparse=True)
    J = nested["s"]["x"]
    assert isinstance(J, sp.csr_array) and J.shape == (6, 6) and J.nnz == 6
    np.testing.assert_allclose(J.diagonal(), 2 * np.cos(x0).ravel(), rtol=1e-12)


def test_jacobian_sparsity_is_the_structural_pattern(call: Any) -> None:
    pattern = call("jacobian_sparsity", tridiagonal(), of="r", wrt="x")
    assert isinstance(pattern, sp.csr_array) and pattern.dtype == bool
    np.testing.assert_array_equal(pattern.toarray(), tridiagonal_jacobian(X0 + 3.0) != 0)
    nested = call("jacobian_sparsity", scalar_function(), of=["f"], wrt=["x", "y"])
    assert nested["f"]["x"].shape == (1, N) and nested["f"]["x"].nnz == N


def test_a_client_that_does_not_ask_gets_dense_blocks(stub: Any) -> None:
    request = pb.JacobianRequest(graph=tridiagonal().to_proto(), of=["r"], wrt=["x"])
    request.inputs["x"].CopyFrom(tensor_codec.to_tensor(X0))
    assert stub.Jacobian(request).blocks[0].WhichOneof("structure") == "dense"
    request.structured = True
    block = stub.Jacobian(request).blocks[0]
    assert block.WhichOneof("structure") == "sparse" and list(block.shape) == [N - 2, N]
    csr = block.sparse
    assert (csr.rows, csr.cols) == (N - 2, N)
    indptr = tensor_codec.from_tensor(csr.indptr)
    assert indptr.dtype == np.int64 and indptr.tolist() == list(range(0, 3 * (N - 1), 3))


# ---- Hessians and HVPs ---------------------------------------------------------------------------


def test_hessian_blocks_match_the_closed_form(call: Any) -> None:
    g, at = scalar_function(), {"x": X0, "y": Y0}
    H = call("hessian", g, at, of="f", wrt=["x", "y"])
    expected = closed_hessian(X0, Y0)
    for a in "xy":
        for b in "xy":
            assert H[a][b].shape == (N, N)
            np.testing.assert_allclose(H[a][b], expected[a][b], rtol=1e-12, atol=1e-15)
    single = call("hessian", g, at, wrt="x")
    np.testing.assert_allclose(single, expected["x"]["x"], rtol=1e-12)
    sparse = call("hessian", g, at, wrt=["x", "y"], sparse=True)
    assert isinstance(sparse["x"]["y"], sp.csr_array) and sparse["x"]["y"].nnz <= N
    for a in "xy":
        for b in "xy":
            np.testing.assert_allclose(sparse[a][b].toarray(), H[a][b], rtol=1e-12, atol=1e-15)


def test_hessian_of_a_matrix_input_has_shape_wrt_shape_twice(call: Any) -> None:
    g = gs.Graph()
    W = g.input("W", shape=(2, 3))
    g.output("q", gs.sum(W**3))
    W0 = RNG.normal(size=(2, 3))
    H = call("hessian", g, {"W": W0}, of="q", wrt="W")
    assert H.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(H.reshape(6, 6), np.diag(6 * W0.ravel()), rtol=1e-12)


def test_hvp_equals_h_times_v(call: Any) -> None:
    g, at = scalar_function(), {"x": X0, "y": Y0}
    vx, vy = RNG.normal(size=N), RNG.normal(size=N)
    H = closed_hessian(X0, Y0)
    out = call("hvp", g, at, "f", ["x", "y"], {"x": vx, "y": vy})
    np.testing.assert_allclose(out["x"], H["x"]["x"] @ vx + H["x"]["y"] @ vy, rtol=1e-12)
    np.testing.assert_allclose(out["y"], H["y"]["x"] @ vx, rtol=1e-12)
    np.testing.assert_allclose(call("hvp", g, at, None, "x", vx), H["x"]["x"] @ vx, rtol=1e-12)


# ---- derivative programs -------------------------------------------------------------------------


def test_derivative_program_is_a_graph_that_reads_like_a_jaxpr(call: Any) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    g.output("y", gs.sum(gs.sin(x) * x))
    for kind in ("vjp", "jvp", "hvp"):
        program = call("derivative_program", g, of="y", wrt="x", kind=kind)
        assert isinstance(program, gs.Graph)
        assert "x" in program.input_names
        lines = str(program).splitlines()
        assert len(lines) == 1 + len(program) and repr(program) == str(program)
        assert any("cos" in line for line in lines), kind  # d sin = cos


def test_the_vjp_program_evaluates_to_the_gradient(server: Any) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    g.output("y", gs.sum(gs.sin(x) * x))
    x0 = np.array([0.3, -1.2, 2.0])
    with gs.Client(server.address) as c:
        program = c.derivative_program(g, of="y", wrt="x", kind="vjp")
        seeds = {n: np.ones(()) for n in program.input_names if n != "x"}
        values = c.evaluate(program, {"x": x0, **seeds})
    gradient = np.sin(x0) + x0 * np.cos(x0)
    assert any(
        np.shape(v) == (3,) and np.allclose(v, gradient, rtol=1e-12) for v in values.values()
    )


# ---- errors --------------------------------------------------------------------------------------


def test_errors_name_the_field(server: Any, stub: Any) -> None:
    with gs.Client(server.address) as c:
        with pytest.raises(gs.InvalidArgument) as info:
            c.hessian(tridiagonal(), {"x": X0}, of="r", wrt="x")
        assert info.value.field_violations[0][0] == "of"
        with pytest.raises(gs.InvalidArgument) as info:
            c.hvp(scalar_function(), {"x": X0, "y": Y0}, "f", "x", np.ones(N + 1))
        assert info.value.field_violations == [
            ('vectors["x"].shape', f"got [{N + 1}], expected [{N}]")
        ]
        with pytest.raises(gs.InvalidArgument) as info:
            c.derivative_program(tridiagonal(), kind="hessian")
        assert info.value.field_violations[0][0] == "kind"
        with pytest.raises(gs.InvalidArgument) as info:
            c.jacobian_sparsity(tridiagonal(), of="r", wrt="nope")
        assert info.value.field_violations[0][0] == 'wrt["nope"]'
    request = pb.HvpRequest(graph=scalar_function().to_proto(), of="f", wrt=["x"])
    for name, value in (("x", X0), ("y", Y0)):
        request.inputs[name].CopyFrom(tensor_codec.to_tensor(value))
    with pytest.raises(grpc.RpcError) as rpc:
        stub.Hvp(request)
    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'vectors["x"]' in rpc.value.details()
    request = pb.DerivativeProgramRequest(graph=scalar_function().to_proto())
    with pytest.raises(grpc.RpcError) as rpc:
        stub.DerivativeProgram(request)
    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kind" in rpc.value.details()


def test_over_the_unary_limit_the_server_refuses_and_the_sdk_streams(make_server: Any) -> None:
    """A dense Hessian over max_jacobian_elements, and a structured Jacobian with more stored
    entries, are JACOBIAN_TOO_LARGE as unary calls; the SDK sends them by their streams."""
    small = make_server(max_jacobian_elements=N * N)
    at = {"x": X0, "y": Y0}
    channel, stub = small.stub()
    with channel:
        request = pb.HessianRequest(graph=scalar_function().to_proto(), inputs=tensors(at))
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Hessian(request)  # 4 N^2 elements
        error = rich_error(rpc.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason == "JACOBIAN_TOO_LARGE" and "StreamHessian" in error.message
        assert error.metadata["limit"] == "max_jacobian_elements"
    closed = closed_hessian(X0, Y0)
    with gs.Client(small.address) as c:
        np.testing.assert_allclose(c.hessian(scalar_function(), at, wrt="x"), closed["x"]["x"])
        H = c.hessian(scalar_function(), at, wrt=["x", "y"])
        sparse = c.hessian(scalar_function(), at, wrt=["x", "y"], sparse=True)  # 3N stored
    for a in "xy":
        for b in "xy":
            np.testing.assert_allclose(H[a][b], closed[a][b], atol=1e-12)
            np.testing.assert_allclose(sparse[a][b].toarray(), closed[a][b], atol=1e-12)
    tiny = make_server(max_jacobian_elements=N)
    channel, stub = tiny.stub()
    with channel:
        request = pb.JacobianRequest(
            graph=tridiagonal().to_proto(), inputs=tensors({"x": X0}), structured=True
        )
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Jacobian(request)
        error = rich_error(rpc.value)
        assert error.reason == "JACOBIAN_TOO_LARGE"
        assert f"{3 * (N - 2)} stored entries" in error.message
    with gs.Client(tiny.address) as c:
        J = c.jacobian(tridiagonal(), {"x": X0}, of="r", wrt="x", sparse=True)
    np.testing.assert_allclose(J.toarray(), tridiagonal_jacobian(X0), rtol=1e-12)


def test_features_list_the_new_rpcs(server: Any) -> None:
    with gs.Client(server.address) as c:
        features = set(c.server_info().features)
    assert {"hessian", "hvp", "jacobian_sparsity", "derivative_program"} <= features


def test_deadlines_stop_hessians_and_hvps_and_free_the_worker(make_server: Any) -> None:
    """sum(tanh(... tanh(x @ W + b) ... @ W)): 300 steps of 300x300 matmuls, seconds of work
    for each of the many passes."""
    import time

    n, steps = 300, 300
    nodes, prev = [("xb", "add", ["x", "b"], {})], "xb"
    for i in range(steps):
        nodes += [(f"m{i}", "matmul", [prev, "W"], {}), (f"h{i}", "tanh", [f"m{i}"], {})]
        prev = f"h{i}"
    nodes.append(("loss", "sum", [prev], {}))
    specs = [("x", "float64", [n, n]), ("W", "float64", [n, n]), ("b", "float64", [n])]
    chain = G(specs, nodes, ["loss"])
    feeds = tensors({"x": np.full((n, n), 0.01), "W": np.eye(n), "b": np.zeros(n)})
    _, stub = make_server(worker_threads=1).stub()
    for method, request in (
        (stub.Hvp, pb.HvpRequest(graph=chain.proto(), inputs=feeds, of="loss", wrt=["W"])),
        (stub.Hessian, pb.HessianRequest(graph=chain.proto(), inputs=feeds, wrt=["b"])),
    ):
        if method is stub.Hvp:
            request.vectors["W"].CopyFrom(tensor_codec.to_tensor(np.ones((n, n))))
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 3
        tiny = pb.EvaluateRequest(graph=tridiagonal().to_proto(), inputs=tensors({"x": X0}))
        start = time.monotonic()
        stub.Evaluate(tiny, timeout=10)  # the one worker is free again at once
        assert time.monotonic() - start < 1.0
