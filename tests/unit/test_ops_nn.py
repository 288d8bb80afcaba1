"""softmax, log_softmax, cross_entropy and mse: forward, derivatives, conventions, validation."""

import numpy as np
import pytest
from gradcheck import check_derivatives, check_second_derivatives, op_program, program
from gradserve.autodiff import GraphError, evaluate, jacobian, jvp_values, vjp_values
from gradserve.autodiff.transforms import vjp

NEG_INF = -np.inf


def ref_log_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def ref_softmax(x, axis=-1):
    return np.exp(ref_log_softmax(x, axis))


def ref_cross_entropy(logits, labels, reduction="mean"):
    picked = np.take_along_axis(ref_log_softmax(logits), labels[..., None], axis=-1)[..., 0]
    loss = -picked
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](loss)


def ce_program(logits_shape, labels_dtype="int64", reduction="mean", dtype="float64"):
    return program(
        {"z": (logits_shape, dtype), "t": (logits_shape[:-1], labels_dtype)},
        [("y", "cross_entropy", ["z", "t"], {"reduction": reduction})],
        ["y"],
    )


def labels_for(shape, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


def grad_of_sum(p, feeds, wrt, dtype="float64"):
    _, grads = vjp_values(p, feeds, {"y": np.ones(p.types["y"].shape, dtype)}, [wrt])
    return grads[wrt]


SOFTMAX_CASES = [((4,), {}), ((3, 4), {}), ((3, 4), {"axis": 0}), ((2, 3, 4), {"axis": -2})]


# ---- softmax, log_softmax ----------------------------------------------------------------------


@pytest.mark.parametrize("shape,attrs", SOFTMAX_CASES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_forward_and_derivatives(name, shape, attrs):
    x = np.random.default_rng(0).standard_normal(shape) * 3
    p = op_program(name, [shape], attrs)
    ref = ref_softmax if name == "softmax" else ref_log_softmax
    np.testing.assert_allclose(evaluate(p, {"x0": x})["y"], ref(x, attrs.get("axis", -1)))
    check_derivatives(p, {"x0": x})


@pytest.mark.parametrize("shape,attrs", SOFTMAX_CASES[1:])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_second_derivatives(name, shape, attrs):
    x = np.random.default_rng(1).standard_normal(shape)
    check_second_derivatives(op_program(name, [shape], attrs), {"x0": x})


@pytest.mark.filterwarnings("error")
def test_softmax_is_stable_for_large_logits():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]])
    for name, ref in (("softmax", ref_softmax), ("log_softmax", ref_log_softmax)):
        y = evaluate(op_program(name, [(2, 3)]), {"x0": x})["y"]
        np.testing.assert_allclose(y, ref(x), rtol=1e-12)


@pytest.mark.filterwarnings("error")
def test_all_neg_inf_rows_give_finite_gradients():
    x = np.array([[NEG_INF, NEG_INF, NEG_INF], [0.0, NEG_INF, 1.0]])
    p = op_program("softmax", [(2, 3)])
    y = evaluate(p, {"x0": x})["y"]
    np.testing.assert_array_equal(y[0], [0, 0, 0])  # convention: softmax of all -inf is 0
    np.testing.assert_allclose(y[1], [1 / (1 + np.e), 0, np.e / (1 + np.e)])
    u = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    _, grads = vjp_values(p, {"x0": x}, {"y": u}, ["x0"])
    np.testing.assert_array_equal(grads["x0"][0], [0, 0, 0])
    assert np.all(np.isfinite(grads["x0"]))

    q = op_program("log_softmax", [(2, 3)])
    y = evaluate(q, {"x0": x})["y"]
    np.testing.assert_array_equal(y[0], [NEG_INF] * 3)  # log(0): -inf, not NaN
    assert y[1, 1] == NEG_INF and np.all(np.isfinite(y[1, [0, 2]]))
    _, grads = vjp_values(q, {"x0": x}, {"y": u}, ["x0"])
    # d log_softmax = I - softmax 1^T, with softmax 0 on the all -inf row: the identity.
    np.testing.assert_array_equal(grads["x0"][0], u[0])
    assert np.all(np.isfinite(grads["x0"]))
    for prog in (p, q):
        for mode in ("forward", "reverse"):
            _, jac = jacobian(prog, {"x0": x}, ["y"], ["x0"], mode=mode)
            assert np.all(np.isfinite(jac["y"]["x0"]))


