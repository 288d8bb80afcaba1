"""The window attributes beyond conv's own rules: one value for every spatial axis (the SDK's
`strides=2`), avg_pool with dilations, and max_pool_indices (ONNX MaxPool's Indices). Forward
against direct loops written from the ONNX / torch definitions (test_ops_conv's references),
derivatives against central differences in both Jacobian modes."""

import itertools
import math

import gradserve_client as gs
import numpy as np
import pytest
from gradcheck import check_derivatives, check_graph_error, op_program
from gradserve.autodiff import GraphError, evaluate, vjp_values
from test_ops_conv import ref_conv, ref_pool, resolved

RNG = np.random.default_rng(3)

# ---- one value for every spatial axis ----------------------------------------------------------


@pytest.mark.parametrize(
    "op,shapes,short,full",
    [
        (
            "conv",
            [(1, 2, 7, 6), (3, 2, 3, 2)],
            {"strides": [2], "pads": [1], "dilations": [2]},
            {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2]},
        ),
        (
            "max_pool",
            [(1, 2, 6, 5)],
            {"kernel_shape": [2], "strides": [2], "pads": [1]},
            {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        ),
        (
            "avg_pool",
            [(2, 1, 3, 4, 5)],
            {"kernel_shape": [2], "strides": [1], "count_include_pad": 1, "pads": [1]},
            {
                "kernel_shape": [2, 2, 2],
                "strides": [1, 1, 1],
                "count_include_pad": 1,
                "pads": [1] * 6,
            },
        ),
    ],
    ids=["conv", "max_pool", "avg_pool"],
)
def test_one_value_is_for_every_spatial_axis(op, shapes, short, full):
    feeds = {f"x{i}": RNG.permutation(math.prod(s)).reshape(s) / 5.0 for i, s in enumerate(shapes)}
    p, q = op_program(op, shapes, short), op_program(op, shapes, full)
    assert p.types["y"] == q.types["y"]
    np.testing.assert_array_equal(evaluate(p, feeds)["y"], evaluate(q, feeds)["y"])
    if op == "conv":
        np.testing.assert_allclose(evaluate(p, feeds)["y"], ref_conv(*feeds.values(), **full))
    else:
        kind = op.split("_")[0]
        np.testing.assert_allclose(
            evaluate(p, feeds)["y"], ref_pool(feeds["x0"], kind=kind, **full)
        )
    check_derivatives(p, feeds)


def test_sdk_ints_are_broadcast_as_torch_does():
    g = gs.Graph()
    x, w = g.input("x", (2, 3, 9, 8)), g.input("w", (4, 3, 3, 3))
    y = gs.conv(x, w, strides=2, pads=1, dilations=2)
    assert y.shape == (2, 4, 4, 3)  # torch.nn.functional.conv2d(stride=2, padding=1, dilation=2)
    z = gs.max_pool(y, kernel_shape=2, strides=1)
    a = gs.avg_pool(y, kernel_shape=2, strides=2, pads=1)
    assert z.shape == (2, 4, 3, 2) and a.shape == (2, 4, 3, 2)
    g.output("y", gs.sum(z) + gs.sum(a))
    feeds = {"x": RNG.standard_normal((2, 3, 9, 8)), "w": RNG.standard_normal((4, 3, 3, 3))}
    full = {"strides": [2, 2], "pads": [1] * 4, "dilations": [2, 2]}
    conv = ref_conv(feeds["x"], feeds["w"], **full)
    want = (
        ref_pool(conv, [2, 2], "max").sum()
        + ref_pool(conv, [2, 2], "avg", strides=[2, 2], pads=[1] * 4).sum()
    )
    np.testing.assert_allclose(gs.LocalClient().evaluate(g, feeds)["y"], want)


@pytest.mark.parametrize(
    "op,shapes,attrs,field",
    [
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3)], {"strides": [1, 1, 1]}, "attrs.strides"),
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3)], {"pads": [1, 1]}, "attrs.pads"),
        ("max_pool", [(1, 3, 5, 5)], {"kernel_shape": [2, 2, 2]}, "attrs.kernel_shape"),
        (
            "avg_pool",
            [(1, 3, 5, 5)],
            {"kernel_shape": [2], "dilations": [1, 2, 1]},
            "attrs.dilations",
        ),
    ],
)
def test_other_lengths_are_refused(op, shapes, attrs, field):
    check_graph_error(op, shapes, attrs, field)


