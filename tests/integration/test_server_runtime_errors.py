"""Errors that only running a plan reveals name the node whose step raised them and where the
user's code built it (its ``source``), as validation errors do: an index that the values put
out of range, a MemoryError the budget did not foresee, a bug (INTERNAL). A derivative's node
names the call site of the node it differentiates. LocalClient says the same as the server."""

from __future__ import annotations

import dataclasses
import sys

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve.autodiff import OPS
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import graph_pb2
from wire import G, call_error, tensors

HERE = __file__


def lookup() -> tuple[gs.Graph, str]:
    """y = table[ids] for an int64 table (no NaN to give: out of range is an error)."""
    g = gs.Graph()
    table = g.input("table", shape=(3,), dtype="int64")
    ids = g.input("ids", shape=(2,), dtype="int64")
    line = sys._getframe().f_lineno + 1
    g.output("y", gs.take(table, ids))
    return g, f"{HERE}:{line} in lookup"


def test_an_index_out_of_range_names_the_node_and_where_it_was_built(server) -> None:
    g, where = lookup()
    feeds = {"table": np.arange(3), "ids": np.array([0, 5])}
    reason = "an index (5) is out of range for an axis of size 3"
    expected = f'{reason} (at node "y" (take), built at {where})'
    for client in (gs.Client(server.address), gs.LocalClient()):
        with client as c, pytest.raises(gs.InvalidArgument) as info:
            c.evaluate(g, feeds)
        assert info.value.field_violations == [("inputs", expected)]
        assert info.value.message == f"inputs: {expected}"
        assert info.value.reason == "INVALID_INPUT"


def sourced(graph: G, **sources: str) -> graph_pb2.Graph:
    proto = graph.proto()
    for node in proto.nodes:
        node.source = sources.get(node.name, "")
    return proto


def test_a_memory_error_names_the_node_and_where_it_was_built(make_server, monkeypatch) -> None:
    running = make_server()
    graph = sourced(
        G([("x", "float64", [7])], [("oom_at", "exp", ["x"], {})], ["oom_at"]),
        oom_at="model.py:3 in f",
    )

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array")

    monkeypatch.setitem(OPS, "exp", dataclasses.replace(OPS["exp"], forward=exhausted))
    channel, stub = running.stub()
    with channel:
        request = pb.EvaluateRequest(graph=graph, inputs=tensors({"x": np.zeros(7)}))
        err = call_error(stub.Evaluate, request)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "OUT_OF_MEMORY"
    assert err.message.startswith(
        'this Evaluate request ran out of memory at node "oom_at" (exp), built at model.py:3'
        " in f (MemoryError: Unable to allocate 7.28 TiB for an array): make it smaller;"
    )


def test_a_derivative_s_node_names_where_the_node_it_differentiates_was_built(
    make_server, monkeypatch
) -> None:
    """d sin(x) = g * cos(x): the VJP's cos is a node of the derivative, made by the rule of
    the user's sin; a MemoryError in it names that sin's call site."""
    running = make_server()
    graph = sourced(
        G([("x", "float64", [5])], [("wave", "sin", ["x"], {})], ["wave"]),
        wave="model.py:9 in wave",
    )

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.00 TiB for an array")

    monkeypatch.setitem(OPS, "cos", dataclasses.replace(OPS["cos"], forward=exhausted))
    channel, stub = running.stub()
    with channel:
        feed = tensors({"x": np.zeros(5)})
        cotangents = tensors({"wave": np.ones(5)})
        request = pb.VjpRequest(graph=graph, inputs=feed, cotangents=cotangents, wrt=["x"])
        err = call_error(stub.Vjp, request)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "OUT_OF_MEMORY"
    prefix = "this Vjp request ran out of memory at the derivative's value "
    assert err.message.startswith(prefix)
    node, _, rest = err.message.removeprefix(prefix).partition(" ")
    assert node.startswith('"%cos') and rest.startswith("(cos), built at model.py:9 in wave (")


def test_a_bug_is_internal_and_names_the_node(make_server, monkeypatch) -> None:
    running = make_server()
    graph = sourced(
        G([("x", "float64", [2])], [("buggy", "tanh", ["x"], {})], ["buggy"]),
        buggy="model.py:4 in g",
    )

    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setitem(OPS, "tanh", dataclasses.replace(OPS["tanh"], forward=broken))
    channel, stub = running.stub()
    with channel:
        request = pb.EvaluateRequest(graph=graph, inputs=tensors({"x": np.zeros(2)}))
        err = call_error(stub.Evaluate, request)
    assert err.code == grpc.StatusCode.INTERNAL
    assert err.message == (
        'internal error (a bug in gradserve): ValueError at node "buggy" (tanh), built at'
        " model.py:4 in g"
    )


def test_a_node_without_source_is_named_alone(make_server, monkeypatch) -> None:
    running = make_server()
    graph = G([("x", "float64", [3])], [("bare", "exp", ["x"], {})], ["bare"]).proto()

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate")

    monkeypatch.setitem(OPS, "exp", dataclasses.replace(OPS["exp"], forward=exhausted))
    channel, stub = running.stub()
    with channel:
        request = pb.EvaluateRequest(graph=graph, inputs=tensors({"x": np.zeros(3)}))
        err = call_error(stub.Evaluate, request)
    assert err.message.startswith(
        'this Evaluate request ran out of memory at node "bare" (exp) (MemoryError:'
    )