# ---- cross_entropy -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forward_and_derivatives(shape, reduction):
    rng = np.random.default_rng(2)
    feeds = {"z": rng.standard_normal(shape) * 2, "t": labels_for(shape[:-1], shape[-1])}
    p = ce_program(shape, reduction=reduction)
    np.testing.assert_allclose(
        evaluate(p, feeds)["y"], ref_cross_entropy(**_ref(feeds), reduction=reduction)
    )
    check_derivatives(p, feeds)


def _ref(feeds):
    return {"logits": feeds["z"], "labels": feeds["t"]}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_second_derivatives(reduction):
    rng = np.random.default_rng(3)
    feeds = {"z": rng.standard_normal((3, 4)), "t": np.array([0, 3, 1], dtype=np.int32)}
    p = ce_program((3, 4), "int32", reduction)
    check_second_derivatives(p, feeds, wrt="z")


def test_cross_entropy_gradient_is_softmax_minus_one_hot_over_n():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t = np.array([2, 0])
    grad = grad_of_sum(ce_program((2, 3)), {"z": z, "t": t}, "z")
    np.testing.assert_allclose(grad, (ref_softmax(z) - np.eye(3)[t]) / 2)


@pytest.mark.filterwarnings("error")
def test_cross_entropy_out_of_range_label_is_nan():
    z = np.zeros((3, 4))
    t = np.array([1, 4, -1])
    p = ce_program((3, 4), reduction="none")
    loss = evaluate(p, {"z": z, "t": t})["y"]
    np.testing.assert_allclose(loss[0], np.log(4))
    assert np.isnan(loss[1]) and np.isnan(loss[2])
    grad = grad_of_sum(p, {"z": z, "t": t}, "z")
    np.testing.assert_allclose(grad[0], [0.25, -0.75, 0.25, 0.25])
    assert np.all(np.isnan(grad[1:]))
    assert np.isnan(evaluate(ce_program((3, 4)), {"z": z, "t": t})["y"])


@pytest.mark.filterwarnings("error")
def test_cross_entropy_of_no_examples():
    feeds = {"z": np.zeros((0, 3)), "t": np.zeros(0, np.int64)}
    assert np.isnan(evaluate(ce_program((0, 3)), feeds)["y"])
    assert evaluate(ce_program((0, 3), reduction="sum"), feeds)["y"] == 0
    assert grad_of_sum(ce_program((0, 3)), feeds, "z").shape == (0, 3)


def test_cross_entropy_labels_get_no_gradient():
    p = ce_program((2, 3))
    with pytest.raises(GraphError) as info:
        vjp_values(p, {"z": np.zeros((2, 3)), "t": np.array([0, 1])}, {"y": np.ones(())}, ["t"])
    assert info.value.field == "wrt"


def ceg_program(logits_shape, labels_dtype="int64", dtype="float64"):
    return program(
        {"z": (logits_shape, dtype), "t": (logits_shape[:-1], labels_dtype)},
        [("y", "cross_entropy_grad", ["z", "t"])],
        ["y"],
    )


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 5)])
def test_cross_entropy_grad_is_softmax_minus_one_hot_with_derivatives(shape):
    rng = np.random.default_rng(4)
    feeds = {"z": rng.standard_normal(shape) * 2, "t": labels_for(shape[:-1], shape[-1], 1)}
    p = ceg_program(shape)
    expected = ref_softmax(feeds["z"]) - np.eye(shape[-1])[feeds["t"]]
    np.testing.assert_allclose(evaluate(p, feeds)["y"], expected, rtol=1e-13, atol=1e-15)
    check_derivatives(p, feeds)
    check_second_derivatives(
        ceg_program(shape, "int32"), {**feeds, "t": feeds["t"].astype(np.int32)}, wrt="z"
    )


@pytest.mark.filterwarnings("error")
def test_cross_entropy_grad_conventions_float32_nan_rows_and_all_neg_inf():
    z = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0], [NEG_INF] * 4], np.float32)
    t = np.array([1, 4, -1, 2])
    y = evaluate(ceg_program((4, 4), dtype="float32"), {"z": z, "t": t})["y"]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0], [0.25, -0.75, 0.25, 0.25])
    assert np.all(np.isnan(y[1:3]))
    np.testing.assert_array_equal(y[3], [0, 0, -1, 0])  # softmax of an all -inf slice is 0


def test_cross_entropy_vjp_emits_no_one_hot_and_no_broadcast():
    d = vjp(ce_program((3, 4)), ("y",), ("z",))
    ops = {n.op for n in d.program.nodes}
    assert "cross_entropy_grad" in ops
    assert not ops & {"one_hot", "broadcast_to", "softmax"}


