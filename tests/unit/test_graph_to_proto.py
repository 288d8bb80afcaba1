"""codec.graph_to_proto: a Program (a derivative program, say) as a Graph message that reads
back into the same Program, and that the SDK's Graph prints one node a line."""

from __future__ import annotations

import sys

import gradserve_client as gs
import numpy as np
from gradserve.autodiff import Program, vjp
from gradserve.rpc.codec import graph_from_proto, graph_to_proto


def program_of(graph: gs.Graph) -> Program:
    return Program.build(
        graph_from_proto(graph.to_proto(), max_nodes=sys.maxsize, max_elements=sys.maxsize)
    )


def test_a_program_round_trips_through_its_graph_message() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2, 3))
    w = g.input("w", shape=(3,))
    h = gs.softmax(x * w + np.array([1.0, 2.0, 3.0]), axis=-1)
    g.output("y", gs.sum(h.reshape((6,))[1:4], axis=0, keepdims=True))
    program = program_of(g)
    derived = vjp(program, ("y",), ("x", "w")).program  # internal ops and attributes included
    for p in (program, derived):
        message = graph_to_proto(p)
        again = Program.build(graph_from_proto(message, max_nodes=10**6, max_elements=10**9))
        assert again.digest == p.digest
        printed = str(gs.Graph.from_proto(message)).splitlines()
        assert len(printed) == 1 + len(p.nodes)
        assert printed[0].startswith("Graph(inputs=[x: float64[2,3], w: float64[3]")
