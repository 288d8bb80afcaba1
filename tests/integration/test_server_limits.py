"""Memory limits: a request whose values would not fit is refused before anything is allocated,
and a MemoryError that still happens is RESOURCE_EXHAUSTED, never INTERNAL."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve.autodiff import OPS
from gradserve_client.proto import gradient_service_pb2 as pb
from wire import G, call_error, rich_error, tensors

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
N = 200_000
M = 60_000

# (graph, feeds, the node that would hold the value, its type): each value holds ~3e10 elements.
HUGE = {
    "outer": (
        G([("a", "float64", [N]), ("b", "float64", [N])], [("big", "outer", ["a", "b"], {})], []),
        {"a": np.ones(N), "b": np.ones(N)},
        "big",
        f"float64[{N}, {N}]",
    ),
    "broadcast product": (
        G(
            [("a", "float64", [N, 1]), ("b", "float64", [1, N])],
            [("big", "multiply", ["a", "b"], {})],
            [],
        ),
        {"a": np.ones((N, 1)), "b": np.ones((1, N))},
        "big",
        f"float64[{N}, {N}]",
    ),
    "matmul": (
        G(
            [("a", "float64", [M, 1]), ("b", "float64", [1, M])],
            [("big", "matmul", ["a", "b"], {})],
            [],
        ),
        {"a": np.ones((M, 1)), "b": np.ones((1, M))},
        "big",
        f"float64[{M}, {M}]",
    ),
}


def with_loss(graph: G) -> G:
    """``graph`` with the scalar output ``loss = sum(big)``."""
    return G(graph.inputs, [*graph.nodes, ("loss", "sum", ["big"], {})], ["loss"])


def assert_refused(err, node: str, type_: str) -> None:
    assert err.code == EXHAUSTED, err
    assert err.reason == "LIMIT_EXCEEDED"
    assert err.metadata["limit"] == "max_request_bytes"
    assert f'node "{node}"' in err.message
    assert type_ in err.message
    assert "max_request_bytes=" in err.message and "--max-request-bytes" in err.message


@pytest.fixture
def allocations():
    """The peak of Python allocations (numpy's included) while the test runs, in bytes."""
    tracemalloc.start()
    yield lambda: tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()


@pytest.mark.parametrize("case", sorted(HUGE))
def test_a_huge_value_is_refused_before_it_is_allocated(stub, allocations, case):
    graph, feeds, node, type_ = HUGE[case]
    graph = with_loss(graph)
    start = time.perf_counter()
    err = call_error(stub.Evaluate, pb.EvaluateRequest(graph=graph.proto(), inputs=tensors(feeds)))
    assert_refused(err, node, type_)
    assert time.perf_counter() - start < 2.0
    assert allocations() < 64 << 20  # the inputs and messages, never the 25+ GB value


@pytest.mark.parametrize("case", sorted(HUGE))
def test_the_gradient_through_a_huge_value_is_refused(stub, allocations, case):
    graph, feeds, node, type_ = HUGE[case]
    graph = with_loss(graph)
    request = pb.VjpRequest(
        graph=graph.proto(),
        inputs=tensors(feeds),
        cotangents=tensors({"loss": np.float64(1.0)}),
        wrt=["a"],
    )
    err = call_error(stub.Vjp, request)
    assert_refused(err, node, type_)
    assert allocations() < 64 << 20


def test_the_budget_is_a_setting_and_views_do_not_count(make_server):
    """16 MiB: an 8 MiB broadcast_to view and a reshape pass; the product of two 8 MiB values
    that both live on needs 24 MiB at once and is refused, naming it."""
    running = make_server(max_request_bytes=16 << 20)
    channel, stub = running.stub()
    n = 1 << 20  # 8 MiB of float64
    ok = G(
        [("x", "float64", [1])],
        [
            ("wide", "broadcast_to", ["x"], {"shape": [n]}),
            ("r", "reshape", ["wide"], {"shape": [1024, 1024]}),
            ("s", "sum", ["r"], {}),
        ],
        ["s"],
    )
    with channel:
        response = stub.Evaluate(pb.EvaluateRequest(graph=ok.proto(), inputs=tensors({"x": [2.0]})))
        assert response.outputs["s"].data == np.float64(2.0 * n).tobytes()
        heavy = G(
            [("x", "float64", [n])],
            [
                ("e", "exp", ["x"], {}),
                ("p", "multiply", ["x", "e"], {}),
                ("s", "add", ["p", "e"], {}),
            ],
            ["s"],
        )
        err = call_error(
            stub.Evaluate,
            pb.EvaluateRequest(graph=heavy.proto(), inputs=tensors({"x": np.zeros(n)})),
        )
    assert err.code == EXHAUSTED
    assert "max_request_bytes=16777216 (16.0 MiB)" in err.message
    assert err.message.startswith('node "p" (multiply) would hold float64[1048576] (8.0 MiB);')
    assert "needs 24.0 MiB at its peak" in err.message


def test_a_memory_error_is_resource_exhausted_and_the_server_stays_up(make_server, monkeypatch):
    running = make_server()
    graph = G([("x", "float64", [7])], [("oom", "exp", ["x"], {})], ["oom"])
    request = pb.EvaluateRequest(graph=graph.proto(), inputs=tensors({"x": np.zeros(7)}))

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array")

    channel, stub = running.stub()
    with channel:
        monkeypatch.setitem(OPS, "exp", dataclasses.replace(OPS["exp"], forward=exhausted))
        err = call_error(stub.Evaluate, request)
        monkeypatch.undo()
        assert err.code == EXHAUSTED
        assert err.reason == "OUT_OF_MEMORY"
        assert "this Evaluate request ran out of memory" in err.message
        assert "7.28 TiB" in err.message
        graph = G([("x", "float64", [7])], [("after", "exp", ["x"], {})], ["after"])
        response = stub.Evaluate(
            pb.EvaluateRequest(graph=graph.proto(), inputs=tensors({"x": np.zeros(7)}))
        )
    assert response.outputs["after"].data == np.ones(7).tobytes()


def test_jacobians_and_training_check_their_derivative_plans(server, stub):
    """A 1 x 200,000 Jacobian fits any message, but its reverse pass holds an outer product:
    Jacobian, StreamJacobian and Train (whose steps run in a thread of their own) refuse it."""
    g = gs.Graph()
    a = g.input("a", shape=(N,))
    x = g.input("x", shape=(-1,))
    g.output("loss", gs.sum(gs.outer(a, a)) + gs.sum(x))
    feeds = {"a": np.ones(N), "x": np.ones(2)}
    errors = []
    with gs.Client(server.address) as c:
        for call in (
            lambda: c.jacobian(g, feeds, of="loss", wrt="a"),
            lambda: list(
                c.train(
                    g,
                    params={"a": np.ones(N)},
                    data={"x": np.ones(4)},
                    optimizer=gs.SGD(lr=0.1),
                    batch_size=2,
                )
            ),
        ):
            with pytest.raises(gs.ResourceExhausted) as info:
                call()
            errors.append((info.value.metadata["limit"], info.value.message))
    request = pb.StreamJacobianRequest(
        graph=g.to_proto(), inputs=tensors(feeds), of=["loss"], wrt=["a"]
    )
    err = call_error(stub.StreamJacobian, request)
    assert err.code == EXHAUSTED
    errors.append((err.metadata["limit"], err.message))
    for limit, message in errors:
        assert limit == "max_request_bytes"
        assert f"{N}, {N}]" in message  # the gradient of an outer product, maybe batched
        assert 'from differentiating node "outer_' in message or 'node "outer_' in message


def test_a_stream_too_large_in_total_is_refused_before_its_first_block(make_server):
    """max_stream_jacobian_elements bounds the sum over (of, wrt): two 30 x 30 Jacobians are
    1800 elements; with a limit of 1000 nothing is streamed, and each alone (900) passes."""
    running = make_server(max_stream_jacobian_elements=1000)
    graph = G(
        [("x", "float64", [30]), ("z", "float64", [30])],
        [("y", "multiply", ["x", "z"], {})],
        ["y"],
    )
    feeds = tensors({"x": np.ones(30), "z": np.ones(30)})
    channel, stub = running.stub()
    with channel:
        info = stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.limits.max_stream_jacobian_elements == 1000
        assert info.limits.max_request_bytes == running.settings.max_request_bytes > 0
        request = pb.StreamJacobianRequest(graph=graph.proto(), inputs=feeds, wrt=["x", "z"])
        stream = stub.StreamJacobian(request)
        with pytest.raises(grpc.RpcError) as exc:
            next(stream)  # the error comes first: no block was sent
        err = rich_error(exc.value)
        assert err.code == EXHAUSTED
        assert err.metadata["limit"] == "max_stream_jacobian_elements"
        assert err.metadata["elements"] == "1800"
        assert "--max-stream-jacobian-elements" in err.message
        one = pb.StreamJacobianRequest(graph=graph.proto(), inputs=feeds, wrt=["x"])
        rows = sum(block.row_count for block in stub.StreamJacobian(one))
    assert rows == 30


def test_the_graph_cache_is_bounded_in_bytes(make_server):
    """Graphs holding 1 MiB constants, with --graph-cache-bytes of 3.5 MiB: the oldest ids are
    forgotten (NOT_FOUND) as new graphs come, the newest stay usable."""
    running = make_server(graph_cache_bytes=(7 << 20) // 2)
    channel, stub = running.stub()
    ids = []
    with channel:
        for i in range(5):
            graph = G(
                [("x", "float64", [1])],
                [
                    ("k", "constant", [], {"value": np.full(1 << 17, float(i))}),
                    ("y", "add", ["k", "x"], {}),
                ],
                ["y"],
            )
            response = stub.Evaluate(
                pb.EvaluateRequest(graph=graph.proto(), inputs=tensors({"x": [0.0]}))
            )
            ids.append(response.graph_id)
        assert running.servicer.graph_cache.nbytes <= (7 << 20) // 2
        for graph_id in ids[:2]:
            err = call_error(
                stub.Evaluate, pb.EvaluateRequest(graph_id=graph_id, inputs=tensors({"x": [0.0]}))
            )
            assert err.code == grpc.StatusCode.NOT_FOUND
        for i, graph_id in enumerate(ids[2:], start=2):
            response = stub.Evaluate(
                pb.EvaluateRequest(graph_id=graph_id, inputs=tensors({"x": [1.0]}))
            )
            assert response.outputs["y"].data[:8] == np.float64(i + 1.0).tobytes()
