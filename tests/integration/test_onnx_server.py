"""A real server: inputs with defaults on the wire, and ONNX models as the graph source of every
RPC that takes a graph, with their errors as INVALID_ARGUMENT field violations."""

from __future__ import annotations

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec
from gradserve_client.proto import training_pb2 as tpb
from onnx import TensorProto, helper, numpy_helper
from wire import call_error, tensors

RNG = np.random.default_rng(1)
W = RNG.normal(size=(3, 4)).astype(np.float32)
B = RNG.normal(size=(3,)).astype(np.float32)
X = RNG.normal(size=(5, 4)).astype(np.float32)


def onnx_linear(op_type: str = "Gemm", **attrs) -> bytes:
    """y = tanh(x @ W.T + b) as an ONNX model, with W and b as initializers."""
    nodes = [
        helper.make_node(op_type, ["x", "W", "b"], ["h"], name="gemm", transB=1, **attrs),
        helper.make_node("Tanh", ["h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString()


def forward(x: np.ndarray = X) -> np.ndarray:
    return np.tanh(x @ W.T + B)


def array(t) -> np.ndarray:
    return tensor_codec.from_tensor(t)


def test_evaluate_an_onnx_model_then_call_it_by_graph_id(stub, server) -> None:
    model = onnx_linear()
    first = stub.Evaluate(pb.EvaluateRequest(onnx_model=model, inputs=tensors({"x": X})))
    np.testing.assert_allclose(array(first.outputs["y"]), forward(), rtol=1e-6)
    cache = server.servicer.graph_cache
    hits = cache.hits
    again = stub.Evaluate(pb.EvaluateRequest(onnx_model=model, inputs=tensors({"x": X})))
    assert again.graph_id == first.graph_id and cache.hits == hits + 1  # not converted again
    x2 = X[:2] * 2
    by_id = stub.Evaluate(pb.EvaluateRequest(graph_id=first.graph_id, inputs=tensors({"x": x2})))
    np.testing.assert_allclose(array(by_id.outputs["y"]), forward(x2), rtol=1e-6)


def test_vjp_jvp_and_jacobians_by_the_weights_of_an_onnx_model(stub) -> None:
    model = onnx_linear()
    ct = RNG.normal(size=(5, 3)).astype(np.float32)
    vjp = stub.Vjp(
        pb.VjpRequest(
            onnx_model=model,
            inputs=tensors({"x": X}),
            cotangents=tensors({"y": ct}),
            wrt=["W", "b", "x"],
        )
    )
    d = ct * (1 - forward() ** 2)
    np.testing.assert_allclose(array(vjp.gradients["W"]), d.T @ X, rtol=1e-5)
    np.testing.assert_allclose(array(vjp.gradients["b"]), d.sum(0), rtol=1e-5)
    np.testing.assert_allclose(array(vjp.gradients["x"]), d @ W, rtol=1e-5)

    tb = RNG.normal(size=3).astype(np.float32)
    jvp = stub.Jvp(
        pb.JvpRequest(onnx_model=model, inputs=tensors({"x": X}), tangents=tensors({"b": tb}))
    )
    np.testing.assert_allclose(array(jvp.tangents["y"]), (1 - forward() ** 2) * tb, rtol=1e-5)

    request = dict(onnx_model=model, inputs=tensors({"x": X[:1]}), of=["y"], wrt=["b"])
    jac = stub.Jacobian(pb.JacobianRequest(**request))
    expected = np.diag(1 - forward(X[:1])[0] ** 2)[None]  # y (1, 3) by b (3,)
    np.testing.assert_allclose(array(jac.blocks[0].dense), expected, rtol=1e-5)
    (rows,) = stub.StreamJacobian(pb.StreamJacobianRequest(**request))
    np.testing.assert_allclose(array(rows.rows).reshape(1, 3, 3), expected, rtol=1e-5)


def test_train_the_initializers_of_an_onnx_model(stub) -> None:
    """The model's output is the loss input here: mean((tanh(xW'+b) - t)^2) is added by an
    ONNX Sub/Mul/ReduceMean tail, and only b is trained (W keeps its default)."""
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["y"]),
        helper.make_node("Sub", ["y", "t"], ["r"]),
        helper.make_node("Mul", ["r", "r"], ["r2"]),
        helper.make_node("ReduceMean", ["r2"], ["loss"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "train",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", 3]),
        ],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    t = RNG.normal(size=(5, 3)).astype(np.float32)
    request = tpb.TrainRequest(
        onnx_model=model.SerializeToString(),
        loss="loss",
        params=tensors({"b": B}),
        inline_data=tpb.DataTensors(tensors=tensors({"x": X, "t": t})),
        max_steps=3,
        optimizer=tpb.Optimizer(sgd=tpb.Sgd(lr=0.5)),
    )
    events = list(stub.Train(request))
    b = B.astype(np.float64)
    steps = [ev for ev in events if ev.WhichOneof("event") == "step"]
    assert len(steps) == 3
    for ev in steps:
        y = np.tanh(X @ W.T + b)
        assert ev.step.loss == pytest.approx(np.mean((y - t) ** 2), rel=1e-5)
        b -= 0.5 * (2 * (y - t) * (1 - y**2) / t.size).sum(0)
    np.testing.assert_allclose(array(events[-1].result.params["b"]), b, rtol=1e-4)
    assert set(events[-1].result.params) == {"b"}


def test_the_sdk_sends_a_graph_with_defaults_once(server) -> None:
    g = gs.Graph.from_onnx(onnx_linear())
    g.output("loss", gs.sum(g.var("y")))
    with gs.Client(server.address) as c:
        misses = server.servicer.graph_cache.misses
        grads = c.grad(g, {"x": X}, of="loss", wrt=list(g.defaults))
        grads_again = c.grad(g, {"x": X}, of="loss", wrt=list(g.defaults))
        assert server.servicer.graph_cache.misses == misses + 1  # sent once, then by id
    d = 1 - forward() ** 2
    np.testing.assert_allclose(grads["W"], d.T @ X, rtol=1e-5)
    np.testing.assert_allclose(grads_again["b"], d.sum(0), rtol=1e-5)


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        (b"\x08\x07garbage\xff\xff", "onnx_model", "not"),
        (b"", "onnx_model", "not an ONNX model"),
        (onnx_linear("Hardmax"), 'onnx_model.graph.node["gemm"]', "Hardmax"),
        (onnx_linear(colour=1), 'onnx_model.graph.node["gemm"].attribute', "colour"),
    ],
)
def test_bad_onnx_models_are_invalid_argument_naming_the_node(stub, model, field, words) -> None:
    for rpc, request in [
        (stub.Evaluate, pb.EvaluateRequest(onnx_model=model, inputs=tensors({"x": X}))),
        (stub.Jacobian, pb.JacobianRequest(onnx_model=model, inputs=tensors({"x": X}))),
        (stub.Train, tpb.TrainRequest(onnx_model=model, loss="y")),
    ]:
        err = call_error(rpc, request)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, err
        assert err.reason == "INVALID_GRAPH"
        assert len(err.fields) == 1 and err.fields[0].startswith(field), err.fields
        assert words in err.descriptions[0]


def test_large_evaluate_requests_with_an_onnx_model_are_read(stub) -> None:
    """A request large enough for the in-place reader still finds its onnx_model."""
    x = RNG.normal(size=(8192, 4)).astype(np.float32)
    out = stub.Evaluate(pb.EvaluateRequest(onnx_model=onnx_linear(), inputs=tensors({"x": x})))
    np.testing.assert_allclose(array(out.outputs["y"]), forward(x), rtol=1e-5)


def test_an_input_default_that_does_not_fit_is_invalid_argument(stub) -> None:
    g = gs.Graph()
    g.input("w", shape=(2,))
    g.output("y", gs.sum(g.var("w")))
    proto = g.to_proto()
    proto.inputs[0].default.CopyFrom(tensor_codec.to_tensor(np.ones(3)))
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=proto))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.fields == ['graph.inputs["w"].default.shape']
