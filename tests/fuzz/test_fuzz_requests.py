"""Fuzzing the request decoding and validation of every RPC against a real server.

Structure-aware requests (``protofuzz.requests``: graphs of registered ops with inputs and the
method's fields referring to them, random fields merged over them), any message of the type
(``protofuzz.message``, from its descriptor), and byte-level mutations of serialized requests,
small and large (large Evaluate requests are read by gradserve's own wire reader). Each must be
answered with a status that is the client's doing or a limit: never INTERNAL or UNKNOWN (a
crash in a handler or a deserializer), never a hang (DEADLINE_EXCEEDED at 20 s).

``make test`` runs each test for FUZZ_SECONDS (default 6); ``make fuzz`` for 5 minutes each.
The counts are printed (``pytest -s``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from gradserve.config import Settings
from gradserve.rpc.handlers import SERVICE
from gradserve.server import create_server
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from protofuzz import message, mutated, request_stream, requests

FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS", "6"))
CALL_TIMEOUT = 20.0
# What a bad request may get; anything else (INTERNAL, UNKNOWN, DEADLINE_EXCEEDED) is a bug.
ACCEPTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}
METHODS = list(SERVICE.methods)


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server, port, _ = create_server(
        Settings(host="127.0.0.1", port=0, metrics_port=0, max_message_bytes=16 << 20)
    )
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    access = logging.getLogger("gradserve.access")
    level = access.level
    access.setLevel(logging.ERROR)  # thousands of refused calls: not one line each
    yield ch
    access.setLevel(level)
    ch.close()
    server.stop(None)


def call(channel: grpc.Channel, method, request) -> grpc.StatusCode:
    """Send ``request`` (a message, a list of messages for a client stream, or bytes) to
    ``method`` and read the whole answer; its status code."""
    path = f"/{SERVICE.full_name}/{method.name}"

    def raw(m) -> bytes:
        return m if isinstance(m, bytes) else m.SerializeToString()

    kind = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
    }[(method.client_streaming, method.server_streaming)]
    stub = kind(path, request_serializer=raw, response_deserializer=None)
    try:
        if method.client_streaming:
            request = iter(request if isinstance(request, list) else [request])
        result = stub(request, timeout=CALL_TIMEOUT)
        if method.server_streaming:
            for _ in result:
                pass
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def run_for(seconds: float, cases: st.SearchStrategy, body: Callable[[object], None]) -> int:
    """Run ``body`` on examples of ``cases`` (hypothesis, a new seed each round of 50) until
    ``seconds`` have passed; the rounds."""
    rounds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        test = given(cases)(body)
        settings(max_examples=50, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))(seed(rounds)(test))()  # fmt: skip
        rounds += 1
    return rounds


def check(counts: Counter, what: str, code: grpc.StatusCode, request) -> None:
    counts[code.name] += 1
    assert code in ACCEPTED, f"{what}: {code.name} for {request!r:.2000}"


def test_fuzz_structured_and_random_messages_of_every_rpc(channel):
    counts: Counter[str] = Counter()
    structured = st.sampled_from([m for m in METHODS if not m.client_streaming]).flatmap(
        lambda m: st.tuples(st.just(m), requests(m))
    )
    random = st.sampled_from(METHODS).flatmap(
        lambda m: st.tuples(
            st.just(m), request_stream(m) if m.client_streaming else message(m.input_type)
        )
    )

    def one(case) -> None:
        method, request = case
        check(counts, method.name, call(channel, method, request), request)

    runs = run_for(FUZZ_SECONDS, structured | random, one)
    print(f"\nfuzz (messages): {sum(counts.values())} calls in {runs} rounds: {dict(counts)}")
    assert counts["OK"] > 0 and counts["INVALID_ARGUMENT"] > 0


def _large_evaluate() -> bytes:
    """A valid Evaluate request above the size from which gradserve reads it by hand
    (wire.DIRECT_PARSE_BYTES): an 80 kB input through sin."""
    request = pb.EvaluateRequest(outputs=["y"])
    request.graph.inputs.add(name="x0", dtype=2, shape=[10_000])
    request.graph.nodes.add(name="y", op="sin", inputs=["x0"])
    request.graph.outputs.append("y")
    request.inputs["x0"].CopyFrom(tensor_codec.to_tensor(np.arange(10_000.0)))
    return request.SerializeToString()


def test_fuzz_mutated_bytes_of_every_rpc(channel):
    counts: Counter[str] = Counter()
    evaluate = next(m for m in METHODS if m.name == "Evaluate")
    unary = [m for m in METHODS if not m.client_streaming]
    valid = st.sampled_from(unary).flatmap(
        lambda m: st.tuples(st.just(m), requests(m).map(lambda r: r.SerializeToString()))
    ) | st.just((evaluate, _large_evaluate()))

    def one(case) -> None:
        method, data = case
        check(counts, method.name, call(channel, method, data), data)

    cases = valid.flatmap(lambda c: st.tuples(st.just(c[0]), mutated(c[1])))
    runs = run_for(FUZZ_SECONDS, cases, one)
    print(f"\nfuzz (mutated bytes): {sum(counts.values())} calls in {runs} rounds: {dict(counts)}")
    assert counts["INVALID_ARGUMENT"] > 0
