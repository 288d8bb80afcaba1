"""The ONNX converter on hand-made models: inputs, initializers as defaults, symbolic batch
dimensions, folded shape arithmetic, static_inputs, and the errors that name the ONNX node, its
op type and the attribute."""

from __future__ import annotations

import gradserve_client as gs
import numpy as np
import onnx
import pytest
from gradserve_client.onnx import OnnxImportError, to_graph
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)
W = RNG.normal(size=(2, 4)).astype(np.float32)
B = RNG.normal(size=(2,)).astype(np.float32)


def model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def tensor(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def const(name: str, value) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value))
    )


def linear_model(batch="N") -> onnx.ModelProto:
    """y = relu(x @ W.T + b), flattened by a TorchScript-style view(x.size(0), -1)."""
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"]),
        const("zero", np.int64(0)),
        helper.make_node("Gather", ["shape", "zero"], ["n"]),
        const("axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        const("minus_one", np.array([-1], np.int64)),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")]
    return model(nodes, [tensor("x", [batch, 4])], [tensor("y", [batch, 2])], inits)


def reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W.T + B, 0)


def test_inputs_initializers_and_outputs() -> None:
    g = gs.Graph.from_onnx(linear_model())
    assert g.input_names == ["x", "W", "b"]
    assert g.inputs["x"].shape == (-1, 4)  # the symbolic batch dimension
    assert list(g.defaults) == ["W", "b"]
    np.testing.assert_array_equal(g.defaults["W"], W)
    assert g.output_names == ["y"]
    kinds = {n.op for n in g.to_proto().nodes}
    assert "reshape" in kinds and not kinds & {"Shape", "gather", "concatenate"}  # folded


@pytest.mark.parametrize("batch", [1, 5])
def test_values_and_weight_gradients_at_any_batch_size(batch: int) -> None:
    g = gs.Graph.from_onnx(linear_model())
    x = RNG.normal(size=(batch, 4)).astype(np.float32)
    c = gs.LocalClient()
    np.testing.assert_allclose(c.evaluate(g, {"x": x})["y"], reference(x), rtol=1e-6)
    ct = RNG.normal(size=(batch, 2)).astype(np.float32)
    grads = c.vjp(g, {"x": x}, {"y": ct}, wrt=["x", *g.defaults])
    active = (x @ W.T + B > 0) * ct
    np.testing.assert_allclose(grads["W"], active.T @ x, rtol=1e-5)
    np.testing.assert_allclose(grads["b"], active.sum(0), rtol=1e-5)
    np.testing.assert_allclose(grads["x"], active @ W, rtol=1e-5)


def test_bytes_paths_and_models_give_the_same_graph(tmp_path) -> None:
    m = linear_model()
    onnx.save(m, tmp_path / "m.onnx")
    expected = to_graph(m)
    assert to_graph(m.SerializeToString()) == expected
    assert to_graph(tmp_path / "m.onnx") == expected
    assert to_graph(str(tmp_path / "m.onnx")) == expected


def test_a_loss_on_top_of_an_imported_model_through_g_var() -> None:
    g = gs.Graph.from_onnx(linear_model(batch=3))
    h = g.var("h")  # an inner node of the ONNX graph
    target = g.input("target", shape=(3, 2), dtype="float32")
    g.output("loss", gs.mse(h, target))
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    t = RNG.normal(size=(3, 2)).astype(np.float32)
    grads = gs.LocalClient().grad(g, {"x": x, "target": t}, of="loss", wrt=["b"])
    np.testing.assert_allclose(grads["b"], (2 * (x @ W.T + B - t) / t.size).sum(0), rtol=1e-5)


def test_split_becomes_slices_with_the_output_names() -> None:
    m = model(
        [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)],
        [tensor("x", [2, 5])],
        [tensor("a", [2, 2]), tensor("b", [2, 3])],
        [numpy_helper.from_array(np.array([2, 3], np.int64), "sizes")],
    )
    g = gs.Graph.from_onnx(m)
    assert g.defaults == {}  # integer initializers are constants, not weights
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    out = gs.LocalClient().evaluate(g, {"x": x})
    np.testing.assert_array_equal(out["a"], x[:, :2])
    np.testing.assert_array_equal(out["b"], x[:, 2:])


