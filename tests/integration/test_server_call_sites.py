"""Call sites through a real server: the field violation of a node names where the user's code
built it, and the graph_id does not depend on where a graph was built."""

from __future__ import annotations

import sys

import gradserve_client as gs
import numpy as np
import pytest
from gradserve_client.proto import gradient_service_pb2 as pb
from wire import tensors

HERE = __file__


def residual(n: int) -> tuple[gs.Graph, int]:
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    W = g.input("W", shape=(2, n))
    line = sys._getframe().f_lineno + 1
    g.output("y", gs.sum(W @ (x - 1.0)))
    return g, line


def test_the_field_violation_names_the_users_line(server) -> None:
    """A graph the client built, then made inconsistent on the wire (an input declared with
    another shape than the one it was built with): the server's shape error at the node the
    SDK named ``matmul_3`` says where the user built it, in the field violation and the
    message."""
    g, line = residual(3)
    proto = g.to_proto()
    proto.inputs[0].shape[:] = [4]  # the SDK would not have built this
    with gs.Client(server.address) as c, pytest.raises(gs.InvalidArgument) as info:
        c.evaluate(proto, {"x": np.zeros(4), "W": np.zeros((2, 3))})
    where = f"(built at {HERE}:{line} in residual)"
    assert info.value.field_violations == [
        (
            'graph.nodes["matmul_3"].inputs[1]',
            f"matmul: shapes [2, 3] and [4] are not aligned (3 != 4) {where}",
        )
    ]
    assert where in info.value.message


def test_the_graph_id_does_not_depend_on_where_the_graph_was_built(stub) -> None:
    first, _ = residual(4)
    second = gs.Graph()  # the same graph, built on other lines
    x = second.input("x", shape=(4,))
    W = second.input("W", shape=(2, 4))
    second.output("y", gs.sum(W @ (x - 1.0)))
    a, b = first.to_proto(), second.to_proto()
    assert [n.source for n in a.nodes] != [n.source for n in b.nodes]
    feed = tensors({"x": np.arange(4.0), "W": np.ones((2, 4))})
    ids = [stub.Evaluate(pb.EvaluateRequest(graph=g, inputs=feed)).graph_id for g in (a, b)]
    assert ids[0] == ids[1]
    assert ids[0] == stub.Evaluate(pb.EvaluateRequest(graph=_unsourced(a), inputs=feed)).graph_id


def _unsourced(graph):
    copy = type(graph)()
    copy.CopyFrom(graph)
    for node in copy.nodes:
        node.ClearField("source")
    return copy
