"""``parallel=K``: one Jacobian (dense or sparse) or Hessian shared among K concurrent calls.

Three in-process servers on loopback behind one ``round_robin`` channel (an ``ipv4:`` list of
their addresses): the assembled result equals one server's bit for bit, and every replica
computed a share (each server records the WorkPart of every request it served). Without load
balancing, the shares go over separate connections: of one server (distinct client ports), and
of ``--workers 2`` (both processes serve shares of one Jacobian, by their access logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from conftest import RunningServer
from gradserve.autodiff.jacobian import jacobian
from gradserve.config import Settings
from gradserve.rpc import GradientServicer
from gradserve.server import create_server
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto.tensor_codec import fill_tensor_map

N = M = 400  # 3 chunks of 164 passes or fewer (jacobian.chunk_rows): each of 3 shares has work


class RecordingServicer(GradientServicer):
    """Records (rpc, part.index, part.count, client peer) of every Jacobian and Hessian it
    answered. A share sent by graph_id to a replica that has not seen the graph is refused
    (NOT_FOUND) and sent again with the graph: only the answer counts as the share served."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.served: list[tuple[str, int, int, str]] = []

    def Jacobian(self, request, context):
        response = super().Jacobian(request, context)
        self.served.append(("Jacobian", request.part.index, request.part.count, context.peer()))
        return response

    def Hessian(self, request, context):
        response = super().Hessian(request, context)
        self.served.append(("Hessian", request.part.index, request.part.count, context.peer()))
        return response


@pytest.fixture
def replicas():
    started = []
    for _ in range(3):
        settings = Settings(host="127.0.0.1", port=0, metrics_port=0)
        servicer = RecordingServicer(settings)
        server, port, health = create_server(settings, servicer=servicer)
        started.append(RunningServer(server, port, servicer, health, settings))
    yield started
    for running in started:
        running.server.stop(None)


def problem():
    rng = np.random.default_rng(3)
    g = gs.Graph()
    x = g.input("x", shape=(N,))
    W = rng.standard_normal((M, N)) / np.sqrt(N)
    w = g.constant(W)
    g.output("y", gs.tanh(w @ gs.sin(x)))  # dense
    g.output("b", x[1:] * x[:-1])  # a band: sparse
    g.output("loss", gs.sum(gs.tanh(w @ x) ** 2))
    return g, {"x": rng.standard_normal(N)}, W


def results(c, g, inputs, parallel):
    return {
        "dense": c.jacobian(g, inputs, of="y", wrt="x", parallel=parallel),
        "forward": c.jacobian(g, inputs, of="y", wrt="x", mode="forward", parallel=parallel),
        "sparse": c.jacobian(g, inputs, of=["y", "b"], wrt="x", sparse=True, parallel=parallel),
        "hessian": c.hessian(g, inputs, of="loss", wrt="x", parallel=parallel),
        "sparse hessian": c.hessian(g, inputs, of="loss", wrt="x", sparse=True, parallel=parallel),
    }


def assert_same(got, want):
    for name in want:
        a, b = got[name], want[name]
        if isinstance(b, dict):
            for o in b:
                for w in b[o]:
                    x, y = a[o][w], b[o][w]
                    assert x.shape == y.shape and np.array_equal(x.indptr, y.indptr), (name, o)
                    assert np.array_equal(x.indices, y.indices), (name, o)
                    assert np.array_equal(x.data, y.data), (name, o)
        elif hasattr(b, "tocsr"):
            assert np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data), name
        else:
            assert a.shape == b.shape and np.array_equal(a, b), name


