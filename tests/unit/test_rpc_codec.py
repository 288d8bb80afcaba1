"""gradserve.rpc.codec: the request limits (max_graph_nodes, max_tensor_elements, for inputs
and constants) at their boundary, and decode errors naming the field, without a server."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from gradserve.autodiff import OPSET, Program
from gradserve.rpc import codec
from gradserve.rpc.errors import InvalidArgument, LimitExceeded
from gradserve_client.proto import graph_pb2, tensor_codec, tensor_pb2
from onnx import helper

F64 = tensor_pb2.DTYPE_FLOAT64


def graph(nodes: int, constant: np.ndarray | None = None, shape=(3,), dtype=F64):
    g = graph_pb2.Graph(inputs=[graph_pb2.InputSpec(name="x", dtype=dtype, shape=list(shape))])
    prev = "x"
    for i in range(nodes):
        g.nodes.add(name=f"n{i}", op="sin", inputs=[prev])
        prev = f"n{i}"
    if constant is not None:
        node = g.nodes.add(name="c", op="constant")
        node.attrs["value"].tensor.CopyFrom(tensor_codec.to_tensor(constant))
    g.outputs.append(prev)
    return g


def test_max_graph_nodes_is_the_most_nodes_allowed() -> None:
    definition = codec.graph_from_proto(graph(5), max_nodes=5, max_elements=10)
    assert [n.name for n in definition.nodes] == [f"n{i}" for i in range(5)]
    assert definition.outputs == ("n4",) and definition.inputs[0].shape == (3,)
    with pytest.raises(LimitExceeded) as info:
        codec.graph_from_proto(graph(6), max_nodes=5, max_elements=10)
    assert info.value.metadata == {"limit": "max_graph_nodes"}
    assert info.value.message == (
        "the graph has 6 nodes, more than max_graph_nodes=5; split the computation into"
        " smaller graphs or raise --max-graph-nodes"
    )


def test_max_tensor_elements_for_inputs() -> None:
    inputs = {"x": tensor_codec.to_tensor(np.arange(4.0))}
    decoded = codec.decode_tensors(inputs, "inputs", max_elements=4)
    np.testing.assert_array_equal(decoded["x"], np.arange(4.0))
    with pytest.raises(LimitExceeded) as info:
        codec.decode_tensors(inputs, "inputs", max_elements=3)
    assert info.value.metadata == {"limit": "max_tensor_elements"}
    assert info.value.message == (
        'inputs["x"] has 4 elements in shape (4,), more than the limit of 3:'
        " max_tensor_elements. Send a smaller tensor, or raise the server's"
        " --max-tensor-elements"
    )


def test_max_tensor_elements_for_constants() -> None:
    ok = codec.graph_from_proto(graph(1, np.ones(4)), max_nodes=5, max_elements=4)
    np.testing.assert_array_equal(ok.nodes[-1].attrs["value"], np.ones(4))
    with pytest.raises(LimitExceeded) as info:
        codec.graph_from_proto(graph(1, np.ones(5)), max_nodes=5, max_elements=4)
    assert info.value.message.startswith('graph.nodes["c"].attrs.value has 5 elements')


@pytest.mark.parametrize(
    ("tensor", "field", "why"),
    [
        (tensor_pb2.Tensor(dtype=0, shape=[1], data=b"\0" * 8), 'inputs["x"].dtype', "dtype "),
        (tensor_pb2.Tensor(dtype=F64, shape=[2], data=b"\0" * 8), 'inputs["x"].data', "bytes"),
        (tensor_pb2.Tensor(dtype=F64, shape=[-1], data=b""), 'inputs["x"].shape', "negative"),
    ],
    ids=["dtype", "data", "shape"],
)
def test_decode_errors_name_the_field(tensor: tensor_pb2.Tensor, field: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        codec.decode_tensors({"x": tensor}, "inputs", max_elements=100)
    ((named, description),) = info.value.violations
    assert named == field and why in description
    with pytest.raises(tensor_codec.TensorDecodeError) as core:
        tensor_codec.from_tensor(tensor)
    assert description == core.value.reason


def test_input_specs_are_checked() -> None:
    assert codec.graph_from_proto(graph(1, shape=(-1, 2)), max_nodes=5, max_elements=4).inputs[
        0
    ].shape == (-1, 2)
    with pytest.raises(InvalidArgument) as info:
        codec.graph_from_proto(graph(1, shape=(-2,)), max_nodes=5, max_elements=4)
    assert info.value.violations == [
        ('graph.inputs["x"].shape', "dimensions must be >= 0, or -1 for any size; got [-2]")
    ]
    assert info.value.reason == "INVALID_GRAPH"
    with pytest.raises(InvalidArgument) as info:
        codec.graph_from_proto(graph(1, dtype=99), max_nodes=5, max_elements=4)
    with pytest.raises(ValueError) as dtype_error:
        tensor_codec.dtype_name(99)
    assert info.value.violations == [('graph.inputs["x"].dtype', str(dtype_error.value))]
    assert info.value.reason == "INVALID_GRAPH"


def test_input_defaults_are_decoded_under_the_limit() -> None:
    g = graph(1)
    g.inputs.add(name="w", dtype=F64, shape=[2]).default.CopyFrom(
        tensor_codec.to_tensor(np.array([1.5, -2.0]))
    )
    (_, w) = codec.graph_from_proto(g, max_nodes=5, max_elements=2).inputs
    np.testing.assert_array_equal(w.default, [1.5, -2.0])
    with pytest.raises(LimitExceeded) as info:
        codec.graph_from_proto(g, max_nodes=5, max_elements=1)
    assert info.value.message.startswith('graph.inputs["w"].default has 2 elements')
    g.inputs[1].default.data = b"\0" * 3
    with pytest.raises(InvalidArgument) as bad:
        codec.graph_from_proto(g, max_nodes=5, max_elements=2)
    assert bad.value.violations[0][0] == 'graph.inputs["w"].default.data'


def test_attrs_of_every_kind() -> None:
    g = graph(1)
    attrs = g.nodes[0].attrs
    attrs["i"].i = -3
    attrs["f"].f = 0.5
    attrs["ints"].ints.values.extend([1, -2])
    attrs["floats"].floats.values.extend([0.25])
    attrs["s"].s = "name"
    got = codec.graph_from_proto(g, max_nodes=5, max_elements=4).nodes[0].attrs
    assert got == {"f": 0.5, "floats": (0.25,), "i": -3, "ints": (1, -2), "s": "name"}
    attrs["empty"].SetInParent()
    with pytest.raises(InvalidArgument) as info:
        codec.graph_from_proto(g, max_nodes=5, max_elements=4)
    assert info.value.violations == [('graph.nodes["n0"].attrs.empty', "no value set")]
    assert info.value.reason == "INVALID_GRAPH"


def test_a_program_as_a_graph_message_reads_back_into_the_same_program() -> None:
    """graph_to_proto (DerivativeProgram's answer) and graph_from_proto are inverses: the
    same Program (digest), the same attributes and node sources."""
    g = graph(2, constant=np.arange(3.0))
    g.nodes[0].source = "model.py:3 in f"
    g.nodes.add(name="s", op="sum", inputs=["c"]).attrs["axis"].ints.values.append(0)
    g.outputs.append("s")
    program = Program.build(codec.graph_from_proto(g, max_nodes=9, max_elements=9))
    message = codec.graph_to_proto(program)
    assert message.opset == OPSET and list(message.outputs) == ["n1", "s"]
    assert [(i.name, i.dtype, list(i.shape)) for i in message.inputs] == [("x", F64, [3])]
    assert {n.name: n.source for n in message.nodes}["n0"] == "model.py:3 in f"
    again = Program.build(codec.graph_from_proto(message, max_nodes=9, max_elements=9))
    assert again.digest == program.digest
    assert [(n.name, n.op, n.inputs, n.source) for n in again.nodes] == [
        (n.name, n.op, n.inputs, n.source) for n in program.nodes
    ]
    np.testing.assert_array_equal(
        {n.name: n for n in again.nodes}["c"].attrs["value"], np.arange(3.0)
    )
    assert {n.name: n for n in again.nodes}["s"].attrs["axis"] == (0,)


def test_onnx_models_are_converted_and_refusals_name_the_onnx_node() -> None:
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Sin", ["x"], ["y"], name="the_sin")],
            "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [3])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [3])],
        )
    )
    message = codec.graph_from_onnx(model.SerializeToString())
    assert [(n.op, list(n.inputs)) for n in message.nodes] == [("sin", ["x"])]
    assert list(message.outputs) == ["y"]
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(InvalidArgument) as info:
        codec.graph_from_onnx(model.SerializeToString())
    ((field, description),) = info.value.violations
    assert field == 'onnx_model.graph.node["the_sin"]'
    assert "NoSuchOp" in description and "not supported" in description
    assert info.value.reason == "INVALID_GRAPH"


def test_encode_round_trips() -> None:
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array(True)}
    decoded = codec.decode_tensors(codec.encode_tensors(arrays), "outputs", max_elements=6)
    for name, value in arrays.items():
        assert decoded[name].dtype == value.dtype
        np.testing.assert_array_equal(decoded[name], value)
    np.testing.assert_array_equal(
        tensor_codec.from_tensor(codec.encode_tensor(arrays["a"])), arrays["a"]
    )
