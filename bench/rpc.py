"""RPC workloads R1-R3: the gradserve server against a bare grpcio echo server, same machine.

R1: p50 latency of Evaluate on a 5-node scalar graph (graph_id path) vs the echo's empty call.
R2: a 64 MiB float64 tensor round trip through Evaluate of an identity graph vs echoing the
    same 64 MiB of bytes; throughput ratio (gradserve / echo, higher is better).
R3: 8 client threads sharing one channel: requests per second, gradserve Evaluate (R1's graph)
    vs the echo's empty call.
gradserve is measured through the SDK (`gs.Client`, what users call) and, for R1, also through
the raw generated stub with a pre-encoded request (the server's own cost).

The floor of R1 and R3 (`FLOOR`): the shipped server whose Evaluate answers with a prebuilt
response, through the raw stub and through the SDK, in the same rounds: what grpcio, the
protobuf messages, the interceptors and the SDK cost before gradserve decodes, computes or
encodes anything.

The server stacks (issue 11 §2): the same servicer without interceptors on today's thread-pool
grpc.Server and on grpc.aio, its handlers in the migration thread pool or awaited in
run_in_executor (`bench.aio_server`), measured in the same rounds as the shipped server: R1 and
R3 through the raw stub, R2 through the SDK.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np

from bench.echo_server import METHOD as ECHO_METHOD
from bench.harness import Row, Settings, relative_iqr, threaded_rate
from bench.servers import (
    FLOOR,
    MAX_MESSAGE,
    MIB,
    STACKS,
    ServerUnavailable,
    echo_server,
    gradserve_server,
    stack_server,
)

GS = "gradserve Client"
GS_STUB = "gradserve raw stub"
ECHO = "echo server"
FLOOR_STUB = "floor (prebuilt Evaluate), raw stub"
FLOOR_CLIENT = "floor (prebuilt Evaluate), gradserve Client"


def stack_name(stack: str) -> str:
    return f"stack {stack}, no interceptors"


def scalar_graph() -> Any:
    """Five op nodes, two scalar inputs."""
    import gradserve_client as gs

    g = gs.Graph()
    x = g.input("x", shape=())
    y = g.input("y", shape=())
    g.output("out", (gs.sin(x) * y + gs.exp(x)) * x)
    return g


#: R1's and R3's inputs, and the closed form of scalar_graph's output at them.
FEEDS = {"x": 0.7, "y": 1.3}
EXPECTED = (np.sin(0.7) * 1.3 + np.exp(0.7)) * 0.7


def identity_graph(n: int) -> Any:
    import gradserve_client as gs

    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("y", x)
    return g


def _channel(target: str) -> Any:
    import grpc

    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )


def _latencies(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(settings: Settings) -> list[Row]:
    rows = [
        Row(
            "R1",
            "p50 latency, Evaluate 5-node scalar graph (graph_id)",
            "s",
            GS,
            ECHO,
            "≤ 1.3× echo empty call",
            1.3,
        ),
        Row(
            "R2",
            "64 MiB tensor round trip, Evaluate identity graph",
            "MiB/s",
            GS,
            ECHO,
            "≥ 0.8× echo throughput",
            0.8,
            higher_is_better=True,
        ),
        Row(
            "R3",
            "8 threads, one channel: requests/s",
            "req/s",
            GS,
            ECHO,
            "≥ 0.8× echo req/s",
            0.8,
            higher_is_better=True,
        ),
    ]
    try:
        import gradserve_client as gs
        from gradserve_client.proto import gradient_service_pb2 as pb
        from gradserve_client.proto import gradient_service_pb2_grpc as pbg
        from gradserve_client.proto import tensor_codec
    except Exception as exc:
        return _skipped(rows, f"SDK import failed: {exc}")
    with ExitStack() as stack:
        try:
            gs_target = stack.enter_context(gradserve_server())
        except ServerUnavailable as exc:
            return _skipped(rows, f"server not available: {exc}")
        echo_target = stack.enter_context(echo_server())
        echo_channel = stack.enter_context(_channel(echo_target))
        echo = echo_channel.unary_unary(ECHO_METHOD)
        gs_channel = stack.enter_context(_channel(gs_target))
        stub = pbg.GradientStub(gs_channel)
        client = None
        why = ""
        try:
            client = stack.enter_context(gs.Client(gs_target))
        except Exception as exc:
            why = f"gs.Client failed: {type(exc).__name__}: {exc}"[:200]
        stubs: dict[str, Any] = {}
        clients: dict[str, Any] = {}
        for name in STACKS:
            target = stack.enter_context(stack_server(name))
            stubs[stack_name(name)] = pbg.GradientStub(stack.enter_context(_channel(target)))
            clients[stack_name(name)] = stack.enter_context(gs.Client(target))
        floor_target = stack.enter_context(stack_server(FLOOR))
        floor = {
            FLOOR_STUB: pbg.GradientStub(stack.enter_context(_channel(floor_target))),
            FLOOR_CLIENT: stack.enter_context(gs.Client(floor_target)),
        }
        _r1(rows[0], settings, client, why, stub, pb, tensor_codec, echo, stubs, floor)
        _r2(rows[1], settings, client, why, echo, clients)
        _r3(rows[2], settings, client, why, echo, stubs, pb, tensor_codec, floor)
    return rows


def _stub_call(stub: Any, pb: Any, codec: Any) -> Callable[[], Any]:
    """R1's call through a raw stub: the graph sent once for its id, then only the id and the
    pre-encoded inputs; checked against the closed form."""
    g = scalar_graph()
    first = stub.Evaluate(pb.EvaluateRequest(graph=g.to_proto(), inputs=codec.to_tensors(FEEDS)))
    request = pb.EvaluateRequest(graph_id=first.graph_id, inputs=codec.to_tensors(FEEDS))
    got = codec.from_tensor(stub.Evaluate(request).outputs["out"])
    if not np.allclose(got, EXPECTED):
        raise AssertionError(f"wrong result {got}")
    return lambda: stub.Evaluate(request)


def _skipped(rows: list[Row], why: str) -> list[Row]:
    for row in rows:
        row.figures = {GS: None, ECHO: None}
        row.notes[GS] = why
    return rows


def _client_call(row: Row, name: str, client: Any) -> Callable[[], Any] | None:
    """R1's and R3's call through the SDK, checked against the closed form once (a failure is
    noted in the row)."""
    g = scalar_graph()
    try:
        out = client.evaluate(g, FEEDS)["out"]
    except Exception as exc:
        row.notes[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
        return None
    if not np.allclose(out, EXPECTED):
        row.notes[name] = f"wrong result {out}"
        return None
    return lambda: client.evaluate(g, FEEDS)


def _contenders(row: Row, client, why, stubs, pb, codec, floor) -> dict[str, Callable[[], Any]]:
    """R1's and R3's callers: gradserve through the SDK and each raw stub (the floor's
    too), and the floor through the SDK."""
    contenders: dict[str, Callable[[], Any]] = {}
    if client is None:
        row.notes[GS] = why
    for name, sdk in ((GS, client), (FLOOR_CLIENT, floor[FLOOR_CLIENT])):
        fn = _client_call(row, name, sdk) if sdk is not None else None
        if fn is not None:
            contenders[name] = fn
    for name, raw in {**stubs, FLOOR_STUB: floor[FLOOR_STUB]}.items():
        try:
            contenders[name] = _stub_call(raw, pb, codec)
        except AssertionError as exc:
            row.notes[name] = str(exc)
    return contenders


def _r1(row: Row, settings: Settings, client, why, stub, pb, codec, echo, stubs, floor) -> None:
    contenders = {
        ECHO: lambda: echo(b""),
        **_contenders(row, client, why, {GS_STUB: stub, **stubs}, pb, codec, floor),
    }
    block = 50 if settings.quick else 200
    rounds = 2 if settings.quick else 10
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():
        _latencies(fn, 20)  # warm-up
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name] += _latencies(fn, block)
    row.figures = dict.fromkeys([GS, GS_STUB, ECHO, *stubs, FLOOR_STUB, FLOOR_CLIENT])
    for name, values in samples.items():
        row.figures[name] = statistics.median(values)
        row.spread[name] = relative_iqr(values)
    if row.figures[GS] is None:
        row.gradserve = GS_STUB
    row.extra["p99"] = {
        name: sorted(values)[int(0.99 * (len(values) - 1))] for name, values in samples.items()
    }


def _r2(row: Row, settings: Settings, client, why, echo, clients) -> None:
    size = (64 * MIB) // 8
    big = np.random.default_rng(0).standard_normal(size)
    payload = big.tobytes()
    g = identity_graph(size)
    contenders: dict[str, Callable[[], Any]] = {ECHO: lambda: echo(payload)}
    row.figures = {GS: None, ECHO: None, **dict.fromkeys(clients)}
    if client is None:
        row.notes[GS] = why
    for name, sdk in {GS: client, **clients}.items():
        if sdk is None:
            continue
        try:
            out = sdk.evaluate(g, {"x": big})["y"]
            if np.array_equal(out, big):
                contenders[name] = functools.partial(sdk.evaluate, g, {"x": big})
            else:
                row.notes[name] = "wrong result"
        except Exception as exc:
            row.notes[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
    rounds = 2 if settings.quick else 15  # a call of 0.1-0.3 s: its spread is wide (±12-68 % at 7)
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name] += _latencies(fn, 1)
    mib = len(payload) / MIB
    for name, values in samples.items():
        # Throughput of the round trip: the payload went out and came back.
        row.figures[name] = mib / statistics.median(values)
        row.spread[name] = relative_iqr(values)
    row.extra["payload_mib"] = mib


def _r3(row: Row, settings: Settings, client, why, echo, stubs, pb, codec, floor) -> None:
    contenders = {
        ECHO: lambda: echo(b""),
        **_contenders(row, client, why, stubs, pb, codec, floor),
    }
    row.figures = dict.fromkeys([GS, ECHO, *stubs, FLOOR_STUB, FLOOR_CLIENT])
    threads = 8
    calls = 20 if settings.quick else 150
    rounds = 2 if settings.quick else 5
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for name, fn in contenders.items():
        try:
            threaded_rate([fn] * threads, calls_each=5)  # warm-up
        except Exception as exc:
            row.notes[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
            samples.pop(name)
    for _ in range(rounds):
        for name in samples:
            samples[name].append(threaded_rate([contenders[name]] * threads, calls_each=calls))
    for name, values in samples.items():
        row.figures[name] = statistics.median(values)
        row.spread[name] = relative_iqr(values)
    row.extra["threads"] = threads