# ---- mse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [((5,), (5,)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3))])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_forward_and_derivatives(shapes, reduction):
    rng = np.random.default_rng(4)
    feeds = {f"x{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    p = op_program("mse", shapes, {"reduction": reduction})
    sq = np.square(feeds["x0"] - feeds["x1"])
    want = {"mean": np.mean(sq), "sum": np.sum(sq), "none": sq}[reduction]
    np.testing.assert_allclose(evaluate(p, feeds)["y"], want)
    check_derivatives(p, feeds)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_second_derivatives(reduction):
    rng = np.random.default_rng(5)
    feeds = {"x0": rng.standard_normal((3, 2)), "x1": rng.standard_normal((2,))}
    p = op_program("mse", [(3, 2), (2,)], {"reduction": reduction})
    check_second_derivatives(p, feeds, wrt="x0")
    check_second_derivatives(p, feeds, wrt="x1")


# ---- dtypes and validation ---------------------------------------------------------------------


def test_float32_stays_float32():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    progs = [
        (op_program("softmax", [(3, 4)], dtype="float32"), {"x0": x}, "x0"),
        (op_program("log_softmax", [(3, 4)], dtype="float32"), {"x0": x}, "x0"),
        (op_program("mse", [(3, 4), (4,)], dtype="float32"), {"x0": x, "x1": x[0]}, "x1"),
        (ce_program((3, 4), dtype="float32"), {"z": x, "t": np.array([0, 1, 3])}, "z"),
    ]
    for p, feeds, wrt in progs:
        y = evaluate(p, feeds)["y"]
        assert y.dtype == np.float32, p
        assert grad_of_sum(p, feeds, wrt, "float32").dtype == np.float32
        tangent = np.ones(feeds[wrt].shape, np.float32)
        _, tangents = jvp_values(p, feeds, {wrt: tangent}, ["y"])
        assert tangents["y"].dtype == np.float32
    np.testing.assert_allclose(evaluate(progs[0][0], {"x0": x})["y"], ref_softmax(x), rtol=1e-5)


@pytest.mark.parametrize(
    "build,field",
    [
        (lambda: op_program("softmax", [(3, 4)], {"axis": 2}), "attrs.axis"),
        (lambda: op_program("log_softmax", [(3, 4)], {"axis": -3}), "attrs.axis"),
        (lambda: op_program("softmax", [(3,)], {"axis": [0]}), "attrs.axis"),
        (lambda: op_program("softmax", [()]), "inputs[0]"),
        (lambda: op_program("log_softmax", [(3,)], dtype="int64"), "inputs[0]"),
        (lambda: ce_program((3, 4), reduction="avg"), "attrs.reduction"),
        (lambda: ce_program((3, 4), labels_dtype="float64"), "inputs[1]"),
        (lambda: ce_program((3, 4), dtype="int64"), "inputs[0]"),
        (lambda: ce_program((3, 0)), "inputs[0]"),
        (
            lambda: program(
                {"z": (3, 4), "t": ((4,), "int64")}, [("y", "cross_entropy", ["z", "t"])], ["y"]
            ),
            "inputs[1]",
        ),
        (
            lambda: program(
                {"z": (), "t": ((), "int64")}, [("y", "cross_entropy", ["z", "t"])], ["y"]
            ),
            "inputs[0]",
        ),
        (lambda: op_program("mse", [(3,), (3,)], {"reduction": "mean "}), "attrs.reduction"),
        (lambda: op_program("mse", [(3,), (4,)]), "inputs"),
        (lambda: op_program("mse", [(3,), (3,)], dtype="int64"), "inputs[0]"),
        (
            lambda: program({"a": (3,), "b": ((3,), "float32")}, [("y", "mse", ["a", "b"])], ["y"]),
            "inputs[1]",
        ),
    ],
)
def test_validation_errors_name_their_field(build, field):
    with pytest.raises(GraphError) as info:
        build()
    assert info.value.field == field
    assert info.value.node == "y"


@pytest.mark.parametrize("shape", [(5,), (7, 3), (2, 3, 10), (0, 4), (4, 32), (3, 33), (3, 0)])
@pytest.mark.parametrize("axis", [-1, 0])
def test_max_helper_is_np_max_with_keepdims(shape, axis):
    from gradserve.autodiff.ops.nn import _max

    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    if x.size > 4:
        x.flat[[1, 3, 4]] = [np.nan, NEG_INF, np.inf]
    got = _max(x, axis)
    expected = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
