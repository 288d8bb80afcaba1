"""Every RPC's happy path, against the core's own results, plus health, reflection and cache."""

from __future__ import annotations

import numpy as np
import pytest
from gradserve import autodiff
from gradserve.autodiff import Program
from gradserve_client.proto import gradient_service_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from wire import G, arrays, tensors

# y = tanh(W @ x + b), loss = sum(y * y)
MLP = G(
    inputs=[("x", "float64", [3]), ("W", "float64", [2, 3]), ("b", "float64", [2])],
    nodes=[
        ("h", "matmul", ["W", "x"], {}),
        ("z", "add", ["h", "b"], {}),
        ("y", "tanh", ["z"], {}),
        ("yy", "multiply", ["y", "y"], {}),
        ("loss", "sum", ["yy"], {}),
    ],
    outputs=["y", "loss"],
)
RNG = np.random.default_rng(0)
FEED = {"x": RNG.normal(size=3), "W": RNG.normal(size=(2, 3)), "b": RNG.normal(size=2)}
PROGRAM = Program.build(MLP.graphdef())


def test_evaluate(stub):
    r = stub.Evaluate(pb.EvaluateRequest(graph=MLP.proto(), inputs=tensors(FEED)))
    assert r.graph_id == PROGRAM.digest
    expected = autodiff.evaluate(PROGRAM, FEED)
    got = arrays(r.outputs)
    assert set(got) == {"y", "loss"}
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
    # only some outputs, by graph_id
    r2 = stub.Evaluate(
        pb.EvaluateRequest(graph_id=r.graph_id, inputs=tensors(FEED), outputs=["loss"])
    )
    assert r2.graph_id == r.graph_id
    assert set(r2.outputs) == {"loss"}