def test_three_replicas_share_one_jacobian_and_hessian_exactly(replicas):
    g, inputs, W = problem()
    with gs.Client(replicas[0].address) as one:
        want = results(one, g, inputs, 1)
    # What the shares must add up to is right: the closed forms.
    x = inputs["x"]
    closed = (1 - np.tanh(W @ np.sin(x)) ** 2)[:, None] * W * np.cos(x)
    assert np.allclose(want["dense"], closed, rtol=1e-12, atol=1e-14)
    band = want["sparse"]["b"]["x"].toarray()
    assert np.array_equal(np.diag(band), x[1:]) and np.array_equal(np.diag(band, 1), x[:-1])
    t = np.tanh(W @ x)
    hessian = 2 * (W.T * ((1 - t**2) ** 2 - 2 * t**2 * (1 - t**2))) @ W
    assert np.allclose(want["hessian"], hessian, rtol=1e-10, atol=1e-12)
    # Every share of the dense results has entries to compute, so every replica works.
    program = (
        replicas[0]
        .servicer.graph_cache.put_proto(g.to_proto(), max_nodes=99, max_elements=N * M)
        .program
    )
    for of, mode in (("y", "reverse"), ("y", "forward")):
        for i in range(3):
            _, share = jacobian(program, inputs, [of], ["x"], mode, part=(i, 3))
            assert np.count_nonzero(share[of]["x"]) > 0
    for r in replicas:
        r.servicer.served.clear()
    target = "ipv4:" + ",".join(r.address for r in replicas)
    with gs.Client(target, load_balancing="round_robin") as c:
        c.health()  # round_robin connects to every address
        assert_same(results(c, g, inputs, 3), want)
    for r in replicas:
        shares = [s for s in r.servicer.served if s[2] == 3]
        assert shares, f"replica {r.address} served no share"
    served = [s[:3] for r in replicas for s in r.servicer.served]
    for rpc, calls in (("Jacobian", 3), ("Hessian", 2)):
        indices = sorted(i for name, i, k in served if name == rpc and k == 3)
        assert indices == sorted(list(range(3)) * calls), (rpc, served)


def test_async_client_shares_over_replicas(replicas):
    g, inputs, _ = problem()
    with gs.Client(replicas[0].address) as one:
        want = one.jacobian(g, inputs, of="y", wrt="x")
    target = "ipv4:" + ",".join(r.address for r in replicas)

    async def shared():
        async with gs.AsyncClient(target, load_balancing="round_robin") as c:
            await c.health()
            return await c.jacobian(g, inputs, of="y", wrt="x", parallel=3)

    assert np.array_equal(asyncio.run(shared()), want)


def test_without_load_balancing_each_share_has_a_connection(replicas):
    g, inputs, _ = problem()
    server = replicas[0]
    with gs.Client(server.address) as c:
        want = c.jacobian(g, inputs, of="y", wrt="x")
        server.servicer.served.clear()
        got = c.jacobian(g, inputs, of="y", wrt="x", parallel=3)
        again = c.jacobian(g, inputs, of="y", wrt="x", parallel=3)  # the same connections
    assert np.array_equal(got, want) and np.array_equal(again, want)
    first, second = server.servicer.served[:3], server.servicer.served[3:]
    assert sorted(s[1] for s in first) == [0, 1, 2]
    assert len({s[3] for s in first}) == 3, first  # three client ports: three connections
    assert {s[3] for s in first} == {s[3] for s in second}


class SlowServicer(RecordingServicer):
    """Holds each Jacobian 0.3 s, so that the shares of one call overlap on the server."""

    def Jacobian(self, request, context):
        time.sleep(0.3)
        return super().Jacobian(request, context)


def test_shares_refused_for_load_go_again_after_the_others():
    """At --max-concurrent-rpcs 1 the server refuses all but one share at once; the SDK sends
    those again one at a time, so parallel=3 gives the whole call's result (sync and async)."""
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, max_concurrent_rpcs=1)
    servicer = SlowServicer(settings)
    server, port, _ = create_server(settings, servicer=servicer)
    g, inputs, _ = problem()
    try:
        with gs.Client(f"127.0.0.1:{port}") as c:
            want = c.jacobian(g, inputs, of="y", wrt="x")
            servicer.served.clear()
            got = c.jacobian(g, inputs, of="y", wrt="x", parallel=3)

        async def shared():
            async with gs.AsyncClient(f"127.0.0.1:{port}") as c:
                return await c.jacobian(g, inputs, of="y", wrt="x", parallel=3)

        got_async = asyncio.run(shared())
    finally:
        server.stop(None)
    assert np.array_equal(got, want) and np.array_equal(got_async, want)
    assert sorted(s[1:3] for s in servicer.served) == sorted([(i, 3) for i in range(3)] * 2)


