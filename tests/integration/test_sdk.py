"""The Python SDK against a real server: every call shape of design section 7, the errors, the
graph-id cache and its transparent resend, the StreamJacobian fallback, AsyncClient and
LocalClient parity, TLS and tokens."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import gradserve_client as gs
import grpc
import numpy as np
import pytest

RNG = np.random.default_rng(0)
X0 = np.array([0.5, -1.0, 2.0])
W0 = RNG.normal(size=(2, 3))


# ----------------------------------------------------------------------------------------------
# Helpers


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Records (method, graph source) of every call the client makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def _record(self, details: Any, request: Any) -> None:
        method = details.method.rsplit("/", 1)[-1]
        source = None
        if request.DESCRIPTOR.oneofs_by_name.get("graph_source") is not None:
            source = request.WhichOneof("graph_source")
        self.calls.append((method, source))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details, request)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details, request)
        return continuation(details, request)


def neuron_graph() -> gs.Graph:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    W = g.input("W", shape=(2, 3))
    y = g.output("y", gs.tanh(W @ x + 1.0))
    g.output("loss", gs.sum(y * y))
    return g


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[gs.Client]:
    with gs.Client(server.address, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def local() -> gs.LocalClient:
    return gs.LocalClient()


@pytest.fixture
def recorder(server: Any) -> Iterator[tuple[gs.Client, Recorder]]:
    rec = Recorder()
    with gs.Client(server.address, timeout=30, interceptors=[rec]) as c:
        yield c, rec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Call shapes


def test_evaluate_returns_every_output(client: gs.Client) -> None:
    out = client.evaluate(neuron_graph(), {"x": X0, "W": W0})
    y = np.tanh(W0 @ X0 + 1.0)
    assert list(out) == ["y", "loss"]
    np.testing.assert_allclose(out["y"], y)
    np.testing.assert_allclose(out["loss"], np.sum(y * y))
    assert client.evaluate(neuron_graph(), {"x": X0, "W": W0}, outputs="loss").keys() == {"loss"}


def test_inputs_may_be_python_scalars_and_lists(client: gs.Client) -> None:
    g = gs.Graph()
    x = g.input("x", dtype="float32")
    v = g.input("v", shape=(2,), dtype="float32")
    n = g.input("n", shape=(2,), dtype="int64")
    g.output("y", x * gs.sum(v))
    g.output("m", n * 2)
    out = client.evaluate(g, {"x": 2, "v": [1, 2], "n": [3, 4]})
    assert out["y"].dtype == np.float32 and out["y"] == pytest.approx(6.0)
    assert out["m"].dtype == np.int64 and out["m"].tolist() == [6, 8]
    assert client.grad(g, {"x": 2, "v": [1.5, 2.5], "n": [0, 0]}, of="y", wrt="x") == 4.0


def test_jacobian_call_shapes(client: gs.Client) -> None:
    g, inputs = neuron_graph(), {"x": X0, "W": W0}
    z = W0 @ X0 + 1.0
    d = 1 - np.tanh(z) ** 2
    J = client.jacobian(g, inputs, of="y", wrt="x")
    assert isinstance(J, np.ndarray) and J.shape == (2, 3)
    np.testing.assert_allclose(J, d[:, None] * W0)
    nested = client.jacobian(g, inputs, of=["y"], wrt=["x", "W"])
    assert list(nested) == ["y"] and list(nested["y"]) == ["x", "W"]
    assert nested["y"]["W"].shape == (2, 2, 3)
    np.testing.assert_allclose(nested["y"]["W"][1, 1], d[1] * X0)
    for mode in ("forward", "reverse", "auto"):
        np.testing.assert_allclose(client.jacobian(g, inputs, of="y", wrt="x", mode=mode), J)
    everything = client.jacobian(g, inputs)  # every output, every float input
    assert set(everything) == {"y", "loss"} and set(everything["loss"]) == {"x", "W"}
    assert everything["loss"]["x"].shape == (3,)


def test_grad_vjp_jvp(client: gs.Client, local: gs.LocalClient) -> None:
    g, inputs = neuron_graph(), {"x": X0, "W": W0}
    gx = client.grad(g, inputs, of="loss", wrt="x")
    assert isinstance(gx, np.ndarray) and gx.shape == (3,)
    both = client.grad(g, inputs, of="loss", wrt=["x", "W"])
    assert list(both) == ["x", "W"] and both["W"].shape == (2, 3)
    np.testing.assert_allclose(both["x"], gx)
    J = client.jacobian(g, inputs, of="y", wrt="x")
    v = np.array([1.0, -2.0])
    vjp = client.vjp(g, inputs, cotangents={"y": v}, wrt=["x"])
    np.testing.assert_allclose(vjp["x"], v @ J)
    assert set(client.vjp(g, inputs, cotangents={"y": v})) == {"x", "W"}
    t = np.array([0.1, 0.2, 0.3])
    jvp = client.jvp(g, inputs, tangents={"x": t}, of=["y"])
    np.testing.assert_allclose(jvp["y"], J @ t)
    np.testing.assert_allclose(client.jvp(g, inputs, tangents={"x": t}, of="y"), J @ t)
    np.testing.assert_allclose(local.vjp(g, inputs, {"y": v}, "x"), vjp["x"])


def test_operators_server_info_health(client: gs.Client) -> None:
    ops = {op.name: op for op in client.operators()}
    assert {"sin", "matmul", "where", "stack"} <= set(ops)
    assert ops["stack"].arity == -1 and not ops["less"].differentiable
    info = client.server_info()
    assert info.version and info.opset >= 1 and "max_message_bytes" in info.limits
    assert client.health() == "SERVING"


# ----------------------------------------------------------------------------------------------
# Errors


def test_string_array_refused_before_any_rpc(recorder: tuple[gs.Client, Recorder]) -> None:
    c, rec = recorder
    g = gs.Graph()
    g.output("y", gs.sin(g.input("x", shape=(2,))))
    for bad in (np.array(["a", "b"]), ["a", "b"], np.array([object(), 1], dtype=object)):
        with pytest.raises(gs.InvalidArgument, match="x") as info:
            c.evaluate(g, {"x": bad})
        assert isinstance(info.value, TypeError)
        assert info.value.field_violations[0][0] == 'inputs["x"]'
    with pytest.raises(gs.InvalidArgument):
        c.jvp(g, {"x": [1.0, 2.0]}, tangents={"x": ["a", "b"]})
    assert rec.calls == []


def test_errors_raise_the_subclass_with_field_violations(client: gs.Client) -> None:
    g = neuron_graph()
    with pytest.raises(gs.InvalidArgument) as info:
        client.evaluate(g, {"x": [1.0, 2.0], "W": W0})
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations[0][0] == 'inputs["x"].shape'
    assert err.reason == "INVALID_INPUT" and isinstance(err, gs.GradserveError)
    with pytest.raises(gs.InvalidArgument) as info:
        client.jacobian(g, {"x": X0, "W": W0}, of="y", wrt="nope")
    assert "nope" in info.value.field_violations[0][0]
    with pytest.raises(gs.InvalidArgument, match="scalar"):
        client.grad(g, {"x": X0, "W": W0}, of="y", wrt="x")
    with pytest.raises(gs.InvalidArgument, match="mode"):
        client.jacobian(g, {"x": X0, "W": W0}, of="y", wrt="x", mode="sideways")


def test_unreachable_server_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    with gs.Client(address, retries=0, timeout=5) as c, pytest.raises(gs.Unavailable) as info:
        c.health()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_deadline_exceeded(server: Any) -> None:
    g = gs.Graph()
    a = g.input("a", shape=(600, 600))
    g.output("y", gs.sum(gs.tanh(a @ a @ a @ a)))
    with gs.Client(server.address, timeout=0.001) as c, pytest.raises(gs.DeadlineExceeded):
        c.jacobian(g, {"a": np.ones((600, 600))}, of="y", wrt="a")


def test_token_auth(server_process: Any, tmp_path: Any) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    proc = server_process("--auth-token-file", str(tokens))
    g = gs.Graph()
    g.output("y", gs.exp(g.input("x")))
    with gs.Client(proc.address, timeout=10) as c:
        with pytest.raises(gs.Unauthenticated):
            c.evaluate(g, {"x": 0.0})
        assert c.health() == "SERVING"  # health needs no token
    with gs.Client(proc.address, timeout=10, token="s3cret") as c:
        assert c.evaluate(g, {"x": 0.0})["y"] == 1.0


def test_tls(server_process: Any, tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    proc = server_process(
        "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")
    )
    g = gs.Graph()
    g.output("y", gs.exp(g.input("x")))
    tls = gs.TLS(ca=ca.cert_pem.bytes(), server_name="localhost")
    with gs.Client(f"localhost:{proc.port}", tls=tls, timeout=10) as c:
        assert c.evaluate(g, {"x": 0.0})["y"] == 1.0


# ----------------------------------------------------------------------------------------------
# Graph cache


def test_graph_sent_once_then_by_id(recorder: tuple[gs.Client, Recorder]) -> None:
    c, rec = recorder
    g = neuron_graph()
    inputs = {"x": X0, "W": W0}
    c.evaluate(g, inputs)
    c.grad(g, inputs, of="loss", wrt="W")
    c.jacobian(g, inputs, of="y", wrt="x")
    c.jvp(g, inputs, tangents={"x": X0}, of="y")
    # (the jacobian asks GetServerInfo once, for the server's limits)
    sources = [s for m, s in rec.calls if m != "GetServerInfo"]
    assert sources == ["graph", "graph_id", "graph_id", "graph_id"]
    g.output("z", g.var("y") * 2.0)  # a new version of the graph is a new graph
    c.evaluate(g, inputs)
    assert rec.calls[-1] == ("Evaluate", "graph")


def test_transparent_resend_after_server_restart(server_process: Any) -> None:
    proc = server_process("--port", str(free_port()))
    rec = Recorder()
    g = neuron_graph()
    inputs = {"x": X0, "W": W0}
    with gs.Client(proc.address, timeout=20, interceptors=[rec]) as c:
        before = c.evaluate(g, inputs)["loss"]
        assert c.evaluate(g, inputs)["loss"] == before
        proc.restart()  # same port, empty graph cache
        assert c.evaluate(g, inputs)["loss"] == before
        assert c.evaluate(g, inputs)["loss"] == before
    sources = [s for _, s in rec.calls]
    # graph, then id; after the restart: id (NOT_FOUND), graph again, then id.
    assert sources == ["graph", "graph_id", "graph_id", "graph", "graph_id"]


# ----------------------------------------------------------------------------------------------
# StreamJacobian fallback


def big_jacobian_graph() -> gs.Graph:
    g = gs.Graph()
    x = g.input("x", shape=(40,))
    A = g.input("A", shape=(30, 40))
    g.output("y", gs.sin(A @ x) * gs.sum(x))
    return g


def test_stream_jacobian_fallback(make_server: Any, local: gs.LocalClient) -> None:
    srv = make_server(max_jacobian_elements=100)
    g = big_jacobian_graph()
    inputs = {"x": RNG.normal(size=40), "A": RNG.normal(size=(30, 40))}
    want = local.jacobian(g, inputs, of=["y"], wrt=["x", "A"])
    rec = Recorder()
    with gs.Client(srv.address, timeout=30, interceptors=[rec]) as c:
        # The server's limits are known (asked once): the Jacobian goes straight to the stream.
        got = c.jacobian(g, inputs, of=["y"], wrt=["x", "A"])
        assert [m for m, _ in rec.calls] == ["GetServerInfo", "StreamJacobian"]
        np.testing.assert_allclose(got["y"]["x"], want["y"]["x"], rtol=1e-12)
        np.testing.assert_allclose(got["y"]["A"], want["y"]["A"], rtol=1e-12)
        assert got["y"]["A"].shape == (30, 30, 40)
        one = c.jacobian(g, inputs, of="y", wrt="x", mode="forward")
        np.testing.assert_allclose(one, want["y"]["x"], rtol=1e-12)
        assert rec.calls[-1] == ("StreamJacobian", "graph_id")
    rec = Recorder()
    with gs.Client(srv.address, timeout=30, interceptors=[rec]) as c:
        c._results.server_limits = {}  # as if the server said nothing: the safety net
        got = c.jacobian(g, inputs, of=["y"], wrt=["x", "A"])
        assert [m for m, _ in rec.calls] == ["Jacobian", "StreamJacobian"]
        np.testing.assert_allclose(got["y"]["A"], want["y"]["A"], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# AsyncClient and LocalClient parity


def test_async_client_parity(server: Any, make_server: Any, client: gs.Client) -> None:
    g, inputs = neuron_graph(), {"x": X0, "W": W0}
    small = make_server(max_jacobian_elements=100)
    big = big_jacobian_graph()
    big_inputs = {"x": RNG.normal(size=40), "A": RNG.normal(size=(30, 40))}

    async def run() -> dict[str, Any]:
        async with gs.AsyncClient(server.address, timeout=30) as c:
            out = {
                "evaluate": await c.evaluate(g, inputs),
                "jacobian": await c.jacobian(g, inputs, of=["y"], wrt=["x", "W"]),
                "grad": await c.grad(g, inputs, of="loss", wrt="W"),
                "vjp": await c.vjp(g, inputs, cotangents={"y": [1.0, 2.0]}, wrt="x"),
                "jvp": await c.jvp(g, inputs, tangents={"W": W0}, of="loss"),
                "health": await c.health(),
                "ops": len(await c.operators()),
            }
            with pytest.raises(gs.InvalidArgument) as info:
                await c.evaluate(g, {"x": [1.0], "W": W0})
            out["error"] = info.value.field_violations
        async with gs.AsyncClient(small.address, timeout=30) as c:
            out["stream"] = await c.jacobian(big, big_inputs, of="y", wrt="A")
        return out

    got = asyncio.run(run())
    np.testing.assert_allclose(got["evaluate"]["y"], client.evaluate(g, inputs)["y"])
    want_j = client.jacobian(g, inputs, of=["y"], wrt=["x", "W"])
    np.testing.assert_allclose(got["jacobian"]["y"]["W"], want_j["y"]["W"])
    np.testing.assert_allclose(got["grad"], client.grad(g, inputs, of="loss", wrt="W"))
    np.testing.assert_allclose(got["vjp"], client.vjp(g, inputs, {"y": [1.0, 2.0]}, "x"))
    np.testing.assert_allclose(got["jvp"], client.jvp(g, inputs, {"W": W0}, "loss"))
    assert got["health"] == "SERVING" and got["ops"] == len(client.operators())
    assert got["error"][0][0] == 'inputs["x"].shape'
    np.testing.assert_allclose(got["stream"], client.jacobian(big, big_inputs, of="y", wrt="A"))


def test_local_client_equals_client(client: gs.Client, local: gs.LocalClient) -> None:
    g, inputs = neuron_graph(), {"x": X0, "W": W0}
    for method, args in (
        ("evaluate", ()),
        ("jacobian", (["y", "loss"], ["x", "W"])),
        ("grad", ("loss", ["x", "W"])),
        ("vjp", ({"y": [0.5, -1.0]},)),
        ("jvp", ({"x": [1.0, 0.0, 0.0]},)),
    ):
        remote = getattr(client, method)(g, inputs, *args)
        here = getattr(local, method)(g, inputs, *args)
        assert _flatten(remote).keys() == _flatten(here).keys(), method
        for key, value in _flatten(remote).items():
            np.testing.assert_allclose(_flatten(here)[key], value, rtol=1e-13, err_msg=key)
    with pytest.raises(gs.InvalidArgument) as remote_err:
        client.evaluate(g, {"x": X0, "W": np.ones((3, 2))})
    with pytest.raises(gs.InvalidArgument) as local_err:
        local.evaluate(g, {"x": X0, "W": np.ones((3, 2))})
    assert remote_err.value.field_violations == local_err.value.field_violations
    assert remote_err.value.reason == local_err.value.reason


def _flatten(value: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        out: dict[str, np.ndarray] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(value)}


# ----------------------------------------------------------------------------------------------
# The derivative facts (derivative-facts.md), through Client and LocalClient


@pytest.fixture(params=["client", "local"])
def any_client(request: Any, client: gs.Client, local: gs.LocalClient) -> Any:
    return client if request.param == "client" else local


def scalar_fn(fn: Any) -> gs.Graph:
    g = gs.Graph()
    g.output("y", fn(g.input("x")))
    return g


@pytest.mark.parametrize(
    ("fn", "derivative"),
    [
        (lambda x: 9 * (x + x**2), lambda x: 9 + 18 * x),
        (lambda x: gs.sin(x**2), lambda x: 2 * x * np.cos(x**2)),
        (lambda x: gs.ln(gs.sin(x**3) ** 2), lambda x: 6 * x**2 * np.cos(x**3) / np.sin(x**3)),
        (lambda x: x + x**2, lambda x: 1 + 2 * x),
        (lambda x: gs.sin(x + x**2), lambda x: np.cos(x + x**2) * (1 + 2 * x)),
        (lambda x: x * x**2, lambda x: 3 * x**2),
    ],
)
def test_chain_rules(any_client: Any, fn: Any, derivative: Any) -> None:
    for x in (0.7, 1.3):
        assert any_client.grad(scalar_fn(fn), {"x": x}, of="y", wrt="x") == pytest.approx(
            derivative(x), rel=1e-12
        )


def test_vector_chain_rule(any_client: Any) -> None:
    g = gs.Graph()
    x = g.input("x")
    g.output("y", gs.stack([gs.ln(x**2), gs.sin(3 * x)]))
    J = any_client.jacobian(g, {"x": 0.7}, of="y", wrt="x")
    assert J.shape == (2,)
    np.testing.assert_allclose(J, [2 / 0.7, 3 * np.cos(2.1)], rtol=1e-12)


def test_gradient_and_jacobian_of_two_functions(any_client: Any) -> None:
    g = gs.Graph()
    x, y = g.input("x"), g.input("y")
    g.output("f", 3 * x**2 * y)
    g.output("g", 2 * x + y**8)
    at = {"x": 1.5, "y": 0.9}
    J = any_client.jacobian(g, at, of=["f", "g"], wrt=["x", "y"])
    got = [[J[o][w] for w in ("x", "y")] for o in ("f", "g")]
    np.testing.assert_allclose(got, [[6 * 0.9 * 1.5, 3 * 1.5**2], [2, 8 * 0.9**7]], rtol=1e-12)


def test_neuron_loss_gradient(any_client: Any) -> None:
    N = 8
    X = RNG.normal(size=(N, 3))
    Y = RNG.normal(size=N)
    w, b = np.array([0.3, -0.2, 0.5]), 0.1
    g = gs.Graph()
    gw, gb = g.input("w", shape=(3,)), g.input("b")
    act = gs.relu(gs.matmul(g.constant(X), gw) + gb)
    g.output("C", gs.mean((g.constant(Y) - act) ** 2))
    grads = any_client.grad(g, {"w": w, "b": b}, of="C", wrt=["w", "b"])
    z = X @ w + b
    e = np.where(z > 0, z - Y, 0.0)
    np.testing.assert_allclose(grads["w"], 2 / N * (e @ X), rtol=1e-12)
    np.testing.assert_allclose(grads["b"], 2 / N * e.sum(), rtol=1e-12)


def test_where_nan_convention(any_client: Any) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    g.output("y", gs.sum(gs.where(x > 0, gs.log(x), 0.0)))
    grad = any_client.grad(g, {"x": [-1.0, 0.0, 2.0]}, of="y", wrt="x")
    np.testing.assert_array_equal(grad, [0.0, 0.0, 0.5])
    relu = scalar_fn(gs.relu)
    assert any_client.grad(relu, {"x": 0.0}, of="y", wrt="x") == 0.0
