"""The graph builder: operators emit the right ops and attrs, and graphs survive the wire."""

from __future__ import annotations

from pathlib import Path

import gradserve_client as gs
import numpy as np
import pytest
from gradserve_client.proto import graph_pb2, tensor_codec


def _node(g: gs.Graph, v: gs.Var) -> graph_pb2.Node:
    return next(n for n in g.to_proto().nodes if n.name == v.name)


def _attrs(g: gs.Graph, v: gs.Var) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in _node(g, v).attrs.items():
        kind = value.WhichOneof("value")
        if kind == "ints":
            out[key] = list(value.ints.values)
        elif kind == "tensor":
            out[key] = tensor_codec.from_tensor(value.tensor)
        else:
            out[key] = getattr(value, kind)
    return out


def _constant_value(g: gs.Graph, name: str) -> np.ndarray:
    node = next(n for n in g.to_proto().nodes if n.name == name)
    assert node.op == "constant"
    return tensor_codec.from_tensor(node.attrs["value"].tensor)


def test_design_example() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    W = g.input("W", shape=(2, 3))
    y = g.output("y", gs.relu(W @ x + 1.0))
    proto = g.to_proto()
    assert [(i.name, list(i.shape)) for i in proto.inputs] == [("x", [3]), ("W", [2, 3])]
    assert proto.inputs[0].dtype == tensor_codec.dtype_from_name("float64")
    assert [n.op for n in proto.nodes] == ["matmul", "constant", "add", "relu"]
    assert list(proto.outputs) == ["y"]
    assert proto.nodes[-1].name == "y" and y.name == "y"
    assert y.shape == (2,) and y.dtype == "float64"
    assert proto.opset == gs.OPSET
    assert g.input_names == ["x", "W"] and g.output_names == ["y"]


@pytest.mark.parametrize(
    ("build", "op", "inputs"),
    [
        (lambda a, b: a + b, "add", ["a", "b"]),
        (lambda a, b: a - b, "subtract", ["a", "b"]),
        (lambda a, b: a * b, "multiply", ["a", "b"]),
        (lambda a, b: a / b, "divide", ["a", "b"]),
        (lambda a, b: a**b, "power", ["a", "b"]),
        (lambda a, b: a @ b, "matmul", ["a", "b"]),
        (lambda a, b: a < b, "less", ["a", "b"]),
        (lambda a, b: a <= b, "less_equal", ["a", "b"]),
        (lambda a, b: a > b, "greater", ["a", "b"]),
        (lambda a, b: a >= b, "greater_equal", ["a", "b"]),
        (lambda a, b: gs.equal(a, b), "equal", ["a", "b"]),
        (lambda a, b: gs.not_equal(a, b), "not_equal", ["a", "b"]),
        (lambda a, b: -a, "negative", ["a"]),
        (lambda a, b: abs(a), "abs", ["a"]),
    ],
)
def test_operators_emit_numpy_named_ops(build, op: str, inputs: list[str]) -> None:
    g = gs.Graph()
    a, b = g.input("a", shape=(3,)), g.input("b", shape=(3,))
    node = _node(g, build(a, b))
    assert node.op == op and list(node.inputs) == inputs


@pytest.mark.parametrize(
    ("build", "op"),
    [
        (lambda a: 2.0 + a, "add"),
        (lambda a: 2.0 - a, "subtract"),
        (lambda a: 2.0 * a, "multiply"),
        (lambda a: 2.0 / a, "divide"),
        (lambda a: 2.0**a, "power"),
        (lambda a: np.ones((3, 3)) @ a, "matmul"),
        (lambda a: np.ones(3) + a, "add"),
    ],
)
def test_reflected_operators_put_the_constant_first(build, op: str) -> None:
    g = gs.Graph()
    a = g.input("a", shape=(3,))
    v = build(a)
    assert isinstance(v, gs.Var)
    node = _node(g, v)
    assert node.op == op
    assert node.inputs[1] == "a"
    assert _constant_value(g, node.inputs[0]).dtype == np.float64


def test_constants_take_the_dtype_of_a_float32_operand() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,), dtype="float32")
    y = x * 2 + np.array([1.0, 2.0]) - 0.5
    assert y.dtype == "float32"
    constants = [n for n in g.to_proto().nodes if n.op == "constant"]
    assert constants and all(
        tensor_codec.dtype_name(c.attrs["value"].tensor.dtype) == "float32" for c in constants
    )


