"""Decoding, validation, compilation and the derivative transforms ask the call's cancel
callback every CANCEL_EVERY_NODES nodes and stop with the core's Cancelled (DEADLINE_EXCEEDED
or CANCELLED on the wire); nothing cancelled is cached."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from gradserve.autodiff import Cancelled, Program
from gradserve.autodiff.cache import PROGRAM_CACHE
from gradserve.autodiff.executor import compile_program
from gradserve.autodiff.ir import CANCEL_EVERY_NODES
from gradserve.autodiff.transforms import derivative_program, hvp_transform, jvp, vjp
from gradserve.rpc.codec import graph_from_proto
from gradserve.rpc.graph_cache import GraphCache
from gradserve_client.proto import graph_pb2

N = 3 * CANCEL_EVERY_NODES + 1
UNLIMITED = {"max_nodes": sys.maxsize, "max_elements": sys.maxsize}


def chain(n: int) -> graph_pb2.Graph:
    g = graph_pb2.Graph(outputs=[f"h{n - 1}"])
    g.inputs.add(name="x", dtype=2, shape=[3])
    for i in range(n):
        g.nodes.add(name=f"h{i}", op="sin", inputs=[f"h{i - 1}" if i else "x"])
    return g


def loss_chain() -> Program:
    """``chain(N - 1)`` summed into the scalar ``s``: N nodes."""
    g = chain(N - 1)
    g.nodes.add(name="s", op="sum", inputs=[f"h{N - 2}"])
    g.outputs[:] = ["s"]
    return Program.build(graph_from_proto(g, **UNLIMITED))


@pytest.fixture(autouse=True)
def _cold_cache():
    """Each test compiles and differentiates afresh (the program cache is per process)."""
    PROGRAM_CACHE.clear()
    yield
    PROGRAM_CACHE.clear()


class Countdown:
    """A cancel callback: False ``left`` times, then True; counts the times it was asked."""

    def __init__(self, left: int = sys.maxsize) -> None:
        self.left, self.asked = left, 0

    def __call__(self) -> bool:
        self.asked += 1
        self.left -= 1
        return self.left < 0


def test_decoding_and_validation_ask_every_cancel_every_nodes() -> None:
    decode, validate = Countdown(), Countdown()
    graph = graph_from_proto(chain(N), **UNLIMITED, cancel=decode)
    Program.build(graph, cancel=validate)
    assert decode.asked == validate.asked == 4  # nodes 0, 512, 1024 and 1536


@pytest.mark.parametrize("left", [0, 2])
def test_decoding_stops_when_cancelled(left: int) -> None:
    cancel = Countdown(left)
    with pytest.raises(Cancelled):
        graph_from_proto(chain(N), **UNLIMITED, cancel=cancel)
    assert cancel.asked == left + 1


@pytest.mark.parametrize("left", [0, 3])
def test_validation_stops_when_cancelled(left: int) -> None:
    graph = graph_from_proto(chain(N), **UNLIMITED)
    cancel = Countdown(left)
    with pytest.raises(Cancelled):
        Program.build(graph, cancel=cancel)
    assert cancel.asked == left + 1


def test_a_cancelled_graph_is_not_cached() -> None:
    cache = GraphCache(8)
    with pytest.raises(Cancelled):
        cache.put_proto(chain(N), **UNLIMITED, cancel=Countdown(1))
    assert len(cache) == 0
    entry = cache.put_proto(chain(N), **UNLIMITED, cancel=Countdown())
    assert len(entry.program.nodes) == N


# Each stage over the N nodes of ``loss_chain()``, with the times it asks its cancel callback
# (nodes 0, 512, 1024 and 1536 of each loop over nodes).
STAGES: dict[str, tuple[Callable[[Program, Countdown], object], int]] = {
    "compile": (lambda p, cancel: compile_program(p, cancel=cancel), 4),
    "vjp": (lambda p, cancel: vjp(p, ("s",), ("x",), cancel=cancel), 4),
    "jvp": (lambda p, cancel: jvp(p, ("x",), ("s",), cancel=cancel), 4),
    "batched vjp": (lambda p, cancel: vjp(p, ("s",), ("x",), 2, cancel=cancel), 4),
}


@pytest.mark.parametrize("stage", STAGES)
def test_compiling_and_transforming_ask_every_cancel_every_nodes(stage: str) -> None:
    run, checks = STAGES[stage]
    program = loss_chain()
    cancel = Countdown()
    run(program, cancel)
    assert cancel.asked == checks
    again = Countdown(0)
    run(program, again)  # cached: nothing left to stop
    assert again.asked == 0


@pytest.mark.parametrize("left", [0, 3])
@pytest.mark.parametrize("stage", STAGES)
def test_compiling_and_transforming_stop_when_cancelled(stage: str, left: int) -> None:
    run, checks = STAGES[stage]
    program = loss_chain()
    cancel = Countdown(left)
    with pytest.raises(Cancelled):
        run(program, cancel)
    assert cancel.asked == left + 1
    after = Countdown()
    run(program, after)  # the cancelled result was not cached: done again, whole
    assert after.asked == checks


def test_an_hvp_transform_is_stopped_in_the_gradient_or_in_its_jvp() -> None:
    """Forward over reverse: the gradient's VJP asks 4 times; the JVP of the gradient program
    (its N primal nodes and the VJP's) asks from its first node on."""
    program = loss_chain()
    whole = Countdown()
    hvp_transform(program, "s", ("x",), cancel=whole)
    assert whole.asked > 4 + 4
    for left in (3, 4, whole.asked - 1):
        PROGRAM_CACHE.clear()  # else the gradient is cached once its VJP is whole
        cancel = Countdown(left)
        with pytest.raises(Cancelled):
            hvp_transform(program, "s", ("x",), cancel=cancel)
        assert cancel.asked == left + 1


@pytest.mark.parametrize("kind", ["vjp", "jvp", "hvp"])
def test_derivative_program_is_stopped_by_its_cancel_callback(kind: str) -> None:
    cancel = Countdown(1)
    with pytest.raises(Cancelled):
        derivative_program(loss_chain(), "s", "x", kind, cancel=cancel)
    assert cancel.asked == 2