def reshape_model() -> onnx.ModelProto:
    return model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [tensor("x", [2, 3]), tensor("shape", [2], TensorProto.INT64)],
        [tensor("y", [3, 2])],
    )


def test_static_inputs_fold_a_run_time_shape() -> None:
    with pytest.raises(OnnxImportError, match="static_inputs") as err:
        to_graph(reshape_model())
    assert (err.value.node, err.value.op_type) == ("y", "Reshape")
    assert err.value.attribute == "input 1 ('shape')"
    g = gs.Graph.from_onnx(reshape_model(), static_inputs={"shape": np.array([3, -1])})
    assert g.input_names == ["x"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(gs.LocalClient().evaluate(g, {"x": x})["y"], x.reshape(3, 2))
    with pytest.raises(OnnxImportError, match="not a graph input"):
        to_graph(reshape_model(), static_inputs={"nope": 1})


def test_a_reshape_of_two_symbolic_dimensions_says_it_needs_a_static_shape() -> None:
    m = model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
            helper.make_node("Reshape", ["x", "n"], ["y"]),
        ],
        [tensor("x", ["A", "B"])],
        [tensor("y", [None])],
    )
    with pytest.raises(OnnxImportError, match="static") as err:
        to_graph(m)
    assert err.value.op_type in ("ReduceProd", "Reshape")


@pytest.mark.parametrize(
    ("node", "op_type", "attribute"),
    [
        (helper.make_node("Hardmax", ["x"], ["y"]), "Hardmax", ""),
        (helper.make_node("Relu", ["x"], ["y"], colour=1), "Relu", "attribute 'colour'"),
        (
            helper.make_node("Gelu", ["x"], ["y"], approximate="cubic"),
            "Gelu",
            "attribute 'approximate'",
        ),
        (helper.make_node("Relu", ["x"], ["y"], domain="com.example"), "Relu", ""),
    ],
)
def test_unsupported_operators_and_attributes_are_named(node, op_type, attribute) -> None:
    node.name = "the_node"
    m = model([node], [tensor("x", [2])], [tensor("y", [2])], opset=21)
    if node.domain:
        m.opset_import.append(helper.make_opsetid(node.domain, 1))
    with pytest.raises(OnnxImportError) as err:
        gs.Graph.from_onnx(m)
    assert (err.value.node, err.value.op_type, err.value.attribute) == (
        "the_node",
        op_type,
        attribute,
    )
    assert "the_node" in str(err.value) and op_type in str(err.value)
    assert err.value.field.startswith('onnx_model.graph.node["the_node"]')


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (b"\xff\x00garbage", "not a serialized ONNX model"),
        (b"", "not an ONNX model"),
        (
            model(
                [helper.make_node("Relu", ["x"], ["y"])],
                [tensor("x", [2])],
                [tensor("y", [2])],
                opset=12,
            ),
            "opset 12",
        ),
        (
            model(
                [], [tensor("x", [2], TensorProto.FLOAT16)], [tensor("x", [2], TensorProto.FLOAT16)]
            ),
            "float16",
        ),
        (
            model(
                [helper.make_node("ConstantOfShape", ["s"], ["y"])],
                [],
                [tensor("y", None)],
                [numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s")],
            ),
            "too large",
        ),
    ],
)
def test_bad_models_are_refused_with_a_reason(source, match) -> None:
    with pytest.raises(OnnxImportError, match=match):
        to_graph(source)


def test_a_path_that_does_not_exist_is_an_import_error(tmp_path) -> None:
    with pytest.raises(OnnxImportError, match="cannot read"):
        to_graph(tmp_path / "missing.onnx")
    with pytest.raises(TypeError):
        to_graph(42)


