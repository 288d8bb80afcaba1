"""Call sites: every node the SDK makes records where the user's code built it (Node.source),
errors name it on the client and on the server, and it is not part of the graph's identity."""

from __future__ import annotations

import sys
from pathlib import Path

import gradserve_client as gs
import onnx
import pytest
from gradserve.autodiff import GraphError, Program
from gradserve.autodiff.transforms import jvp, vjp
from gradserve.rpc.codec import graph_from_proto
from gradserve_client.proto import graph_pb2
from onnx import helper

HERE = __file__
UNLIMITED = {"max_nodes": sys.maxsize, "max_elements": sys.maxsize}


def caller_line() -> int:
    """The line number of the caller's current line."""
    return sys._getframe(1).f_lineno


def sources(g: gs.Graph) -> dict[str, str]:
    return {n.name: n.source for n in g.to_proto().nodes}


def residual(x: gs.Var) -> tuple[gs.Var, int]:
    """A helper of the user's: its nodes are built here, in ``residual``."""
    return x - 1.0, caller_line()


def test_each_node_records_the_users_line_and_function() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    y, line = gs.sin(x) * 2.0, caller_line()
    z, helper_line = residual(y)
    g.output("z", z)
    site = f"{HERE}:{line} in test_each_node_records_the_users_line_and_function"
    assert sources(g) == {
        "sin_1": site,
        "constant_2": site,  # an operand's constant: the line that used the value
        "multiply_3": site,
        "constant_4": f"{HERE}:{helper_line} in residual",
        "z": f"{HERE}:{helper_line} in residual",  # renamed by output(), built in residual
    }


def test_the_sdks_own_frames_are_skipped() -> None:
    """Nodes made inside the SDK (a composite of several ops, an operator method, Var.T) name
    the user's line, not the SDK's."""
    g = gs.Graph()
    x = g.input("x", shape=(6, 2))
    parts, line = gs.split(x, 3), caller_line()
    t, t_line = parts[0].T.sum(), caller_line()
    g.output("t", t)
    made = sources(g)
    assert made and all(s.startswith(HERE) for s in made.values()), made
    assert {made[p.name] for p in parts} == {f"{HERE}:{line} in {_name()}"}
    assert made["t"] == f"{HERE}:{t_line} in {_name()}"


def _name() -> str:
    return "test_the_sdks_own_frames_are_skipped"


def test_a_client_side_shape_error_names_where_the_operand_was_built() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    W = g.input("W", shape=(2, 4))
    d, line = x - 1.0, caller_line()
    with pytest.raises(ValueError) as info:
        W @ d
    where = f"{HERE}:{line} in test_a_client_side_shape_error_names_where_the_operand_was_built"
    assert str(info.value) == (
        f"matmul: operand 1 ('subtract_2', built at {where}): "
        "matmul: shapes [2, 4] and [3] are not aligned (4 != 3)"
    )
    with pytest.raises(TypeError, match=rf"operand 0 \('subtract_2', built at {where}\)"):
        gs.where(d, x, x)


def test_sources_survive_save_and_load(tmp_path: Path) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    d, line = x - 1.0, caller_line()
    g.output("d", d)
    g.save(tmp_path / "g.gsg")
    loaded = gs.Graph.load(tmp_path / "g.gsg")
    assert loaded.to_proto() == g.to_proto()
    assert sources(loaded)["d"] == f"{HERE}:{line} in test_sources_survive_save_and_load"
    W = loaded.input("W", shape=(2, 4))
    with pytest.raises(ValueError, match=rf"operand 1 \('d', built at {HERE}:{line} in "):
        W @ loaded.var("d")


def _graph(source: str) -> graph_pb2.Graph:
    """x (3,) - y (4,): the server's shape error at node "subtract_2"."""
    g = graph_pb2.Graph(outputs=["subtract_2"])
    g.inputs.add(name="x", dtype=2, shape=[3])
    g.inputs.add(name="y", dtype=2, shape=[4])
    g.nodes.add(name="subtract_2", op="subtract", inputs=["x", "y"], source=source)
    return g


def test_the_server_names_the_source_in_its_validation_error() -> None:
    graph = graph_from_proto(_graph("model.py:12 in loss"), **UNLIMITED)
    assert graph.nodes[0].source == "model.py:12 in loss"
    with pytest.raises(GraphError) as info:
        Program.build(graph)
    assert info.value.node == "subtract_2"
    assert info.value.reason.endswith(" (built at model.py:12 in loss)")
    assert "do not broadcast" in info.value.reason
    with pytest.raises(GraphError) as unsourced:
        Program.build(graph_from_proto(_graph(""), **UNLIMITED))
    assert "built at" not in unsourced.value.reason


def test_the_source_is_not_part_of_the_graph_id() -> None:
    def program(source: str) -> Program:
        pb = _graph(source)
        pb.inputs[1].shape[:] = [3]
        return Program.build(graph_from_proto(pb, **UNLIMITED))

    a, b = program("a.py:1 in f"), program("b.py:2 in g")
    assert a.digest == b.digest == program("").digest
    assert a.nodes[0].source == "a.py:1 in f"  # kept for the errors of later stages


def test_converted_onnx_nodes_name_their_onnx_node() -> None:
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Sin", ["x"], ["y"], name="the_sin")],
            "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [3])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [3])],
        )
    )
    g = gs.Graph.from_onnx(model.SerializeToString())
    assert sources(g) == {"y": "ONNX node 'the_sin' (Sin)"}


@pytest.mark.parametrize("transform", ["vjp", "jvp"])
def test_a_derivative_s_nodes_carry_the_source_of_the_node_they_differentiate(
    transform: str,
) -> None:
    """y = sin(x) * w: every node a rule emits for sin (or for multiply) has sin's (or
    multiply's) source, so an error while the derivative runs says where the user built it."""
    g = graph_pb2.Graph(outputs=["y"])
    g.inputs.add(name="x", dtype=2, shape=[3])
    g.inputs.add(name="w", dtype=2, shape=[3])
    g.nodes.add(name="s", op="sin", inputs=["x"], source="model.py:1 in f")
    g.nodes.add(name="y", op="multiply", inputs=["s", "w"], source="model.py:2 in f")
    program = Program.build(graph_from_proto(g, **UNLIMITED))
    d = vjp(program, ("y",), ("x",)) if transform == "vjp" else jvp(program, ("x",), ("y",))
    emitted = [n for n in d.program.nodes if n.name.startswith("%")]
    assert {n.source for n in emitted} == {"model.py:1 in f", "model.py:2 in f"}
    assert [n.source for n in emitted if n.op == "cos"] == ["model.py:1 in f"]