# ---- avg_pool with dilations -------------------------------------------------------------------

DILATED = [
    ((1, 2, 9), {"kernel_shape": [3], "dilations": [2]}),
    ((1, 1, 7, 8), {"kernel_shape": [2, 3], "dilations": [3, 2], "pads": [1, 2, 2, 0]}),
    (
        (1, 1, 7, 6),
        {"kernel_shape": [2, 2], "dilations": [2, 1], "strides": [2, 2], "ceil_mode": 1},
    ),
    ((1, 1, 4, 5, 5), {"kernel_shape": [2, 2, 2], "dilations": [2, 2, 2], "pads": [1] * 6}),
]


@pytest.mark.parametrize("x_shape,attrs", DILATED, ids=[f"{list(s)}-{a}" for s, a in DILATED])
@pytest.mark.parametrize("include_pad", [0, 1])
def test_avg_pool_with_dilations(x_shape, attrs, include_pad):
    attrs = {**attrs, "count_include_pad": include_pad}
    x = RNG.standard_normal(x_shape)
    p = op_program("avg_pool", [x_shape], attrs)
    np.testing.assert_allclose(evaluate(p, {"x0": x})["y"], ref_pool(x, kind="avg", **attrs))
    check_derivatives(p, {"x0": x})


# ---- max_pool_indices --------------------------------------------------------------------------


def ref_indices(x, kernel_shape, ceil_mode=0, storage_order=0, **attrs):
    """ONNX MaxPool's Indices, element by element: the first strict maximum of each window
    (row-major over the window), as an index into x flattened."""
    n = x.ndim - 2
    spatial = x.shape[2:]
    strides, dilations, pads = resolved(x.shape, kernel_shape, attrs)
    top = ref_pool(x, kernel_shape, "max", ceil_mode=ceil_mode, **attrs)
    steps = [math.prod(spatial[:i] if storage_order else spatial[i + 1 :]) for i in range(n)]
    out = np.zeros(top.shape, np.int64)
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*map(range, top.shape[2:])):
            best, where = None, None
            for k in itertools.product(*map(range, kernel_shape)):
                at = [
                    p * s + kk * d - pads[i]
                    for i, (p, s, kk, d) in enumerate(zip(pos, strides, k, dilations, strict=True))
                ]
                if all(0 <= a < spatial[i] for i, a in enumerate(at)):
                    value = x[(b, c, *at)]
                    if best is None or value > best:
                        best, where = value, sum(a * st for a, st in zip(at, steps, strict=True))
            out[(b, c, *pos)] = (b * x.shape[1] + c) * math.prod(spatial) + where
    return out


INDICES = [
    ((2, 3, 6), {"kernel_shape": [2], "strides": [2]}),
    ((1, 2, 5, 5), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 1, 6, 5), {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 1, 7, 7), {"kernel_shape": [2, 2], "dilations": [2, 3], "pads": [0, 1, 2, 0]}),
    ((1, 2, 4, 5), {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 1, 3, 4, 4), {"kernel_shape": [2, 2, 2], "strides": [1, 2, 2]}),
]


@pytest.mark.parametrize("x_shape,attrs", INDICES, ids=[f"{list(s)}-{a}" for s, a in INDICES])
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(x_shape, attrs, storage_order):
    # Few distinct values: many ties, where the first maximum counts.
    x = RNG.integers(0, 3, x_shape).astype(np.float64)
    p = op_program("max_pool_indices", [x_shape], {**attrs, "storage_order": storage_order})
    got = evaluate(p, {"x0": x})["y"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref_indices(x, storage_order=storage_order, **attrs))
    # The indices point at the maxima: x.flat[indices] is max_pool (storage order 0).
    if not storage_order:
        top = evaluate(op_program("max_pool", [x_shape], attrs), {"x0": x})["y"]
        np.testing.assert_array_equal(x.ravel()[got], top)


def test_max_pool_indices_have_no_gradient():
    p = op_program("max_pool_indices", [(1, 1, 4, 4)], {"kernel_shape": [2, 2]})
    assert p.types["y"].dtype == "int64"
    with pytest.raises(GraphError, match="only floats have derivatives"):
        vjp_values(
            p, {"x0": RNG.standard_normal((1, 1, 4, 4))}, {"y": np.ones((1, 1, 3, 3))}, ["x0"]
        )