@pytest.mark.parametrize("mode", [pb.JACOBIAN_MODE_AUTO, pb.JACOBIAN_MODE_FORWARD, 3])
def test_jacobian(stub, mode):
    r = stub.Jacobian(
        pb.JacobianRequest(graph=MLP.proto(), inputs=tensors(FEED), of=["y"], mode=mode)
    )
    values, jac = autodiff.jacobian(PROGRAM, FEED, ["y"], ["x", "W", "b"])
    assert r.graph_id == PROGRAM.digest
    assert [(b.of, b.wrt) for b in r.blocks] == [("y", "x"), ("y", "W"), ("y", "b")]
    for block in r.blocks:
        assert tuple(block.shape) == jac[block.of][block.wrt].shape
        dense = arrays({"d": block.dense})["d"]
        np.testing.assert_allclose(dense, jac[block.of][block.wrt], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(arrays(r.outputs)["y"], values["y"])


def test_stream_jacobian_matches_unary(stub):
    req = dict(graph=MLP.proto(), inputs=tensors(FEED), of=["y", "loss"], wrt=["W"])
    unary = stub.Jacobian(pb.JacobianRequest(**req))
    blocks = list(stub.StreamJacobian(pb.StreamJacobianRequest(**req, rows_per_message=1)))
    assert [(b.of, b.row_start, b.row_count) for b in blocks] == [
        ("y", 0, 1),
        ("y", 1, 1),
        ("loss", 0, 1),
    ]
    for ub in unary.blocks:
        rows = [arrays({"r": b.rows})["r"] for b in blocks if b.of == ub.of]
        assembled = np.concatenate(rows).reshape(tuple(ub.shape))
        np.testing.assert_allclose(assembled, arrays({"d": ub.dense})["d"], rtol=1e-12)
        assert all(tuple(b.shape) == tuple(ub.shape) for b in blocks if b.of == ub.of)


def test_vjp(stub):
    ct = {"y": np.array([0.5, -2.0])}
    r = stub.Vjp(pb.VjpRequest(graph=MLP.proto(), inputs=tensors(FEED), cotangents=tensors(ct)))
    values, grads = autodiff.vjp_values(PROGRAM, FEED, ct, ["x", "W", "b"])
    assert set(r.gradients) == {"x", "W", "b"}
    for k, v in arrays(r.gradients).items():
        np.testing.assert_allclose(v, grads[k], rtol=1e-12)
    np.testing.assert_array_equal(arrays(r.outputs)["y"], values["y"])


def test_jvp(stub):
    t = {"x": np.array([1.0, 0.0, -1.0])}
    r = stub.Jvp(pb.JvpRequest(graph=MLP.proto(), inputs=tensors(FEED), tangents=tensors(t)))
    values, out = autodiff.jvp_values(PROGRAM, FEED, t, ["y", "loss"])
    np.testing.assert_array_equal(arrays(r.outputs)["y"], values["y"])
    for k, v in arrays(r.tangents).items():
        np.testing.assert_allclose(v, out[k], rtol=1e-12)
    assert set(r.outputs) == {"y", "loss"}


def test_list_operators(stub):
    r = stub.ListOperators(pb.ListOperatorsRequest())
    names = [op.name for op in r.operators]
    assert names == sorted(autodiff.OPS)
    assert r.opset >= 1
    by_name = {op.name: op for op in r.operators}
    assert by_name["concatenate"].arity == -1
    assert by_name["matmul"].arity == 2
    assert not by_name["less"].differentiable
    assert by_name["sin"].differentiable and by_name["sin"].doc
    axis = {a.name: a for a in by_name["sum"].attrs}
    assert axis["axis"].kind == pb.ATTR_KIND_INTS and not axis["axis"].required
    assert {a.name: a.kind for a in by_name["slice"].attrs} == {"index": pb.ATTR_KIND_STRING}
    assert by_name["constant"].attrs[0].required


def test_server_info(stub, server):
    r = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert r.version
    assert r.opset >= 1
    assert r.limits.max_message_bytes == server.settings.max_message_bytes
    assert r.limits.max_jacobian_elements == server.settings.max_jacobian_elements
    assert "stream_jacobian" in r.features


def test_dynamic_batch_dimension(stub):
    g = G(
        inputs=[("x", "float64", [-1, 3])],
        nodes=[("s", "sum", ["x"], {"axis": [1]}), ("y", "sin", ["s"], {})],
        outputs=["y"],
    )
    ids = set()
    for batch in (1, 4, 4, 7):
        x = np.arange(batch * 3.0).reshape(batch, 3)
        r = stub.Evaluate(pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": x})))
        np.testing.assert_allclose(arrays(r.outputs)["y"], np.sin(x.sum(1)))
        ids.add(r.graph_id)
        j = stub.Jacobian(pb.JacobianRequest(graph_id=r.graph_id, inputs=tensors({"x": x})))
        assert tuple(j.blocks[0].shape) == (batch, batch, 3)
    assert len(ids) == 1  # one graph, one id, one Program per batch size


def test_graph_cache_hit_by_id(stub, server):
    cache = server.servicer.graph_cache
    r = stub.Evaluate(pb.EvaluateRequest(graph=MLP.proto(), inputs=tensors(FEED)))
    hits = cache.hits
    r2 = stub.Evaluate(pb.EvaluateRequest(graph_id=r.graph_id, inputs=tensors(FEED)))
    assert cache.hits == hits + 1
    assert r.graph_id in cache
    np.testing.assert_array_equal(arrays(r2.outputs)["loss"], arrays(r.outputs)["loss"])


def test_graph_cache_is_bounded(make_server):
    running = make_server(graph_cache_size=2)
    _, stub = running.stub()
    ids = []
    for k in range(3):
        g = G([("x", "float64", [])], [("y", "multiply", ["x", "x"], {})], ["y"])
        g.nodes = [("y" if k == 0 else f"y{k}", "multiply", ["x", "x"], {})]
        g.outputs = [g.nodes[0][0]]
        ids.append(stub.Evaluate(pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": 2.0}))))
    cache = running.servicer.graph_cache
    assert len(cache) == 2
    assert ids[0].graph_id not in cache and ids[2].graph_id in cache


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "gradserve.v1.Gradient"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"gradserve.v1.Gradient", "grpc.health.v1.Health"} <= names