def test_batch_normalization_in_training_mode_matches_onnx_reference() -> None:
    """Batch statistics normalise; the running mean and variance are updated (no batch_norm
    op needed: it is composed of reductions and element-wise ops)."""
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
        training_mode=1, momentum=0.8, epsilon=1e-3,
    )  # fmt: skip
    c = 3
    m = model(
        [node],
        [tensor("x", [2, c, 4, 5]), *(tensor(k, [c]) for k in "sbmv")],
        [tensor("y", [2, c, 4, 5]), tensor("rm", [c]), tensor("rv", [c])],
    )
    feeds = {"x": RNG.normal(size=(2, c, 4, 5)).astype(np.float32)}
    feeds |= {k: RNG.uniform(0.5, 2, size=c).astype(np.float32) for k in "sbmv"}
    expected = ReferenceEvaluator(m).run(None, feeds)
    got = gs.LocalClient().evaluate(gs.Graph.from_onnx(m), feeds)
    for name, want in zip(["y", "rm", "rv"], expected, strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_pooling_pad_and_einsum_gaps_match_onnx_reference_and_differentiate() -> None:
    """MaxPool's Indices, AveragePool with dilations (opset 19), Pad mode wrap and an Einsum
    diagonal: values equal ONNX's reference evaluator, the Jacobian of the float outputs
    equals central differences in both modes."""
    from onnx.reference import ReferenceEvaluator

    f64 = TensorProto.DOUBLE
    nodes = [
        helper.make_node("Slice", ["x", "zero", "four", "axes"], ["sq"]),
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="wrap"),
        helper.make_node(
            "MaxPool", ["p"], ["mp", "idx"], kernel_shape=[2, 2], strides=[1, 2], pads=[1, 0, 0, 1]
        ),
        helper.make_node(
            "AveragePool", ["p"], ["ap"], kernel_shape=[2, 2], dilations=[2, 2], ceil_mode=1
        ),
        helper.make_node("Einsum", ["sq"], ["diag"], equation="bcii->bci"),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 2, 2], np.int64), "pads"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([4], np.int64), "four"),
        numpy_helper.from_array(np.array([3], np.int64), "axes"),
    ]
    floats = ["mp", "ap", "diag"]
    outputs = [tensor(name, None, f64) for name in floats] + [
        tensor("idx", None, TensorProto.INT64)
    ]
    m = model(nodes, [tensor("x", [1, 2, 4, 5], f64)], outputs, inits, opset=19)
    x = RNG.permutation(40).reshape(1, 2, 4, 5) / 10.0  # distinct: no ties under max
    expected = ReferenceEvaluator(m).run(None, {"x": x})
    g = gs.Graph.from_onnx(m)
    c = gs.LocalClient()
    got = c.evaluate(g, {"x": x})
    for name, want in zip([*floats, "idx"], expected, strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-12, err_msg=name)
    check_jacobians(g, {"x": x}, floats)


def check_jacobians(g: gs.Graph, feeds: dict, outputs: list[str], wrt: str = "x") -> None:
    """The Jacobians of `outputs` w.r.t. `wrt`, in forward and reverse mode, equal central
    differences."""
    c, x = gs.LocalClient(), feeds[wrt]
    eps, columns = 1e-6, {name: [] for name in outputs}
    for e in np.eye(x.size).reshape(x.size, *x.shape):
        up = c.evaluate(g, {**feeds, wrt: x + eps * e})
        down = c.evaluate(g, {**feeds, wrt: x - eps * e})
        for name in outputs:
            columns[name].append((up[name] - down[name]) / (2 * eps))
    for name in outputs:
        numeric = np.stack(columns[name], axis=-1).reshape(up[name].shape + x.shape)
        for mode in ("forward", "reverse"):
            jac = c.jacobian(g, feeds, of=name, wrt=wrt, mode=mode)
            np.testing.assert_allclose(jac, numeric, atol=1e-6, err_msg=f"{name} {mode}")


