"""gradserve.rpc.codec: the request limits (max_graph_nodes, max_tensor_elements, for inputs
and constants) at their boundary, and decode errors naming the field, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from gradserve.rpc import codec
from gradserve.rpc.errors import InvalidArgument, LimitExceeded
from gradserve_client.proto import graph_pb2, tensor_codec, tensor_pb2

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
    assert "the graph has 6 nodes, more than max_graph_nodes=5" in info.value.message


def test_max_tensor_elements_for_inputs() -> None:
    inputs = {"x": tensor_codec.to_tensor(np.arange(4.0))}
    decoded = codec.decode_tensors(inputs, "inputs", max_elements=4)
    np.testing.assert_array_equal(decoded["x"], np.arange(4.0))
    with pytest.raises(LimitExceeded) as info:
        codec.decode_tensors(inputs, "inputs", max_elements=3)
    assert info.value.metadata == {"limit": "max_tensor_elements"}
    assert info.value.message.startswith('inputs["x"] has 4 elements in shape (4,), more than')
    assert "--max-tensor-elements" in info.value.message


def test_max_tensor_elements_for_constants() -> None:
    ok = codec.graph_from_proto(graph(1, np.ones(4)), max_nodes=5, max_elements=4)
    np.testing.assert_array_equal(ok.nodes[-1].attrs["value"], np.ones(4))
    with pytest.raises(LimitExceeded) as info:
        codec.graph_from_proto(graph(1, np.ones(5)), max_nodes=5, max_elements=4)
    assert info.value.message.startswith('graph.nodes["c"].attrs.value has 5 elements')


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        (tensor_pb2.Tensor(dtype=0, shape=[1], data=b"\0" * 8), 'inputs["x"].dtype'),
        (tensor_pb2.Tensor(dtype=F64, shape=[2], data=b"\0" * 8), 'inputs["x"].data'),
        (tensor_pb2.Tensor(dtype=F64, shape=[-1], data=b""), 'inputs["x"].shape'),
    ],
    ids=["dtype", "data", "shape"],
)
def test_decode_errors_name_the_field(tensor: tensor_pb2.Tensor, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        codec.decode_tensors({"x": tensor}, "inputs", max_elements=100)
    assert info.value.violations[0][0] == field


def test_input_specs_are_checked() -> None:
    assert codec.graph_from_proto(graph(1, shape=(-1, 2)), max_nodes=5, max_elements=4).inputs[
        0
    ].shape == (-1, 2)
    with pytest.raises(InvalidArgument) as info:
        codec.graph_from_proto(graph(1, shape=(-2,)), max_nodes=5, max_elements=4)
    assert info.value.violations[0][0] == 'graph.inputs["x"].shape'
    with pytest.raises(InvalidArgument) as info:
        codec.graph_from_proto(graph(1, dtype=99), max_nodes=5, max_elements=4)
    assert info.value.violations[0][0] == 'graph.inputs["x"].dtype'


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


def test_encode_round_trips() -> None:
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array(True)}
    decoded = codec.decode_tensors(codec.encode_tensors(arrays), "outputs", max_elements=6)
    for name, value in arrays.items():
        assert decoded[name].dtype == value.dtype
        np.testing.assert_array_equal(decoded[name], value)
    np.testing.assert_array_equal(
        tensor_codec.from_tensor(codec.encode_tensor(arrays["a"])), arrays["a"]
    )
