"""Faults and abuse, against server subprocesses: overload beyond --max-concurrent-rpcs,
SIGTERM with calls in flight, deadline storms, silent and garbage TCP connections, large
payloads. Each test prints what it measured (``pytest -s`` shows it)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from gradserve_client.proto import training_pb2 as tpb
from gradserve_client.training import dataset_id
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loadtools import duration, stats
from wire import G, arrays, rich_error, tensors
from workload import regression_run

SERVING = health_pb2.HealthCheckResponse.SERVING
TINY = G([("x", "float64", [])], [("y", "sin", ["x"], {})], ["y"])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BIG = 256 << 20
OPTIONS = [
    ("grpc.max_receive_message_length", BIG),
    ("grpc.max_send_message_length", BIG),
    ("grpc.use_local_subchannel_pool", 1),
]


def chain_request(steps: int, n: int) -> pb.EvaluateRequest:
    """h_i = tanh(h_{i-1} @ W), an n x n matmul a step: a slow call."""
    nodes, prev = [], "x"
    for i in range(steps):
        nodes += [(f"m{i}", "matmul", [prev, "W"], {}), (f"h{i}", "tanh", [f"m{i}"], {})]
        prev = f"h{i}"
    g = G([("x", "float64", [n, n]), ("W", "float64", [n, n])], nodes, [prev])
    return pb.EvaluateRequest(
        graph=g.proto(), inputs=tensors({"x": np.full((n, n), 0.5), "W": np.eye(n)})
    )


class HeldUploads:
    """PutDataset streams that the test holds open: each occupies one admitted call on the
    server, without CPU, until ``release()``; then each uploads its array and must get the id
    that the SDK computes for it."""

    def __init__(self, stub, count: int) -> None:
        self._release = threading.Event()
        self._sent = threading.Semaphore(0)
        self.arrays = [np.arange(1000.0) + i for i in range(count)]
        self.futures = [stub.PutDataset.future(self._chunks(a), timeout=120) for a in self.arrays]
        for _ in range(count):
            assert self._sent.acquire(timeout=30)

    def _chunks(self, a: np.ndarray):
        data = a.tobytes()
        yield tpb.DatasetChunk(name="a", dtype=2, shape=a.shape, data=data[:800])
        self._sent.release()
        self._release.wait(120)
        yield tpb.DatasetChunk(name="a", data=data[800:])

    def running(self) -> int:
        return sum(not f.done() for f in self.futures)

    def release_and_check(self) -> None:
        self._release.set()
        for a, f in zip(self.arrays, self.futures, strict=True):
            assert f.result(60).dataset_id == dataset_id({"a": a})


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=OPTIONS)


def tiny(stub, timeout: float = 10) -> float:
    """One tiny Evaluate, checked; its latency in seconds."""
    start = time.monotonic()
    r = stub.Evaluate(
        pb.EvaluateRequest(graph=TINY.proto(), inputs=tensors({"x": 0.5})), timeout=timeout
    )
    assert arrays(r.outputs)["y"] == np.sin(0.5)
    return time.monotonic() - start


def test_overload_is_refused_at_once_and_health_stays_serving(serve):
    limit = 4
    proc = serve("--max-concurrent-rpcs", str(limit), "--worker-threads", "4")
    with channel(proc.address) as ch:
        stub = pb_grpc.GradientStub(ch)
        tiny(stub)
        held = HeldUploads(stub, limit)
        time.sleep(0.2)  # the last one is admitted
        health_latency: list[float] = []
        statuses: set[int] = set()
        done = threading.Event()

        def probe() -> None:
            with channel(proc.address) as hch:
                health = health_pb2_grpc.HealthStub(hch)
                while not done.is_set() and len(health_latency) < 10_000:
                    start = time.monotonic()
                    statuses.add(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
                    health_latency.append(time.monotonic() - start)
                    time.sleep(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        refused: list[float] = []
        reasons: set[str] = set()

        def flood(_: int) -> None:
            with channel(proc.address) as fch:
                fstub = pb_grpc.GradientStub(fch)
                for _ in range(25):
                    start = time.monotonic()
                    try:
                        tiny(fstub)
                    except grpc.RpcError as err:
                        refused.append(time.monotonic() - start)
                        e = rich_error(err)
                        reasons.add(f"{e.code.name} {e.reason} {e.metadata.get('limit')}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(flood, range(8)))
        still_running = held.running()
        done.set()
        prober.join(30)
        held.release_and_check()
        after = tiny(stub)  # the limit is free again
    refused.sort()
    print(
        f"\noverload: {len(refused)} of 200 calls refused while {still_running} of {limit}"
        f" held; refusal p50 {refused[len(refused) // 2] * 1e3:.1f} ms, max"
        f" {refused[-1] * 1e3:.1f} ms; {len(health_latency)} health checks meanwhile, all"
        f" {statuses == {SERVING} and 'SERVING'}, max {max(health_latency) * 1e3:.1f} ms;"
        f" a call after: {after * 1e3:.1f} ms"
    )
    assert still_running == limit
    assert len(refused) == 200
    assert reasons == {"RESOURCE_EXHAUSTED LIMIT_EXCEEDED max_concurrent_rpcs"}
    assert refused[len(refused) // 2] < 0.05 and refused[-1] < 1.0
    assert statuses == {SERVING} and len(health_latency) >= 5
    assert max(health_latency) < 1.0


def _long_train(stub, steps: int):
    request, want_w, _ = regression_run(np.random.default_rng(7), steps, steps // 10)
    return stub.Train(request, timeout=120), want_w


def test_sigterm_with_calls_in_flight_completes_them_refuses_new_ones_and_exits_0(serve):
    proc = serve("--shutdown-grace", "60")
    steps = 3000
    with channel(proc.address) as ch, channel(proc.address) as train_channel:
        stub = pb_grpc.GradientStub(ch)
        tiny(stub)
        held = HeldUploads(stub, 4)
        train, want_w = _long_train(pb_grpc.GradientStub(train_channel), steps)
        first = next(train)  # the run has started
        assert first.step.step == steps // 10
        proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        refused = None  # new calls are refused, on a new connection
        while refused is None and time.monotonic() < deadline:
            with channel(proc.address) as new:
                try:
                    tiny(pb_grpc.GradientStub(new), timeout=2)
                    time.sleep(0.02)
                except grpc.RpcError as err:
                    refused = err.code()
        in_flight = held.running()
        held.release_and_check()
        events = [first, *train]
        result = events[-1].result
        every = steps // 10
        reported = [e.step.step for e in events if e.WhichOneof("event") == "step"]
        assert reported == list(range(every, steps + 1, every))
        assert events[-2].checkpoint.step == steps  # the run's final checkpoint
        assert result.steps == steps
        np.testing.assert_allclose(arrays(result.params)["w"], want_w, rtol=1e-9)
    rc = proc.proc.wait(60)
    print(
        f"\nSIGTERM: new calls refused ({refused and refused.name}) while {in_flight} uploads"
        f" and a Train stream were in flight; all completed correctly; exit code {rc}"
    )
    assert refused in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), refused
    assert in_flight == 4
    assert rc == 0


def test_a_deadline_storm_frees_the_workers_and_the_cpu(serve):
    proc = serve()
    pid = proc.proc.pid
    with channel(proc.address) as ch:
        stub = pb_grpc.GradientStub(ch)
        tiny(stub)
        request = chain_request(300, 400)  # seconds of work each, in 300 steps
        start = time.monotonic()
        storm = [stub.Evaluate.future(request, timeout=0.1) for _ in range(50)]
        codes = {f.exception(30).code() for f in storm}
        storm_seconds = time.monotonic() - start
        time.sleep(0.5)  # the handlers notice within a step
        before = stats(pid).cpu
        time.sleep(1.0)
        busy = stats(pid).cpu - before
        latency = tiny(stub)
    print(
        f"\ndeadline storm: 50 calls of 0.1 s answered in {storm_seconds:.2f} s with {codes};"
        f" CPU after: {busy:.2f} s in 1 s; a call after: {latency * 1e3:.1f} ms"
    )
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert busy < 0.2  # nothing is still computing
    assert latency < 1.0


def huge_graph_request(nodes: int, salt: int) -> pb.EvaluateRequest:
    """A chain of ``nodes`` sin nodes (about 0.9 MB for 40,000): seconds to decode and
    validate. Each salt is another graph, so that no call finds it in the graph cache."""
    steps = [(f"h{i}", "sin", [f"h{i - 1}" if i else "x"], {}) for i in range(nodes)]
    g = G([("x", "float64", [salt + 1])], steps, [f"h{nodes - 1}"])
    return pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": np.zeros(salt + 1)}))


def test_a_deadline_storm_of_huge_graphs_frees_the_cpu(serve):
    """Decoding and validation look at the call's deadline every few hundred nodes: 8 calls of
    40,000-node graphs with a 0.3 s deadline stop when it passes, not seconds later."""
    proc = serve()
    pid = proc.proc.pid
    requests = [huge_graph_request(40_000, salt) for salt in range(8)]
    with channel(proc.address) as ch:
        stub = pb_grpc.GradientStub(ch)
        tiny(stub)
        start = time.monotonic()
        storm = [stub.Evaluate.future(r, timeout=0.3) for r in requests]
        codes = {f.exception(30).code() for f in storm}
        storm_seconds = time.monotonic() - start
        time.sleep(0.5)  # the handlers notice within a few hundred nodes
        before = stats(pid).cpu
        time.sleep(1.0)
        busy = stats(pid).cpu - before
        latency = tiny(stub)
    print(
        f"\nhuge-graph deadline storm: 8 calls of 40,000 nodes and 0.3 s answered in"
        f" {storm_seconds:.2f} s with {codes}; CPU after: {busy:.2f} s in 1 s;"
        f" a call after: {latency * 1e3:.1f} ms"
    )
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert busy < 0.05  # no graph is still being decoded or validated (idle: 0.00)
    assert latency < 1.0


def test_silent_and_garbage_connections_do_not_slow_normal_clients(serve):
    proc = serve()
    pid = proc.proc.pid
    rng = np.random.default_rng(0)
    with channel(proc.address) as ch:
        stub = pb_grpc.GradientStub(ch)
        tiny(stub)
        before = sorted(tiny(stub) for _ in range(50))
        threads_before = stats(pid).threads
        junk: list[socket.socket] = []
        for i in range(150):
            s = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
            if i % 3 == 1:  # random bytes
                s.sendall(rng.bytes(int(rng.integers(1, 4096))))
            elif i % 3 == 2:  # the HTTP/2 preface, then garbage frames
                s.sendall(
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.bytes(int(rng.integers(9, 512)))
                )
            junk.append(s)  # i % 3 == 0: silent
        stop = threading.Event()

        def trickle() -> None:  # a slow-loris: one byte at a time on some of them
            for _ in range(2000):
                if stop.wait(0.01):
                    return
                for s in junk[:30:3]:
                    with contextlib.suppress(OSError):
                        s.send(b"\0")

        loris = threading.Thread(target=trickle)
        loris.start()
        seconds = duration(2.0)
        during: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end and len(during) < 100_000:
            during.append(tiny(stub))
        with channel(proc.address) as fresh:  # a new connection is accepted and served
            new_connection = tiny(pb_grpc.GradientStub(fresh))
        threads_during = stats(pid).threads
        stop.set()
        loris.join(10)
        for s in junk:
            s.close()
    during.sort()
    b50, d50 = before[len(before) // 2], during[len(during) // 2]
    print(
        f"\njunk connections: 150 open (50 silent, 50 random bytes, 50 HTTP/2 garbage, 10"
        f" trickling); tiny call p50 {b50 * 1e3:.2f} ms before, {d50 * 1e3:.2f} ms during"
        f" (max {during[-1] * 1e3:.1f} ms, {len(during)} calls); new connection"
        f" {new_connection * 1e3:.1f} ms; threads {threads_before} -> {threads_during}"
    )
    assert d50 < 3 * b50 + 0.005
    assert during[-1] < 1.0 and new_connection < 1.0
    assert threads_during - threads_before < 10  # no thread per connection


def test_large_payloads_do_not_leak(serve):
    proc = serve()
    pid = proc.proc.pid
    n = 5 << 20  # 40 MiB of float64, above malloc's mmap threshold
    x = np.random.default_rng(1).normal(size=n)
    g = G(
        [("x", "float64", [n])], [("y", "negative", ["x"], {}), ("s", "sum", ["y"], {})], ["y", "s"]
    )
    rss = []
    rounds = max(12, int(duration(0) * 2))
    with channel(proc.address) as ch:
        stub = pb_grpc.GradientStub(ch)
        for i in range(rounds):
            if i % 2:
                r = stub.Evaluate(
                    pb.EvaluateRequest(graph=g.proto(), inputs=tensors({"x": x})), timeout=60
                )
                np.testing.assert_array_equal(arrays(r.outputs)["y"], -x)
            else:
                request = pb.VjpRequest(
                    graph=g.proto(),
                    inputs=tensors({"x": x}),
                    cotangents=tensors({"s": 1.0}),
                    wrt=["x"],
                )
                r = stub.Vjp(request, timeout=60)
                np.testing.assert_array_equal(arrays(r.gradients)["x"], np.full(n, -1.0))
            time.sleep(0.2)  # the last buffers are freed
            rss.append(stats(pid).rss)
    mib = [round(v / 2**20) for v in rss]
    grown = max(rss[-3:]) - rss[0]
    print(
        f"\nlarge payloads: {rounds} calls of 40 MiB each way; server RSS after each (MiB):"
        f" {mib}: {grown / 2**20:+.0f} MiB at the end"
    )
    # Bounded, not growing with the calls: the allocator keeps some freed buffers for reuse
    # (a plateau about one payload up, after some 10 calls), but a leak of one buffer per
    # call would be 12 payloads up.
    assert grown < 3 * (40 << 20)
