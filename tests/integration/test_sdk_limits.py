"""The SDK's limits: a dense result over max_result_bytes is refused before asking; a result
over the server's unary limit goes straight to StreamJacobian; errors name what the user wrote."""

from __future__ import annotations

import asyncio
import tracemalloc

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve import metrics

SVC = "/gradserve.v1.Gradient/"


def count(method: str, code: str = "OK") -> float:
    labels = {"method": SVC + method, "code": code}
    return metrics.REGISTRY.get_sample_value("gradserve_requests_total", labels) or 0.0


def elementwise(n: int) -> gs.Graph:
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("y", gs.sin(x) * 2.0)
    return g


def test_a_dense_result_over_max_result_bytes_is_refused_before_asking(server):
    """The issue's 10^6 x 10^6 Jacobian (7.3 TiB) under the default 2 GiB, and 8 MB under a
    1 MiB budget: ResourceExhausted at once, nothing sent, nothing allocated."""
    x = np.zeros(1_000_000)
    asked = ("Jacobian", "OK"), ("Jacobian", "RESOURCE_EXHAUSTED"), ("StreamJacobian", "OK")
    before = [count(*key) for key in asked]
    tracemalloc.start()
    try:
        with gs.Client(server.address) as c, pytest.raises(gs.ResourceExhausted) as info:
            c.jacobian(elementwise(1_000_000), {"x": x}, of="y", wrt="x")
        with (
            gs.Client(server.address, max_result_bytes=1 << 20) as c,
            pytest.raises(gs.ResourceExhausted) as small,
        ):
            c.jacobian(elementwise(1000), {"x": np.zeros(1000)}, of="y", wrt="x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = info.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "7.3 TiB" in err.message and "[1000000, 1000000]" in err.message
    assert "max_result_bytes=2147483648 (2.0 GiB)" in err.message
    assert "sparse=True" in err.message and "row blocks" in err.message
    assert err.metadata["limit"] == "max_result_bytes"
    assert "7.6 MiB" in small.value.message and "(1.0 MiB)" in small.value.message
    assert peak < 32 << 20  # the 8 MB input, not the result
    assert [count(*key) for key in asked] == before  # nothing was asked


def test_the_async_client_refuses_too(server):
    async def ask() -> None:
        async with gs.AsyncClient(server.address, max_result_bytes=1 << 10) as c:
            await c.jacobian(elementwise(100), {"x": np.zeros(100)}, of="y", wrt="x")

    with pytest.raises(gs.ResourceExhausted, match="max_result_bytes=1024"):
        asyncio.run(ask())


def test_a_result_over_the_servers_unary_limit_goes_straight_to_stream_jacobian(make_server):
    running = make_server(max_jacobian_elements=100)
    g = elementwise(20)  # 400 elements: over the unary limit
    x = np.linspace(0.0, 1.0, 20)
    before = {
        "refused": count("Jacobian", "RESOURCE_EXHAUSTED"),
        "stream": count("StreamJacobian"),
        "info": count("GetServerInfo"),
        "unary": count("Jacobian"),
    }
    with gs.Client(running.address) as c:
        for _ in range(2):
            J = c.jacobian(g, {"x": x}, of="y", wrt="x")
            np.testing.assert_allclose(J, np.diag(2.0 * np.cos(x)))
        small = c.jacobian(elementwise(5), {"x": x[:5]}, of="y", wrt="x")  # 25: unary
    np.testing.assert_allclose(small, np.diag(2.0 * np.cos(x[:5])))
    assert count("Jacobian", "RESOURCE_EXHAUSTED") == before["refused"]  # no refusal first
    assert count("StreamJacobian") == before["stream"] + 2
    assert count("GetServerInfo") == before["info"] + 1  # asked once per client
    assert count("Jacobian") == before["unary"] + 1


def test_grad_of_a_name_that_is_no_output_says_of(server):
    g = elementwise(3)
    with gs.Client(server.address) as c, pytest.raises(gs.InvalidArgument) as info:
        c.grad(g, {"x": np.zeros(3)}, of="nope")
    err = info.value
    assert err.field_violations[0][0] == "of"
    assert "'nope' names no output of the graph (its outputs: ['y'])" in err.message
    assert "cotangents" not in err.message
