"""dtypes: float32 end to end, and int64/bool values that flow through without gradients."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import op_program, program
from gradserve.autodiff import (
    GraphError,
    evaluate,
    jacobian,
    jvp,
    jvp_values,
    vjp,
    vjp_values,
)
from gradserve.autodiff.executor import compile_program
from test_elementwise import BINARY, UNARY, _binary_feeds

F32 = dict(rtol=2e-4, atol=2e-5)


def _mlp(dtype: str):
    """A small classifier and regressor: float weights, int64 labels, a bool mask."""
    c = np.linspace(-1, 1, 12).reshape(4, 3).astype(dtype)
    return program(
        {
            "x": ((5, 4), dtype),
            "w": ((4, 3), dtype),
            "b": ((3,), dtype),
            "labels": ((5,), "int64"),
            "mask": ((5, 3), "bool"),
        },
        [
            ("c", "constant", [], {"value": c}),
            ("h", "matmul", ["x", "w"]),
            ("hc", "matmul", ["x", "c"]),
            ("z", "add", ["h", "b"]),
            ("a", "tanh", ["z"]),
            ("m", "where", ["mask", "a", "hc"]),
            ("p", "softmax", ["m"], {"axis": -1}),
            ("ce", "cross_entropy", ["m", "labels"]),
            ("sq", "mse", ["p", "a"]),
            ("loss", "add", ["ce", "sq"]),
        ],
        ["loss", "p"],
    )


def _feeds(dtype: str):
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((5, 4)).astype(dtype),
        "w": rng.standard_normal((4, 3)).astype(dtype),
        "b": rng.standard_normal(3).astype(dtype),
        "labels": np.array([0, 2, 1, 1, 0]),
        "mask": rng.random((5, 3)) > 0.3,
    }


WRT = ["x", "w", "b"]


def test_float32_end_to_end_values_gradients_jacobians():
    p32, p64 = _mlp("float32"), _mlp("float64")
    f32, f64 = _feeds("float32"), _feeds("float64")
    assert p32.types["loss"].dtype == "float32" and p32.types["p"].dtype == "float32"
    v32, v64 = evaluate(p32, f32), evaluate(p64, f64)
    for k in v32:
        assert v32[k].dtype == np.float32, k
        np.testing.assert_allclose(v32[k], v64[k], **F32)

    _, g32 = vjp_values(p32, f32, {"loss": np.float32(1)}, WRT)
    _, g64 = vjp_values(p64, f64, {"loss": np.float64(1)}, WRT)
    for w in WRT:
        assert g32[w].dtype == np.float32, w
        np.testing.assert_allclose(g32[w], g64[w], **F32)

    t32 = {w: np.ones_like(f32[w]) for w in WRT}
    t64 = {w: np.ones_like(f64[w]) for w in WRT}
    _, j32 = jvp_values(p32, f32, t32, ["p", "loss"])
    _, j64 = jvp_values(p64, f64, t64, ["p", "loss"])
    for k in j32:
        assert j32[k].dtype == np.float32, k
        np.testing.assert_allclose(j32[k], j64[k], **F32)

    for mode in ("forward", "reverse"):
        for chunk in (None, 2):
            _, J32 = jacobian(p32, f32, ["p", "loss"], WRT, mode=mode, chunk_size=chunk)
            _, J64 = jacobian(p64, f64, ["p", "loss"], WRT, mode=mode, chunk_size=chunk)
            for o in J32:
                for w in J32[o]:
                    assert J32[o][w].dtype == np.float32, (mode, o, w)
                    assert J32[o][w].shape == p32.types[o].shape + p32.types[w].shape
                    np.testing.assert_allclose(J32[o][w], J64[o][w], **F32)


def test_float32_derivative_programs_stay_float32():
    p = _mlp("float32")
    for d in (vjp(p, ("loss",), tuple(WRT)), jvp(p, tuple(WRT), ("p",)), vjp(p, ("p",), ("w",), 3)):
        for node in d.program.nodes:
            t = d.program.types[node.name]
            assert t.dtype in ("float32", "int64", "bool"), (node, t)
        for name in d.seeds + d.results:
            assert d.program.types[name].dtype == "float32"


def test_float32_second_derivative():
    p = _mlp("float32")
    first = vjp(p, ("loss",), ("b",))
    feeds = {**_feeds("float32"), first.seeds[0]: np.float32(1)}
    grad = first.results[0]
    p64 = _mlp("float64")
    first64 = vjp(p64, ("loss",), ("b",))
    feeds64 = {**_feeds("float64"), first64.seeds[0]: np.float64(1)}
    for mode in ("forward", "reverse"):
        _, h32 = jacobian(first.program, feeds, [grad], ["b"], mode=mode)
        _, h64 = jacobian(first64.program, feeds64, [first64.results[0]], ["b"], mode=mode)
        assert h32[grad]["b"].dtype == np.float32
        np.testing.assert_allclose(h32[grad]["b"], h64[first64.results[0]]["b"], **F32)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_float32_unary(name):
    _, sample = UNARY[name]
    x64 = sample(np.random.default_rng(1), (3, 2))
    x32 = x64.astype(np.float32)
    p32, p64 = op_program(name, [(3, 2)], dtype="float32"), op_program(name, [(3, 2)])
    y32 = evaluate(p32, {"x0": x32})["y"]
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, evaluate(p64, {"x0": x32.astype(np.float64)})["y"], **F32)
    for mode in ("forward", "reverse"):
        _, j32 = jacobian(p32, {"x0": x32}, ["y"], ["x0"], mode=mode)
        _, j64 = jacobian(p64, {"x0": x32.astype(np.float64)}, ["y"], ["x0"], mode=mode)
        assert j32["y"]["x0"].dtype == np.float32
        np.testing.assert_allclose(j32["y"]["x0"], j64["y"]["x0"], **F32)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_float32_binary_broadcasting(name):
    shapes = ((3, 2), (1, 2))
    f64 = _binary_feeds(name, shapes, 2)
    f32 = {k: v.astype(np.float32) for k, v in f64.items()}
    f64 = {k: v.astype(np.float64) for k, v in f32.items()}
    p32, p64 = op_program(name, shapes, dtype="float32"), op_program(name, shapes)
    _, g32 = vjp_values(p32, f32, {"y": np.ones((3, 2), np.float32)}, ["x0", "x1"])
    _, g64 = vjp_values(p64, f64, {"y": np.ones((3, 2))}, ["x0", "x1"])
    for w in ("x0", "x1"):
        assert g32[w].dtype == np.float32 and g32[w].shape == f32[w].shape
        np.testing.assert_allclose(g32[w], g64[w], **F32)


def test_float32_large_jacobian_is_float32_and_chunked():
    p = program(
        {"x": ((40,), "float32")}, [("s", "sum", ["x"]), ("y", "multiply", ["x", "s"])], ["y"]
    )
    x = np.linspace(-1, 1, 40).astype(np.float32)
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, {"x": x}, ["y"], ["x"], mode=mode, chunk_size=7)
        expected = np.diag(np.full(40, x.sum())) + np.outer(x, np.ones(40))
        assert jac["y"]["x"].dtype == np.float32
        np.testing.assert_allclose(jac["y"]["x"], expected, **F32)


# ---- int64 and bool ----------------------------------------------------------------------------


def _masked():
    return program(
        {"x": (4,), "k": ((4,), "int64"), "flag": ((4,), "bool")},
        [
            ("two", "constant", [], {"value": np.array(2, np.int64)}),
            ("k2", "multiply", ["k", "two"]),
            ("big", "greater", ["k2", "two"]),
            ("both", "equal", ["big", "flag"]),
            ("y", "where", ["both", "x", "k2f"]),
            ("k2f", "zeros", [], {"shape": (4,), "dtype": "float64"}),
            ("s", "sin", ["y"]),
        ],
        ["s", "k2", "big", "both"],
    )


def _masked_feeds():
    return {
        "x": np.array([0.1, 0.2, 0.3, 0.4]),
        "k": np.array([0, 1, 2, 3]),
        "flag": np.array([True, False, True, True]),
    }


def test_int_and_bool_values_flow_through():
    p = _masked()
    assert p.types["k2"].dtype == "int64" and p.types["big"].dtype == "bool"
    out = evaluate(p, _masked_feeds())
    np.testing.assert_array_equal(out["k2"], [0, 2, 4, 6])
    assert out["k2"].dtype == np.int64
    np.testing.assert_array_equal(out["big"], [False, False, True, True])
    np.testing.assert_array_equal(out["both"], [False, True, True, True])
    np.testing.assert_allclose(out["s"], np.sin([0.0, 0.2, 0.3, 0.4]))
    # The gradient w.r.t. the float input goes through the bool mask.
    for mode in ("forward", "reverse"):
        _, jac = jacobian(p, _masked_feeds(), ["s"], ["x"], mode=mode)
        np.testing.assert_allclose(jac["s"]["x"], np.diag([0, *np.cos([0.2, 0.3, 0.4])]))


@pytest.mark.parametrize("name", ["k", "flag"])
def test_no_gradient_with_respect_to_int_or_bool_inputs(name):
    p = _masked()
    feeds = _masked_feeds()
    for call in (
        lambda: jacobian(p, feeds, ["s"], [name]),
        lambda: vjp_values(p, feeds, {"s": np.ones(4)}, ["x", name]),
        lambda: jvp_values(p, feeds, {name: feeds[name]}, ["s"]),
    ):
        with pytest.raises(GraphError) as err:
            call()
        assert (err.value.node, err.value.field) == (name, "wrt")
        assert "float" in err.value.reason


@pytest.mark.parametrize("name", ["k2", "big", "both"])
def test_no_derivative_of_int_or_bool_values(name):
    p = _masked()
    with pytest.raises(GraphError) as err:
        jacobian(p, _masked_feeds(), [name], ["x"])
    assert (err.value.node, err.value.field) == (name, "of")


def test_cross_entropy_labels_have_no_gradient_and_logits_do():
    p = _mlp("float64")
    feeds = _feeds("float64")
    with pytest.raises(GraphError) as err:
        vjp_values(p, feeds, {"loss": np.float64(1)}, ["labels"])
    assert (err.value.node, err.value.field) == ("labels", "wrt")
    with pytest.raises(GraphError) as err:
        jacobian(p, feeds, ["loss"], ["mask"])
    assert (err.value.node, err.value.field) == ("mask", "wrt")
    d = vjp(p, ("loss",), ("x", "w", "b"))
    out = compile_program(d.program).run({**feeds, d.seeds[0]: np.float64(1)})
    assert all(np.all(np.isfinite(g)) for g in out)


def test_int32_labels_and_int_feeds():
    p = program(
        {"z": ((2, 3), "float32"), "labels": ((2,), "int32")},
        [("ce", "cross_entropy", ["z", "labels"])],
        ["ce"],
    )
    z = np.array([[1.0, 2.0, 0.5], [0.1, 0.1, 3.0]], np.float32)
    labels = np.array([1, 2], np.int32)
    value = evaluate(p, {"z": z, "labels": labels})["ce"]
    assert value.dtype == np.float32
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(value, -log_p[[0, 1], [1, 2]].mean(), **F32)
    _, grads = vjp_values(p, {"z": z, "labels": labels}, {"ce": np.float32(1)}, ["z"])
    expected = (np.exp(log_p) - np.eye(3)[[1, 2]]) / 2
    assert grads["z"].dtype == np.float32
    np.testing.assert_allclose(grads["z"], expected, **F32)
