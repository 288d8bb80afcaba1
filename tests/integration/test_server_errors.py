"""Every error case: its status code, the BadRequest field it names, its ErrorInfo reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from gradserve.rpc.handlers import SERVICE
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_pb2, training_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wire import G, call_error, tensors

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

G1 = G(
    inputs=[("x", "float64", [2, 3]), ("k", "int64", [])],
    nodes=[("h1", "sum", ["x"], {"axis": [1]}), ("y", "exp", ["h1"], {})],
    outputs=["y"],
)
X = np.ones((2, 3))
FEED = {"x": X, "k": np.int64(1)}


def evaluate(stub, graph=None, **kw):
    return call_error(
        stub.Evaluate, pb.EvaluateRequest(graph=(graph or G1).proto(), inputs=tensors(FEED), **kw)
    )


def node_graph(**changes) -> G:
    nodes = [("h1", "sum", ["x"], {"axis": [1]}), ("y", "exp", ["h1"], {})]
    nodes[0] = (*nodes[0][:2], changes.get("inputs", ["x"]), changes.get("attrs", {"axis": [1]}))
    if "op" in changes:
        nodes[0] = ("h1", changes["op"], *nodes[0][2:])
    return G(G1.inputs, nodes, changes.get("outputs", ["y"]))


@pytest.mark.parametrize(
    ("graph", "field"),
    [
        (node_graph(op="no_such_op"), 'graph.nodes["h1"].op'),
        (node_graph(attrs={"axis": [5]}), 'graph.nodes["h1"].attrs.axis'),
        (node_graph(attrs={"axis": "one"}), 'graph.nodes["h1"].attrs.axis'),
        (node_graph(attrs={"colour": 1}), 'graph.nodes["h1"].attrs.colour'),
        (node_graph(inputs=["nope"]), 'graph.nodes["h1"].inputs[0]'),
        (node_graph(inputs=["x", "x"]), 'graph.nodes["h1"].inputs'),
        (node_graph(outputs=["zz"]), "graph.outputs[0]"),
        (node_graph(outputs=[]), "graph.outputs"),
        (G([("x", "float64", [2]), ("x", "float64", [2])], [], ["x"]), 'graph.inputs["x"].name'),
        (G([("x", "float64", [2])], [("y", "add", ["x", "y"], {})], ["y"]), 'graph.nodes["y"]'),
    ],
)
def test_invalid_graph(stub, graph, field):
    err = evaluate(stub, graph)
    assert err.code == INVALID
    assert err.reason == "INVALID_GRAPH"
    assert len(err.fields) == 1 and err.fields[0].startswith(field), err
    assert err.descriptions[0]


def test_bad_input_dtype_in_graph(stub):
    pbg = G1.proto()
    pbg.inputs[0].dtype = 0
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=pbg, inputs=tensors(FEED)))
    assert (err.code, err.fields) == (INVALID, ['graph.inputs["x"].dtype'])


def test_unsupported_opset(stub):
    pbg = G1.proto()
    pbg.opset = 99
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=pbg, inputs=tensors(FEED)))
    assert (err.code, err.fields) == (INVALID, ["graph.opset"])


def _inputs_error(stub, inputs):
    return call_error(stub.Evaluate, pb.EvaluateRequest(graph=G1.proto(), inputs=inputs))


def test_invalid_inputs(stub):
    cases = [
        ({"k": FEED["k"]}, 'inputs["x"]'),  # missing
        ({**FEED, "q": X}, 'inputs["q"]'),  # unknown
        ({**FEED, "x": np.ones((3, 2))}, 'inputs["x"].shape'),
        ({**FEED, "k": np.float64(1.5)}, 'inputs["k"].dtype'),
    ]
    for feed, field in cases:
        err = _inputs_error(stub, tensors(feed))
        assert (err.code, err.fields, err.reason) == (INVALID, [field], "INVALID_INPUT"), err
    bad_bytes = tensors(FEED)
    bad_bytes["x"] = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT64, shape=[2, 3], data=b"xx")
    err = _inputs_error(stub, bad_bytes)
    assert (err.code, err.fields) == (INVALID, ['inputs["x"].data'])
    assert "bytes" in err.descriptions[0]
    no_dtype = tensors(FEED)
    no_dtype["x"] = tensor_pb2.Tensor(shape=[2, 3], data=X.tobytes())
    assert _inputs_error(stub, no_dtype).fields == ['inputs["x"].dtype']


def test_request_fields(stub):
    feed = tensors(FEED)
    cases = [
        (stub.Evaluate, pb.EvaluateRequest(inputs=feed), "graph"),
        (stub.Evaluate, pb.EvaluateRequest(graph=G1.proto(), inputs=feed, outputs=["z"]),
         'outputs["z"]'),
        (stub.Jacobian, pb.JacobianRequest(graph=G1.proto(), inputs=feed, of=["z"]), 'of["z"]'),
        (stub.Jacobian, pb.JacobianRequest(graph=G1.proto(), inputs=feed, wrt=["h1"]),
         'wrt["h1"]'),
        (stub.Jacobian, pb.JacobianRequest(graph=G1.proto(), inputs=feed, wrt=["k"]), 'wrt["k"]'),
        (stub.Jacobian, pb.JacobianRequest(graph=G1.proto(), inputs=feed, mode=42), "mode"),
        (stub.StreamJacobian,
         pb.StreamJacobianRequest(graph=G1.proto(), inputs=feed, rows_per_message=-1),
         "rows_per_message"),
        (stub.Vjp, pb.VjpRequest(graph=G1.proto(), inputs=feed,
                                 cotangents=tensors({"y": np.ones(3)})), 'cotangents["y"].shape'),
        (stub.Vjp, pb.VjpRequest(graph=G1.proto(), inputs=feed,
                                 cotangents=tensors({"q": np.ones(2)})), 'cotangents["q"]'),
        (stub.Jvp, pb.JvpRequest(graph=G1.proto(), inputs=feed,
                                 tangents=tensors({"q": np.ones(2)})), 'tangents["q"]'),
        (stub.Jvp, pb.JvpRequest(graph=G1.proto(), inputs=feed,
                                 tangents=tensors({"x": np.ones(2)})), 'tangents["x"].shape'),
        # JvpRequest has no `wrt`: an int input's tangent is named as the tangent it is
        (stub.Jvp, pb.JvpRequest(graph=G1.proto(), inputs=feed,
                                 tangents=tensors({"k": np.int64(1)})), 'tangents["k"]'),
    ]  # fmt: skip
    for method, request, field in cases:
        err = call_error(method, request)
        assert (err.code, err.fields) == (INVALID, [field]), (field, err)


def test_dynamic_shape_mismatch(stub):
    g = G([("x", "float64", [-1, 3])], [("y", "sin", ["x"], {})], ["y"])
    err = call_error(
        stub.Evaluate, pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": np.ones((2, 4))}))
    )
    assert (err.code, err.fields) == (INVALID, ['inputs["x"].shape'])


def test_unknown_graph_id(stub):
    for method, request in [
        (stub.Evaluate, pb.EvaluateRequest(graph_id="0" * 64)),
        (stub.Jacobian, pb.JacobianRequest(graph_id="0" * 64)),
        (stub.StreamJacobian, pb.StreamJacobianRequest(graph_id="0" * 64)),
        (stub.Vjp, pb.VjpRequest(graph_id="0" * 64)),
        (stub.Jvp, pb.JvpRequest(graph_id="0" * 64)),
    ]:
        err = call_error(method, request)
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert err.reason == "GRAPH_NOT_FOUND"
        assert err.metadata["graph_id"] == "0" * 64


def test_limits(make_server):
    running = make_server(max_graph_nodes=1, max_tensor_elements=5, max_jacobian_elements=10)
    _, stub = running.stub()
    err = evaluate(stub)
    assert (err.code, err.reason) == (EXHAUSTED, "LIMIT_EXCEEDED")
    assert "max_graph_nodes" in err.message and "--max-graph-nodes" in err.message

    small = G([("x", "float64", [-1])], [("y", "sin", ["x"], {})], ["y"])
    err = call_error(
        stub.Evaluate, pb.EvaluateRequest(graph=small.proto(), inputs=tensors({"x": np.ones(6)}))
    )
    assert (err.code, err.reason) == (EXHAUSTED, "LIMIT_EXCEEDED")
    assert 'inputs["x"]' in err.message and "max_tensor_elements" in err.message

    g = G([("x", "float64", [4])], [("y", "outer", ["x", "x"], {})], ["y"])
    request = dict(graph=g.proto(), inputs=tensors({"x": np.arange(4.0)}))
    err = call_error(stub.Jacobian, pb.JacobianRequest(**request))
    assert (err.code, err.reason) == (EXHAUSTED, "JACOBIAN_TOO_LARGE")
    assert "StreamJacobian" in err.message
    # ... and StreamJacobian delivers it
    blocks = list(stub.StreamJacobian(pb.StreamJacobianRequest(**request)))
    assert sum(b.row_count for b in blocks) == 16


def test_message_size_limit(make_server):
    running = make_server(max_message_bytes=64 * 1024)
    _, stub = running.stub()
    g = G([("x", "float64", [-1])], [("y", "sin", ["x"], {})], ["y"])
    err = call_error(
        stub.Evaluate,
        pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": np.ones(20_000)})),
    )
    assert err.code == EXHAUSTED


# ---- payloads that are not protobuf ----------------------------------------------------------


def _garbage(rng, cls) -> list[bytes]:
    """Random payloads that do not parse as ``cls`` (checked locally)."""
    out = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x08"]
    while len(out) < 8:
        data = rng.bytes(int(rng.integers(1, 200)))
        try:
            cls.FromString(data)
        except Exception:
            out.append(data)
    return out


def _raw(channel, method):
    path = f"/{SERVICE.full_name}/{method.name}"
    ident = lambda b: b  # noqa: E731
    if method.client_streaming:
        return lambda data: channel.stream_unary(path, ident, ident)(iter([data]), timeout=10)
    if method.server_streaming:
        return lambda data: list(channel.unary_stream(path, ident, ident)(data, timeout=10))
    return lambda data: channel.unary_unary(path, ident, ident)(data, timeout=10)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_random_bytes_are_invalid_argument(channel, method):
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(method.input_type)
    call = _raw(channel, method)
    for data in _garbage(np.random.default_rng(len(method.name)), cls):
        with pytest.raises(grpc.RpcError) as info:
            call(data)
        assert info.value.code() == INVALID, (method.name, data, info.value.details())
        assert "not a valid" in info.value.details()


def test_put_dataset_checks_every_chunk(stub, channel):
    chunk = training_pb2.DatasetChunk(name="X", dtype=2, shape=[1], data=b"\0" * 8)
    path = f"/{SERVICE.full_name}/PutDataset"
    raw = channel.stream_unary(path, lambda b: b, lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        raw(iter([chunk.SerializeToString(), b"\xff\xff"]), timeout=10)
    assert info.value.code() == INVALID


def test_64_concurrent_bad_requests_then_serving(channel):
    evaluate_raw = channel.unary_unary(f"/{SERVICE.full_name}/Evaluate", lambda b: b, lambda b: b)
    rng = np.random.default_rng(1)
    payloads = _garbage(rng, pb.EvaluateRequest) * 8

    def one(data):
        try:
            evaluate_raw(data, timeout=30)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(one, payloads[:64]))
    assert codes == [INVALID] * 64
    health = health_pb2_grpc.HealthStub(channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_train_without_data_is_invalid(stub):
    # Train is implemented (tests/integration/test_train.py): a request without data is refused
    err = call_error(stub.Train, training_pb2.TrainRequest(graph=G1.proto(), loss="y"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


def test_long_node_source_is_refused_by_name(stub):
    # A source this long in the error details would exceed gRPC's 16 KiB metadata limit.
    nodes = [("h1", "sum", ["nope"], {"axis": [1]}), ("y", "exp", ["h1"], {})]
    graph = G(G1.inputs, nodes, ["y"]).proto()
    graph.nodes[0].source = "A" * 20000
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=graph, inputs=tensors(FEED)))
    assert err.code == INVALID
    assert err.fields == ['graph.nodes["h1"].source']
    assert "more than 1024" in err.descriptions[0]
    graph.nodes[0].source = "A" * 1024  # at the limit: the graph's own error, with its source
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=graph, inputs=tensors(FEED)))
    assert err.code == INVALID and err.fields[0].startswith('graph.nodes["h1"].inputs[0]')


@pytest.mark.parametrize("structured", [False, True])
def test_second_derivatives_name_the_wrt_at_fault_as_the_first_ones_do(stub, structured):
    # One wrt rule for every RPC: "is an input" in rpc/requests.py, "is a float" in the core.
    graph = G(G1.inputs, [("h1", "sum", ["x"], {}), ("y", "exp", ["h1"], {})], ["y"]).proto()
    common = {"graph": graph, "inputs": tensors(FEED), "structured": structured}
    for wrt, message in ((["x", "k"], "is int64: only floats have derivatives"),
                         (["h1"], "not an input of the graph")):  # fmt: skip
        field = f'wrt["{wrt[-1]}"]'
        for method, request in (
            (stub.Jacobian, pb.JacobianRequest(of=["y"], wrt=wrt, **common)),
            (stub.Hessian, pb.HessianRequest(of="y", wrt=wrt, **common)),
            (stub.StreamHessian, pb.StreamHessianRequest(of="y", wrt=wrt, **common)),
        ):
            err = call_error(method, request)
            assert (err.code, err.fields, err.descriptions) == (INVALID, [field], [message]), err
    hvp = pb.HvpRequest(graph=graph, inputs=tensors(FEED), of="y", wrt=["k"],
                        vectors=tensors({"k": np.int64(1)}))  # fmt: skip
    err = call_error(stub.Hvp, hvp)
    assert (err.code, err.fields) == (INVALID, ['wrt["k"]'])
    assert err.descriptions == ["is int64: only floats have derivatives"]