def test_constants_keep_default_dtypes_with_int_and_bool_operands() -> None:
    g = gs.Graph()
    n = g.input("n", shape=(), dtype="int64")
    assert (n + 1).dtype == "int64"
    assert (n < 2).dtype == "bool"
    with pytest.raises(TypeError, match=r"multiply: operand 1 .* but operand 0 \('n'\) is int64"):
        n * 1.5  # the core promotes nothing: an int times a float is an error


def test_equal_constants_are_shared() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    x + 1.0
    x * 1.0
    assert sum(n.op == "constant" for n in g.to_proto().nodes) == 1


@pytest.mark.parametrize(
    ("key", "index", "shape"),
    [
        (0, "0", (3, 4)),
        (-1, "-1", (3, 4)),
        (slice(1, 3), "1:3", (1, 3, 4)),
        ((slice(None), 0), ":,0", (2, 4)),
        ((Ellipsis, None), "...,None", (2, 3, 4, 1)),
        ((slice(None, None, 2), slice(1, None), slice(None, -1, -1)), "::2,1:,:-1:-1", (1, 2, 0)),
        ((1, slice(None), 0, None, Ellipsis), "1,:,0,None,...", (3, 1)),
        ((np.int64(1), Ellipsis, 2), "1,...,2", (3,)),
        ((), "", (2, 3, 4)),
    ],
)
def test_indexing_emits_a_canonical_slice(key, index: str, shape: tuple[int, ...]) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2, 3, 4))
    v = x[key]
    assert _node(g, v).op == "slice"
    assert _attrs(g, v) == {"index": index}
    assert v.shape == shape == np.zeros((2, 3, 4))[key].shape


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ([0, 1], TypeError),
        (np.array([True]), TypeError),
        (True, TypeError),
        (slice(0.5, 2), TypeError),
        (slice(None, None, 0), ValueError),
        ((Ellipsis, Ellipsis), IndexError),
        ((0, 0, 0), IndexError),
        (5, IndexError),
    ],
)
def test_unsupported_indexing_is_rejected(key, error: type[Exception]) -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2, 3))
    with pytest.raises(error):
        x[key]


def test_batch_dimension_is_unknown_through_ops() -> None:
    g = gs.Graph()
    X = g.input("X", shape=(-1, 4))
    W = g.input("W", shape=(4, 2))
    h = gs.tanh(X @ W)
    assert h.shape == (-1, 2)
    assert h[0:2].shape == (-1, 2)
    assert gs.mean(h, axis=0).shape == (2,)


@pytest.mark.parametrize(
    ("build", "op", "attrs", "shape"),
    [
        (lambda v: gs.sum(v), "sum", {"keepdims": 0}, ()),
        (lambda v: gs.sum(v, axis=1, keepdims=True), "sum", {"axis": [1], "keepdims": 1}, (2, 1)),
        (lambda v: gs.mean(v, axis=(0, 1)), "mean", {"axis": [0, 1], "keepdims": 0}, ()),
        (lambda v: gs.max(v, axis=-1), "max", {"axis": [-1], "keepdims": 0}, (2,)),
        (lambda v: gs.min(v, 0), "min", {"axis": [0], "keepdims": 0}, (3,)),
        (lambda v: gs.prod(v), "prod", {"keepdims": 0}, ()),
        (lambda v: gs.logsumexp(v, axis=1), "logsumexp", {"axis": [1], "keepdims": 0}, (2,)),
        (lambda v: gs.var(v, ddof=1), "var", {"keepdims": 0, "ddof": 1}, ()),
        (lambda v: gs.std(v, axis=0), "std", {"axis": [0], "keepdims": 0, "ddof": 0}, (3,)),
        (lambda v: gs.reshape(v, (3, -1)), "reshape", {"shape": [3, -1]}, (3, 2)),
        (lambda v: gs.transpose(v), "transpose", {}, (3, 2)),
        (lambda v: v.T, "transpose", {}, (3, 2)),
        (lambda v: gs.transpose(v, (1, 0)), "transpose", {"axes": [1, 0]}, (3, 2)),
        (lambda v: gs.broadcast_to(v, (4, 2, 3)), "broadcast_to", {"shape": [4, 2, 3]}, (4, 2, 3)),
        (lambda v: gs.expand_dims(v, 1), "expand_dims", {"axis": [1]}, (2, 1, 3)),
        (lambda v: gs.squeeze(v[:1]), "squeeze", {}, (3,)),
        (lambda v: gs.squeeze(v[:1], axis=0), "squeeze", {"axis": [0]}, (3,)),
        (lambda v: gs.concatenate([v, v], axis=1), "concatenate", {"axis": 1}, (2, 6)),
        (lambda v: gs.stack([v, v]), "stack", {"axis": 0}, (2, 2, 3)),
        (lambda v: gs.softmax(v), "softmax", {"axis": -1}, (2, 3)),
        (lambda v: gs.log_softmax(v, axis=0), "log_softmax", {"axis": 0}, (2, 3)),
        (lambda v: gs.outer(v, v), "outer", {}, (6, 6)),
        (lambda v: gs.dot(v, v.T), "dot", {}, (2, 2)),
    ],
)
def test_op_functions_emit_attrs_and_infer_shapes(build, op: str, attrs: dict, shape) -> None:
    g = gs.Graph()
    v = build(g.input("v", shape=(2, 3)))
    assert _node(g, v).op == op
    assert _attrs(g, v) == attrs
    assert v.shape == shape