class FailingShareServicer(RecordingServicer):
    """While ``refusing``, refuses share 0 at once; the other shares that reach it wait up to
    5 s, noting that they started and whether they were cancelled."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.refusing = False
        self.started: list[int] = []
        self.cancelled: list[int] = []

    def Jacobian(self, request, context):
        if self.refusing and request.part.count:
            if request.part.index == 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "share 0 refused")
            self.started.append(request.part.index)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if not context.is_active():
                    self.cancelled.append(request.part.index)
                    return pb.JacobianResponse()
                time.sleep(0.01)
        return super().Jacobian(request, context)


def test_a_failing_share_cancels_the_others():
    """The error of one share is the call's at once, and the shares still running are
    cancelled on the server: Client's blocking calls in threads as AsyncClient's tasks."""
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0)
    servicer = FailingShareServicer(settings)
    server, port, _ = create_server(settings, servicer=servicer)
    address = f"127.0.0.1:{port}"
    g, inputs, _ = problem()

    def refuse() -> float:
        """Refuse share 0 from now on; the time now."""
        servicer.refusing, servicer.served[:] = True, []
        return time.monotonic()

    def ended_at_once_and_cancelled(seconds: float) -> None:
        assert seconds < 2
        # Every other share that reached the server ends there, cancelled, and none is served.
        # (A share can be cancelled before a server thread starts it: it never reaches it.)
        deadline = time.monotonic() + 5
        while len(servicer.cancelled) < len(servicer.started) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(servicer.cancelled) == sorted(servicer.started)
        assert set(servicer.started) <= {1, 2}
        assert [s for s in servicer.served if s[2]] == []
        servicer.refusing = False
        servicer.started.clear()
        servicer.cancelled.clear()

    async def with_async_client() -> float:
        async with gs.AsyncClient(address) as c:
            await c.jacobian(g, inputs, of="y", wrt="x", parallel=3)  # its lanes opened
            start = refuse()
            with pytest.raises(gs.InvalidArgument, match="share 0 refused"):
                await c.jacobian(g, inputs, of="y", wrt="x", parallel=3)
            return time.monotonic() - start

    try:
        with gs.Client(address) as c:
            c.jacobian(g, inputs, of="y", wrt="x", parallel=3)  # its lanes opened
            start = refuse()
            with pytest.raises(gs.InvalidArgument, match="share 0 refused"):
                c.jacobian(g, inputs, of="y", wrt="x", parallel=3)
            ended_at_once_and_cancelled(time.monotonic() - start)
        ended_at_once_and_cancelled(asyncio.run(with_async_client()))
    finally:
        server.stop(None)


def test_a_failed_server_info_is_asked_again(replicas, monkeypatch):
    """GetServerInfo failing (UNAVAILABLE while a server restarts, say) for the limits and
    the features of one call makes that call go whole; the next one asks again and is shared."""
    g, inputs, _ = problem()
    server = replicas[0]
    with gs.Client(server.address) as c:
        answer = c.server_info
        failures = [gs.Unavailable("restarting"), gs.Unavailable("restarting")]

        def flaky():
            if failures:
                raise failures.pop()
            return answer()

        monkeypatch.setattr(c, "server_info", flaky)
        whole = c.jacobian(g, inputs, of="y", wrt="x", parallel=3)
        assert [s[1:3] for s in server.servicer.served] == [(0, 0)]  # no part: the whole call
        shared = c.jacobian(g, inputs, of="y", wrt="x", parallel=3)
    assert np.array_equal(shared, whole)
    assert sorted(s[1:3] for s in server.servicer.served[1:]) == [(0, 3), (1, 3), (2, 3)]


def test_a_cancelled_call_leaves_no_lane_open(replicas):
    """Cancelling parallel calls while their lanes are being opened: every lane channel is
    either kept by the client or closed."""
    g, inputs, _ = problem()

    async def cancelled_calls():
        opened, closed = [], set()
        async with gs.AsyncClient(replicas[0].address) as c:
            await c.server_info()
            open_lane = c._open_lane

            def recorded():
                channel = open_lane()
                opened.append(channel)
                close = channel.close

                async def recorded_close(grace=None):
                    closed.add(id(channel))
                    await close(grace)

                channel.close = recorded_close
                return channel

            c._open_lane = recorded
            for i in range(10):
                task = asyncio.ensure_future(c.jacobian(g, inputs, of="y", wrt="x", parallel=4))
                await asyncio.sleep(0.003 * (i + 1))
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):  # unless it was done
                    await task
            kept = list(c._lanes)
        return [ch for ch in opened if id(ch) not in closed and ch not in kept]

    assert asyncio.run(cancelled_calls()) == []


def test_parallel_is_checked(replicas):
    g, inputs, _ = problem()
    with gs.Client(replicas[0].address) as c:
        for bad in (0, -1, 65, 2.0, True):
            with pytest.raises(gs.InvalidArgument, match="parallel") as err:
                c.jacobian(g, inputs, of="y", wrt="x", parallel=bad)
            assert err.value.field_violations[0][0] == "parallel"


def test_a_bad_part_is_invalid_argument(replicas):
    g, inputs, _ = problem()
    channel, stub = replicas[0].stub()
    with channel:
        request = pb.JacobianRequest(graph=g.to_proto(), of=["y"], wrt=["x"])
        fill_tensor_map(request.inputs, inputs)
        request.part.index, request.part.count = 3, 3
        with pytest.raises(grpc.RpcError) as err:
            stub.Jacobian(request)
    assert err.value.code().name == "INVALID_ARGUMENT"
    assert "part.index" in err.value.details()


def test_two_workers_both_serve_shares_of_one_jacobian(server_process):
    g, inputs, _ = problem()
    proc = server_process("--workers", "2", "--log-level", "debug")
    pids = set(map(int, re.search(r"pids (\d+) (\d+)\)", proc.banner).groups()))
    with gs.Client(proc.address) as c:
        want = c.jacobian(g, inputs, of="y", wrt="x")
        got = c.jacobian(g, inputs, of="y", wrt="x", parallel=2)
    assert np.array_equal(got, want)
    assert proc.stop() == 0
    jacobians = re.findall(r"pid=(\d+) msg=rpc method=/gradserve.v1.Gradient/Jacobian", proc.stderr)
    assert len(jacobians) == 3, proc.stderr
    assert set(map(int, jacobians[1:])) == pids, proc.stderr  # the two shares, one per worker


def test_four_shares_over_two_workers_go_two_to_each(server_process):
    g, inputs, _ = problem()
    proc = server_process("--workers", "2")
    with gs.Client(proc.address) as c:
        want = c.jacobian(g, inputs, of="y", wrt="x")
        got = c.jacobian(g, inputs, of="y", wrt="x", parallel=4)
        lanes = sorted(map(c._lane_processes.count, set(c._lane_processes)))
    assert np.array_equal(got, want)
    assert lanes == [2, 2]


@pytest.mark.parametrize("client", ["Client", "AsyncClient"])
def test_clients_share_one_connection_unless_each_has_its_own(replicas, client):
    # gRPC's global subchannel pool: clients to one address in one process share a connection
    # (so they reach one --workers process); with OWN_CONNECTION each opens its own.
    g, inputs, _ = problem()
    server = replicas[0]

    async def both_call_async(options):
        async with (
            gs.AsyncClient(server.address, options=options) as a,
            gs.AsyncClient(server.address, options=options) as b,
        ):
            for c in (a, b):
                await c.jacobian(g, inputs, of="y", wrt="x")

    def peers(*options):
        server.servicer.served.clear()
        if client == "AsyncClient":
            asyncio.run(both_call_async(options))
        else:
            with (
                gs.Client(server.address, options=options) as a,
                gs.Client(server.address, options=options) as b,
            ):
                for c in (a, b):
                    c.jacobian(g, inputs, of="y", wrt="x")
        return {peer for *_, peer in server.servicer.served}

    assert len(peers()) == 1
    assert len(peers(gs.OWN_CONNECTION)) == 2


def test_a_server_without_work_part_gets_one_whole_call(replicas):
    g, inputs, _ = problem()
    server = replicas[0]
    with gs.Client(server.address) as c:
        want = c.jacobian(g, inputs, of="y", wrt="x")
    server.servicer.features = lambda: ["stream_jacobian"]  # as an older server says
    server.servicer.served.clear()
    with gs.Client(server.address) as c:
        assert np.array_equal(c.jacobian(g, inputs, of="y", wrt="x", parallel=3), want)
    assert [s[2] for s in server.servicer.served] == [0]  # one call, no part
