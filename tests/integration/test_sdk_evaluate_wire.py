"""Large Evaluate calls through the SDK's hand-written wire path (`gradserve_client._wire`):
the same results as the protobuf path, for both clients, with the graph-id cache and its
resend after NOT_FOUND working as on the protobuf path."""

from __future__ import annotations

import asyncio
from typing import Any

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve_client import _wire
from gradserve_client.proto import gradient_service_pb2 as pb

RNG = np.random.default_rng(0)
BIG = 20_000  # float64 elements: 160 KB, over _wire.DIRECT_BYTES

INPUTS = {
    "f64": RNG.normal(size=BIG),
    "f32": RNG.normal(size=(3, 50, 7)).astype(np.float32),
    "i64": np.arange(-30, 30, dtype=np.int64).reshape(6, 10),
    "i32": np.arange(12, dtype=np.int32).reshape(3, 1, 4),
    "b": RNG.normal(size=(4, 5)) > 0,
    "s": np.asarray(2.5),
    "e": np.zeros((0, 3)),
}


def identity_graph() -> gs.Graph:
    """Every input back as an output ("<name>_out"), and one computed output."""
    g = gs.Graph()
    for name, a in INPUTS.items():
        shape = (-1,) if name == "f64" else a.shape
        v = g.input(name, shape=shape, dtype=a.dtype.name)
        g.output(f"{name}_out", v)
    g.output("total", gs.sum(g.var("f64")) * g.var("s"))
    return g


class Recorder(grpc.UnaryUnaryClientInterceptor):
    """Records (request type, graph source) of every unary call."""

    def __init__(self) -> None:
        self.calls: list[tuple[type, str | None]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls.append((type(request), request.WhichOneof("graph_source")))
        return continuation(details, request)


def check(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        if name == "total":  # numpy's pairwise sum depends on the buffer's alignment
            np.testing.assert_allclose(got[name], array, rtol=1e-13)
        else:
            np.testing.assert_array_equal(got[name], array)


@pytest.fixture
def protobuf_path(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(on: bool) -> None:
        monkeypatch.setattr(_wire, "DIRECT_BYTES", 1 << 62 if on else 0)

    return use


def test_round_trips_equal_the_protobuf_path(server: Any, protobuf_path: Any) -> None:
    g = identity_graph()
    rec = Recorder()
    with gs.Client(server.address, timeout=30, interceptors=[rec]) as c:
        protobuf_path(True)
        want = c.evaluate(g, INPUTS)
        want_some = c.evaluate(g, INPUTS, outputs=["e_out", "total", "s_out"])
        assert [t for t, _ in rec.calls] == [pb.EvaluateRequest] * 2
        protobuf_path(False)
        got = c.evaluate(g, INPUTS)
        got_some = c.evaluate(g, INPUTS, outputs=["e_out", "total", "s_out"])
        assert [t for t, _ in rec.calls[2:]] == [_wire.EvaluateRequest] * 2
        # only small inputs, forced through the wire path
        small = c.evaluate(g, {**INPUTS, "f64": INPUTS["f64"][:3]}, outputs="s_out")
    check(got, want)
    check(got_some, want_some)
    assert list(got_some) == ["e_out", "total", "s_out"]
    for name, a in INPUTS.items():
        check({name: got[f"{name}_out"]}, {name: a})
        assert not got[f"{name}_out"].flags.writeable
    assert small["s_out"] == 2.5


def test_large_inputs_take_the_wire_path_by_default(server: Any) -> None:
    g = identity_graph()
    rec = Recorder()
    with gs.Client(server.address, timeout=30, interceptors=[rec]) as c:
        got = c.evaluate(g, INPUTS, outputs="f64_out")
        small = {**INPUTS, "f64": INPUTS["f64"][:10]}
        c.evaluate(g, small, outputs="f64_out")
    assert [t for t, _ in rec.calls] == [_wire.EvaluateRequest, pb.EvaluateRequest]
    np.testing.assert_array_equal(got["f64_out"], INPUTS["f64"])


def test_graph_by_id_and_resend_after_not_found(server: Any) -> None:
    g = identity_graph()
    rec = Recorder()
    with gs.Client(server.address, timeout=30, interceptors=[rec]) as c:
        first = c.evaluate(g, INPUTS)
        check(c.evaluate(g, INPUTS), first)
        # the server forgets the graph (a restart, another replica): the id is NOT_FOUND
        key = next(iter(c._graph_ids._ids))
        c._graph_ids._ids[key] = "0" * 64
        check(c.evaluate(g, INPUTS), first)
        check(c.evaluate(g, INPUTS), first)
    sources = [s for t, s in rec.calls]
    assert {t for t, _ in rec.calls} == {_wire.EvaluateRequest}
    assert sources == ["graph", "graph_id", "graph_id", "graph", "graph_id"]


def test_errors_on_the_wire_path(server: Any) -> None:
    g = identity_graph()
    with gs.Client(server.address, timeout=30) as c:
        with pytest.raises(gs.InvalidArgument) as info:
            c.evaluate(g, {**INPUTS, "f32": INPUTS["f32"][:2]})
        assert info.value.field_violations[0][0] == 'inputs["f32"].shape'
        with pytest.raises(gs.InvalidArgument):
            c.evaluate(g, INPUTS, outputs="nope")


def test_async_client(server: Any, protobuf_path: Any) -> None:
    g = identity_graph()

    async def run() -> list[dict[str, np.ndarray]]:
        async with gs.AsyncClient(server.address, timeout=30) as c:
            protobuf_path(True)
            want = await c.evaluate(g, INPUTS)
            protobuf_path(False)
            got = [await c.evaluate(g, INPUTS), await c.evaluate(g, INPUTS, outputs=["total"])]
            key = next(iter(c._graph_ids._ids))
            c._graph_ids._ids[key] = "0" * 64
            got.append(await c.evaluate(g, INPUTS))
            assert c._graph_ids._ids[key] != "0" * 64
            return [want, *got]

    want, got, total, resent = asyncio.run(run())
    check(got, want)
    check(resent, want)
    check(total, {"total": want["total"]})