def test_element_wise_and_binary_functions_exist_with_numpy_names() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    unary = "negative abs sign exp exp2 expm1 log log2 log10 log1p sqrt square reciprocal sin cos"
    unary += (
        " tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh sigmoid relu softplus"
    )
    for name in unary.split():
        v = getattr(gs, name)(x)
        assert _node(g, v).op == name and v.shape == (2,)
        assert getattr(gs, name).__doc__
    binary = "add subtract multiply divide power maximum minimum arctan2 hypot logaddexp"
    for name in binary.split():
        v = getattr(gs, name)(x, 2.0)
        assert _node(g, v).op == name
    assert _node(g, gs.ln(x)).op == "log"


def test_nn_ops() -> None:
    g = gs.Graph()
    logits = g.input("logits", shape=(-1, 5), dtype="float32")
    labels = g.input("labels", shape=(-1,), dtype="int64")
    loss = gs.cross_entropy(logits, labels)
    assert _attrs(g, loss) == {"reduction": "mean"} and loss.shape == () and loss.dtype == "float32"
    per_example = gs.cross_entropy(logits, [1, 2], reduction="none")
    assert per_example.shape == (2,)  # the labels' shape, as the core infers it
    assert _constant_value(g, _node(g, per_example).inputs[1]).dtype == np.int64
    err = gs.mse(logits, np.zeros(5), reduction="sum")
    assert _attrs(g, err) == {"reduction": "sum"}
    with pytest.raises(ValueError, match="reduction"):
        gs.mse(logits, 0.0, reduction="max")
    with pytest.raises(TypeError, match="integers"):
        gs.cross_entropy(logits, [0.5])


def test_where_and_constant() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,), dtype="float32")
    w = gs.where(x > 0, x, 0.0)
    assert _node(g, w).op == "where" and w.dtype == "float32" and w.shape == (3,)
    c = gs.constant([1, 2], graph=g)
    assert _node(g, c).op == "constant" and c.dtype == "int64" and c.shape == (2,)
    np.testing.assert_array_equal(_attrs(g, c)["value"], [1, 2])


def test_shape_errors_fail_at_build_time() -> None:
    g = gs.Graph()
    a, b = g.input("a", shape=(2, 3)), g.input("b", shape=(4, 3))
    with pytest.raises(ValueError, match="broadcast"):
        a + b
    with pytest.raises(ValueError, match="not aligned"):
        a @ b
    with pytest.raises(ValueError, match="reshape"):
        gs.reshape(a, (4, 2))


def test_output_renames_an_auto_named_node() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    s = gs.sin(x)
    assert s.name.startswith("sin_")
    y = g.output("y", s)
    assert s.name == y.name == "y"
    assert [n.name for n in g.to_proto().nodes] == ["y"]


def test_output_of_an_input_or_a_second_name_adds_an_identity_slice() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    g.output("x", x)  # an input as an output under its own name: nothing to add
    y = g.output("y", gs.sin(x))
    x_copy = g.output("x_copy", x)
    z = g.output("z", y)
    proto = g.to_proto()
    assert list(proto.outputs) == ["x", "y", "x_copy", "z"]
    for alias, source in ((x_copy, "x"), (z, "y")):
        node = _node(g, alias)
        assert (node.op, list(node.inputs), _attrs(g, alias)) == (
            "slice",
            [source],
            {"index": "..."},
        )