def test_prelu_hardswish_mish_and_instance_norm_match_onnx_reference_and_differentiate() -> None:
    from onnx.reference import ReferenceEvaluator

    f64 = TensorProto.DOUBLE
    nodes = [
        helper.make_node("PRelu", ["x", "slope"], ["prelu"]),
        helper.make_node("HardSwish", ["x"], ["hardswish"]),
        helper.make_node("Mish", ["x"], ["mish"]),
        helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["inorm"], epsilon=0.1),
    ]
    floats = ["prelu", "hardswish", "mish", "inorm"]
    inits = [
        numpy_helper.from_array(np.array([0.1, -0.3])[:, None, None], "slope"),
        numpy_helper.from_array(np.array([1.5, -0.5]), "scale"),
        numpy_helper.from_array(np.array([0.2, 0.3]), "bias"),
    ]
    m = model(
        nodes,
        [tensor("x", [2, 2, 3, 2], f64)],
        [tensor(name, None, f64) for name in floats],
        inits,
        opset=18,
    )
    x = RNG.uniform(-4, 4, size=(2, 2, 3, 2))  # both sides of every kink, but not on one
    x[np.abs(np.abs(x) - 3) < 0.1] += 0.5
    x[np.abs(x) < 0.1] += 0.5
    g = gs.Graph.from_onnx(m)
    got = gs.LocalClient().evaluate(g, {"x": x})
    for name, want in zip(floats, ReferenceEvaluator(m).run(None, {"x": x}), strict=True):
        # HardSwish's alpha is 1/6 exactly here, a float32 in the reference: rtol 1e-6
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-12, err_msg=name)
    check_jacobians(g, {"x": x}, floats)


def test_not_and_or_xor_broadcast_and_an_older_opset_reads_where_its_ops_are_unchanged() -> None:
    """The logical ops are unchanged since opset 7 (Not since 1): their models at opset 11 are
    read; a model at opset 12 whose Relu changed at 13 is refused, naming the node."""
    b = TensorProto.BOOL
    nodes = [
        helper.make_node("Not", ["a"], ["not"]),
        helper.make_node("And", ["a", "b"], ["and"]),
        helper.make_node("Or", ["a", "b"], ["or"]),
        helper.make_node("Xor", ["a", "b"], ["xor"]),
    ]
    outs = ["not", "and", "or", "xor"]
    m = model(
        nodes,
        [tensor("a", [2, 3], b), tensor("b", [3], b)],
        [tensor(o, None, b) for o in outs],
        opset=11,
    )
    a, bb = RNG.random((2, 3)) < 0.5, np.array([True, False, True])
    got = gs.LocalClient().evaluate(gs.Graph.from_onnx(m), {"a": a, "b": bb})
    for name, want in zip(outs, [~a, a & bb, a | bb, a ^ bb], strict=True):
        assert got[name].dtype == bool
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    relu = model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        [tensor("x", [2])],
        [tensor("y", [2])],
        opset=12,
    )
    with pytest.raises(OnnxImportError, match="at opset 12 this operator") as err:
        to_graph(relu)
    assert (err.value.node, err.value.op_type) == ("r", "Relu")


@pytest.mark.parametrize("dtype", [TensorProto.INT32, TensorProto.INT64])
def test_integer_div_truncates_and_integer_pow_stays_integer(dtype) -> None:
    """ONNX's Div of integers truncates toward zero (C's, not numpy's floor division), exactly
    for values up to 2**53 in magnitude; Pow of an integer base keeps its type."""
    nodes = [
        helper.make_node("Div", ["a", "b"], ["q"]),
        helper.make_node("Pow", ["b", "e"], ["p"]),
    ]
    m = model(
        nodes,
        [tensor("a", [6], dtype), tensor("b", [6], dtype), tensor("e", [6], TensorProto.FLOAT)],
        [tensor("q", [6], dtype), tensor("p", [6], dtype)],
    )
    np_dtype = np.int32 if dtype == TensorProto.INT32 else np.int64
    big = 2**31 - 1 if dtype == TensorProto.INT32 else 2**53 - 1
    a = np.array([-7, 7, -7, 7, big, -big], np_dtype)
    b = np.array([2, 2, -2, -3, 3, big - 1], np_dtype)
    e = np.array([3, 2, 1, 0, 1, 1], np.float32)
    got = gs.LocalClient().evaluate(gs.Graph.from_onnx(m), {"a": a, "b": b, "e": e})
    truncated = np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
    assert got["q"].dtype == np_dtype and got["p"].dtype == np_dtype
    np.testing.assert_array_equal(got["q"], truncated)
    np.testing.assert_array_equal(got["p"], [8, 4, -2, 1, 3, big - 1])
