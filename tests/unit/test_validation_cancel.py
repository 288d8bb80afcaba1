"""Decoding and validation ask the call's cancel callback every CANCEL_EVERY_NODES nodes and
stop with the core's Cancelled (DEADLINE_EXCEEDED or CANCELLED on the wire)."""

from __future__ import annotations

import sys

import pytest
from gradserve.autodiff import Cancelled, Program
from gradserve.autodiff.ir import CANCEL_EVERY_NODES
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