def test_output_name_clashes_are_errors() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    g.output("y", gs.sin(x))
    with pytest.raises(ValueError, match="output named 'y'"):
        g.output("y", gs.cos(x))
    with pytest.raises(ValueError, match="named 'x'"):
        g.output("x", gs.cos(x))
    with pytest.raises(ValueError, match="named 'x'"):
        g.input("x")


def test_auto_names_are_unique_and_skip_user_names() -> None:
    g = gs.Graph()
    x = g.input("sin_1", shape=())
    names = [gs.sin(x).name for _ in range(3)]
    assert len(set(names)) == 3 and "sin_1" not in names


def test_vars_from_another_graph_are_rejected() -> None:
    g1, g2 = gs.Graph(), gs.Graph()
    a, b = g1.input("a"), g2.input("b")
    with pytest.raises(ValueError, match="different Graphs"):
        a + b
    with pytest.raises(ValueError, match="another Graph"):
        g1.output("y", b)
    with pytest.raises(ValueError, match="different Graphs"):
        gs.stack([a, b])


def test_var_has_no_truth_value_and_is_not_iterable() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    with pytest.raises(TypeError, match="truth value"):
        bool(x > 0)
    with pytest.raises(TypeError, match="not iterable"):
        list(x)


def test_unsupported_constants_are_type_errors() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    with pytest.raises(TypeError, match="strings"):
        x + "a"
    with pytest.raises(TypeError, match=r"gs\.Var"):
        gs.sin(1.0)


def test_to_proto_is_cached_until_the_graph_changes() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2,))
    first = g.to_proto()
    assert g.to_proto() is first
    g.output("y", gs.exp(x))
    second = g.to_proto()
    assert second is not first and list(second.outputs) == ["y"]


def _example() -> gs.Graph:
    g = gs.Graph()
    X = g.input("X", shape=(-1, 3), dtype="float32")
    labels = g.input("labels", shape=(-1,), dtype="int64")
    W = g.input("W", shape=(3, 4), dtype="float32")
    logits = X @ W + np.arange(4.0)
    g.output("loss", gs.cross_entropy(logits, labels))
    g.output("probs", gs.softmax(logits)[:, 1:])
    g.output("W_copy", W)
    return g


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    g = _example()
    path = tmp_path / "model.gsg"
    g.save(path)
    loaded = gs.Graph.load(path)
    assert loaded.to_proto() == g.to_proto()
    assert loaded.input_names == g.input_names and loaded.output_names == g.output_names
    probs = loaded.outputs["probs"]
    assert probs.shape == (-1, 3) and probs.dtype == "float32"
    # A loaded graph can be extended.
    loaded.output("total", gs.sum(loaded.var("loss")))
    assert loaded.output_names[-1] == "total"


def test_from_proto_accepts_nodes_in_any_order_and_rejects_bad_graphs() -> None:
    proto = _example().to_proto()
    shuffled = graph_pb2.Graph()
    shuffled.CopyFrom(proto)
    del shuffled.nodes[:]
    shuffled.nodes.extend(reversed(proto.nodes))
    rebuilt = gs.Graph.from_proto(shuffled).to_proto()
    assert sorted(n.SerializeToString(deterministic=True) for n in rebuilt.nodes) == sorted(
        n.SerializeToString(deterministic=True) for n in proto.nodes
    )
    assert rebuilt.outputs == proto.outputs and rebuilt.inputs == proto.inputs
    dangling = graph_pb2.Graph()
    dangling.nodes.add(name="a", op="sin", inputs=["nowhere"])
    with pytest.raises(ValueError, match="unknown input 'nowhere'"):
        gs.Graph.from_proto(dangling)
    cyclic = graph_pb2.Graph()
    cyclic.nodes.add(name="a", op="sin", inputs=["b"])
    cyclic.nodes.add(name="b", op="sin", inputs=["a"])
    with pytest.raises(ValueError, match="cycle"):
        gs.Graph.from_proto(cyclic)


def test_repr_is_readable() -> None:
    text = repr(_example())
    assert text.startswith("Graph(inputs=[X: float32[-1,3], labels: int64[-1], W: float32[3,4]]")
    assert "loss: float32[] = cross_entropy(" in text
    assert "reduction='mean'" in text
    g = gs.Graph()
    assert repr(g.input("x", shape=(2,))) == "Var('x', op='input', shape=(2,), dtype='float64')"


def test_public_names_are_documented() -> None:
    for name in gs.__all__:
        obj = getattr(gs, name)
        if callable(obj):
            assert obj.__doc__, name
