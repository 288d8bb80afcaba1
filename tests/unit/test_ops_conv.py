"""conv, max_pool, avg_pool and their internal window ops: forward against direct loops (written
from the ONNX / torch definitions, independent of the im2col code), JVP and VJP against central
differences in both Jacobian modes, second derivatives, ties, float32, validation errors."""

import itertools
import math

import numpy as np
import pytest
from gradcheck import (
    check_derivatives,
    check_graph_error,
    check_second_derivatives,
    op_program,
    program,
)
from gradserve.autodiff import evaluate, jvp_values, vjp_values
from gradserve.autodiff.transforms import vjp

RNG = np.random.default_rng(0)


def same_pads(spatial, kernel, strides, dilations, upper):
    """ONNX auto_pad SAME_*: output ceil(S / stride), the odd pad at the end (upper)."""
    begin, end = [], []
    for s, k, st, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(s / st) - 1) * st + d * (k - 1) + 1 - s)
        small, big = total // 2, total - total // 2
        begin.append(small if upper else big)
        end.append(big if upper else small)
    return begin + end


def resolved(x_shape, kernel, attrs):
    n = len(kernel)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)
    pads = attrs.get("pads", [0] * (2 * n))
    if attrs.get("auto_pad", "NOTSET").startswith("SAME"):
        pads = same_pads(x_shape[2:], kernel, strides, dilations, attrs["auto_pad"] == "SAME_UPPER")
    return strides, dilations, pads


def ref_conv(x, w, b=None, groups=1, **attrs):
    n = x.ndim - 2
    strides, dilations, pads = resolved(x.shape, w.shape[2:], attrs)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[n + i]) for i in range(n)])
    out_sp = [
        (xp.shape[2 + i] - dilations[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1
        for i in range(n)
    ]
    cin = x.shape[1] // groups
    cout = w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], *out_sp))
    for o, pos in itertools.product(range(w.shape[0]), itertools.product(*map(range, out_sp))):
        chans = slice(o // cout * cin, (o // cout + 1) * cin)
        for k in itertools.product(*map(range, w.shape[2:])):
            taps = zip(pos, strides, k, dilations, strict=True)
            at = tuple(p * s + kk * d for p, s, kk, d in taps)
            out[(slice(None), o, *pos)] += xp[(slice(None), chans, *at)] @ w[(o, slice(None), *k)]
    if b is not None:
        out += b.reshape((-1,) + (1,) * n)
    return out


def ref_pool(x, kernel_shape, kind, ceil_mode=0, count_include_pad=0, **attrs):
    """torch's pooling, element by element: windows over the (-inf / zero) padded input."""
    n = x.ndim - 2
    strides, dilations, pads = resolved(x.shape, kernel_shape, attrs)
    out_sp = []
    for i in range(n):
        room = x.shape[2 + i] + pads[i] + pads[n + i] - dilations[i] * (kernel_shape[i] - 1) - 1
        size = (math.ceil(room / strides[i]) if ceil_mode else room // strides[i]) + 1
        if ceil_mode and (size - 1) * strides[i] >= x.shape[2 + i] + pads[i]:
            size -= 1
        out_sp.append(size)
    out = np.zeros(x.shape[:2] + tuple(out_sp))
    for pos in itertools.product(*map(range, out_sp)):
        values, counted = [], 0
        for k in itertools.product(*map(range, kernel_shape)):
            at = [
                p * s + kk * d - pads[i]
                for i, (p, s, kk, d) in enumerate(zip(pos, strides, k, dilations, strict=True))
            ]
            inside = all(0 <= a < x.shape[2 + i] for i, a in enumerate(at))
            in_padded = all(-pads[i] <= a < x.shape[2 + i] + pads[n + i] for i, a in enumerate(at))
            counted += inside or (count_include_pad and in_padded)
            if inside:
                values.append(x[(slice(None), slice(None), *at)])
        if kind == "max":
            out[(..., *pos)] = np.max(values, axis=0)
        else:
            out[(..., *pos)] = np.sum(values, axis=0) / counted
    return out


CONV = [
    ((2, 3, 5), (4, 3, 2), {}),
    ((1, 2, 7), (2, 2, 3), {"strides": [2], "pads": [2, 1], "dilations": [2]}),
    ((1, 2, 5, 6), (3, 2, 3, 2), {"strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ((2, 4, 5, 5), (4, 2, 3, 3), {"groups": 2, "dilations": [2, 1]}),
    ((1, 3, 4, 4), (3, 1, 2, 2), {"groups": 3, "strides": [2, 2]}),  # depthwise
    ((1, 2, 5, 4), (2, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 4, 5), (2, 2, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"auto_pad": "VALID"}),
    ((1, 1, 3, 3, 3), (2, 1, 2, 2, 2), {"pads": [1, 0, 0, 0, 1, 0]}),  # 3-D
    # strides, dilations, groups and pads together, in 1-D, 2-D and 3-D; with strides that
    # leave the last rows of the input in no window (their gradient is zero)
    ((2, 4, 9), (6, 2, 3), {"groups": 2, "strides": [2], "dilations": [2], "pads": [1, 2]}),
    ((2, 2, 7, 6), (3, 2, 3, 2), {"strides": [3, 2], "pads": [2, 0, 0, 1]}),
    ((1, 6, 6, 7), (4, 3, 2, 3), {"groups": 2, "strides": [2, 3], "dilations": [2, 1]}),
    (
        (1, 4, 4, 5, 4),
        (4, 2, 2, 3, 2),
        {"groups": 2, "strides": [1, 2, 1], "dilations": [2, 1, 1], "pads": [0, 1, 1, 1, 0, 0]},
    ),
]


def _xw(feeds):
    return {"x": feeds["x0"], "w": feeds["x1"]}


def case_id(case):
    return f"{list(case[0])}-{list(case[1])}-{case[2]}"


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV, ids=map(case_id, CONV))
def test_conv_forward_and_derivatives(x_shape, w_shape, attrs):
    feeds = {
        "x0": RNG.standard_normal(x_shape),
        "x1": RNG.standard_normal(w_shape),
        "x2": RNG.standard_normal(w_shape[0]),
    }
    with_bias = op_program("conv", [x_shape, w_shape, (w_shape[0],)], attrs)
    without = op_program("conv", [x_shape, w_shape], attrs)
    ref = ref_conv(*feeds.values(), **attrs)
    np.testing.assert_allclose(evaluate(with_bias, feeds)["y"], ref, atol=1e-12)
    plain = {"x0": feeds["x0"], "x1": feeds["x1"]}
    np.testing.assert_allclose(evaluate(without, plain)["y"], ref_conv(**_xw(plain), **attrs))
    check_derivatives(with_bias, feeds)


@pytest.mark.parametrize("wrt", ["x0", "x1"])
def test_conv_second_derivatives(wrt):
    # conv's derivative programs (patches, col2im, einsum) are differentiable in turn: the
    # Hessian of sum(tanh(conv)) sees the curvature of tanh through both operands.
    p = program(
        {"x0": (1, 2, 5), "x1": (2, 1, 2)},
        [
            ("c", "conv", ["x0", "x1"], {"pads": [1, 0], "strides": [2], "groups": 2}),
            ("y", "tanh", ["c"]),
        ],
        ["y"],
    )
    feeds = {"x0": RNG.standard_normal((1, 2, 5)), "x1": RNG.standard_normal((2, 1, 2))}
    check_second_derivatives(p, feeds, wrt=wrt)


# conv's two derivative ops on their own: (g, w) and (x, g) for a geometry with strides,
# dilations, pads and groups; their rules (each other and conv, with the batch axes folded
# into N or a channel axis) in both Jacobian modes, and their second derivatives.
GEOMETRY = {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [1, 0, 0, 2], "dilations": [1, 2]}
X_SHAPE, W_SHAPE, G_SHAPE = (2, 4, 5, 4), (6, 2, 2, 3), (2, 6, 3, 2)  # groups = 2


def test_conv_input_grad_is_the_transpose_of_conv():
    x, w, g = (RNG.standard_normal(s) for s in (X_SHAPE, W_SHAPE, G_SHAPE))
    attrs = {k: v for k, v in GEOMETRY.items() if k != "kernel_shape"} | {"groups": 2}
    conv = op_program("conv", [X_SHAPE, W_SHAPE], attrs)
    _, grads = vjp_values(conv, {"x0": x, "x1": w}, {"y": g}, ["x0", "x1"])
    p = op_program(
        "conv_input_grad", [G_SHAPE, W_SHAPE], {**GEOMETRY, "shape": [5, 4], "groups": 2}
    )
    np.testing.assert_allclose(evaluate(p, {"x0": g, "x1": w})["y"], grads["x0"], atol=1e-12)
    p = op_program("conv_kernel_grad", [X_SHAPE, G_SHAPE], {**GEOMETRY, "groups": 2})
    np.testing.assert_allclose(evaluate(p, {"x0": x, "x1": g})["y"], grads["x1"], atol=1e-12)
    # <conv(x, w), g> = <x, conv_input_grad(g, w)> = <w, conv_kernel_grad(x, g)>, with ref_conv
    # (loops) on the left: the three ops agree with the definition, not only with each other.
    inner = np.vdot(ref_conv(x, w, **attrs), g)
    np.testing.assert_allclose(np.vdot(x, grads["x0"]), inner)
    np.testing.assert_allclose(np.vdot(w, grads["x1"]), inner)


@pytest.mark.parametrize(
    "name,shapes,attrs",
    [
        ("conv_input_grad", [G_SHAPE, W_SHAPE], {**GEOMETRY, "shape": [5, 4], "groups": 2}),
        ("conv_kernel_grad", [X_SHAPE, G_SHAPE], {**GEOMETRY, "groups": 2}),
    ],
)
def test_conv_derivative_ops_derivatives(name, shapes, attrs):
    feeds = {f"x{i}": RNG.standard_normal(s) for i, s in enumerate(shapes)}
    check_derivatives(op_program(name, shapes, attrs), feeds)


@pytest.mark.parametrize("wrt", ["x0", "x1"])
def test_conv_second_derivatives_2d_with_groups_strides_dilations(wrt):
    p = program(
        {"x0": (1, 4, 4, 4), "x1": (4, 2, 2, 2)},
        [
            (
                "c",
                "conv",
                ["x0", "x1"],
                {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 0, 1], "groups": 2},
            ),
            ("y", "tanh", ["c"]),
        ],
        ["y"],
    )
    feeds = {"x0": RNG.standard_normal((1, 4, 4, 4)), "x1": RNG.standard_normal((4, 2, 2, 2))}
    check_second_derivatives(p, feeds, wrt=wrt)


def test_conv_float32_stays_float32():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    p = op_program("conv", [x.shape, w.shape], {"pads": [1, 1, 1, 1]}, dtype="float32")
    y = evaluate(p, {"x0": x, "x1": w})["y"]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref_conv(x, w, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-4)
    _, grads = vjp_values(p, {"x0": x, "x1": w}, {"y": np.ones_like(y)}, ["x0", "x1"])
    assert grads["x0"].dtype == grads["x1"].dtype == np.float32


def test_conv_vjp_is_one_op_per_operand_even_batched():
    d = vjp(
        op_program("conv", [(2, 3, 6, 6), (4, 3, 3, 3)], {"pads": [1, 1, 1, 1]}),
        ("y",),
        ("x0", "x1"),
        5,
    )
    ops = [n.op for n in d.program.nodes]
    assert ops.count("conv_input_grad") == 1 and ops.count("conv_kernel_grad") == 1
    assert ops.count("conv") == 1  # the primal value; no loop, no per-row nodes


# ---- pooling -----------------------------------------------------------------------------------

POOL = [
    ((2, 2, 6), {"kernel_shape": [2]}),
    ((1, 2, 5, 5), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 5, 5), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 1, 6, 5), {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    (
        (1, 1, 5, 5),
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0], "ceil_mode": 1},
    ),
    ((1, 2, 5, 4), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    ((1, 2, 4, 4), {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 1, 3, 4, 4), {"kernel_shape": [2, 2, 2], "strides": [1, 2, 2]}),
]


@pytest.mark.parametrize("x_shape,attrs", POOL, ids=[f"{list(s)}-{a}" for s, a in POOL])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_forward_and_derivatives(kind, x_shape, attrs):
    variants = [attrs]
    if kind == "avg":
        variants.append({**attrs, "count_include_pad": 1})
    elif "pads" in attrs or "auto_pad" not in attrs:
        variants.append({**attrs, "dilations": [2] * (len(x_shape) - 2), "pads": attrs.get("pads")})
    for a in variants:
        a = {k: v for k, v in a.items() if v is not None}
        # Distinct values: no ties, so central differences see a smooth function.
        x = RNG.permutation(math.prod(x_shape)).reshape(x_shape) / 7.0
        p = op_program(f"{kind}_pool", [x_shape], a)
        np.testing.assert_allclose(evaluate(p, {"x0": x})["y"], ref_pool(x, kind=kind, **a))
        check_derivatives(p, {"x0": x})


def test_max_pool_ties_share_the_cotangent_evenly():
    x = np.array([[[[1.0, 1.0, 0.0], [1.0, 0.0, 2.0], [2.0, 2.0, 2.0]]]])
    p = op_program("max_pool", [x.shape], {"kernel_shape": [2, 2]})
    np.testing.assert_array_equal(evaluate(p, {"x0": x})["y"], [[[[1, 2], [2, 2]]]])
    _, grads = vjp_values(p, {"x0": x}, {"y": np.array([[[[3.0, 1.0], [4.0, 8.0]]]])}, ["x0"])
    # window (0,0): three 1s share 3; (0,1): the 2 alone; (1,0): two 2s share 4; (1,1): three
    # 2s share 8, the middle 2 of row 1 belonging to windows (0,1) and (1,1).
    expected = [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0 + 8 / 3], [2.0, 2.0 + 8 / 3, 8 / 3]]
    np.testing.assert_allclose(grads["x0"][0, 0], expected)


def test_pool_second_derivatives():
    x = RNG.permutation(2 * 25).reshape(1, 2, 5, 5) / 5.0
    for kind in ("max", "avg"):
        p = program(
            {"x0": (1, 2, 5, 5)},
            [
                ("h", f"{kind}_pool", ["x0"], {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]}),
                ("y", "sin", ["h"]),
            ],
            ["y"],
        )
        check_second_derivatives(p, {"x0": x})


def test_window_ops_batched_twice():
    # The internal ops' own rules serve the batched passes (Jacobians of derivative programs).
    x = RNG.standard_normal((1, 2, 4))
    attrs = {"kernel_shape": [2], "strides": [1], "pads": [1, 0], "dilations": [1]}
    check_derivatives(
        op_program("conv_patches", [(1, 2, 4)], {**attrs, "pad_value": -1.0}), {"x0": x}
    )
    g = RNG.standard_normal((1, 2, 4, 2))
    check_derivatives(
        op_program("conv_patches_grad", [(1, 2, 4, 2)], {**attrs, "shape": [4]}), {"x0": g}
    )


def test_max_pool_ties_share_the_cotangent_evenly_in_tiles():
    # strides = kernel: the windows tile x (the one-step path), the last row in no window
    x = np.array([[[[1.0, 1.0, 0.0, 3.0], [1.0, 0.0, 3.0, 3.0], [5.0, 4.0, 2.0, 2.0]]]])
    p = op_program("max_pool", [x.shape], {"kernel_shape": [2, 2], "strides": [2, 2]})
    np.testing.assert_array_equal(evaluate(p, {"x0": x})["y"], [[[[1, 3]]]])
    _, grads = vjp_values(p, {"x0": x}, {"y": np.array([[[[3.0, 6.0]]]])}, ["x0"])
    expected = [[1.0, 1.0, 0.0, 2.0], [1.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(grads["x0"][0, 0], expected)
    _, tangents = jvp_values(p, {"x0": x}, {"x0": np.arange(12.0).reshape(x.shape)}, ["y"])
    np.testing.assert_allclose(tangents["y"], [[[[(0 + 1 + 4) / 3, (3 + 6 + 7) / 3]]]])


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0], "strides": [2, 1]},
        {"kernel_shape": [2, 2], "strides": [2, 2]},  # tiles
        {"kernel_shape": [2, 1], "strides": [2, 1]},  # tiles
    ],
)
def test_max_pool_derivative_ops_are_each_others_transpose(attrs):
    x = RNG.permutation(2 * 5 * 4).reshape(1, 2, 5, 4) / 3.0
    top = evaluate(op_program("max_pool", [x.shape], attrs), {"x0": x})["y"]
    for name, v_shape in (("max_pool_pick", x.shape), ("max_pool_grad", top.shape)):
        p = program(
            {"x": x.shape, "top": top.shape, "v": v_shape},
            [("y", name, ["x", "top", "v"], attrs)],
            ["y"],
        )
        check_derivatives(p, {"x": x, "top": top, "v": RNG.standard_normal(v_shape)}, wrt=["v"])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_max_pool_nan_takes_the_gradient(strides):
    x = np.array([[[[1.0, np.nan], [0.0, 2.0]]]])
    p = op_program("max_pool", [x.shape], {"kernel_shape": [2, 2], "strides": strides})
    assert np.isnan(evaluate(p, {"x0": x})["y"]).all()
    _, grads = vjp_values(p, {"x0": x}, {"y": np.ones((1, 1, 1, 1))}, ["x0"])
    np.testing.assert_array_equal(grads["x0"][0, 0], [[0, 1], [0, 0]])


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [2, 2], "strides": [2, 2]},  # tiles x exactly
        {"kernel_shape": [2, 2], "strides": [3, 3]},  # apart, elements in no window
        {"kernel_shape": [2, 2], "strides": [1, 1]},  # overlapping
    ],
)
def test_max_pool_grad_non_finite_cotangent_reaches_the_maxima_only(attrs):
    x = RNG.permutation(16).reshape(1, 1, 4, 4) / 3.0
    p = op_program("max_pool", [x.shape], attrs)
    top = evaluate(p, {"x0": x})["y"]
    g = np.ones(top.shape)
    g[0, 0, 0, 0], g[0, 0, -1, -1] = np.inf, np.nan
    _, grads = vjp_values(p, {"x0": x}, {"y": g}, ["x0"])
    expected = np.zeros(x.shape)
    for i, j in np.ndindex(*top.shape[2:]):  # each window's cotangent to its (single) max
        s = attrs["strides"]
        win = x[0, 0, i * s[0] : i * s[0] + 2, j * s[1] : j * s[1] + 2]
        a, b = np.unravel_index(win.argmax(), win.shape)
        expected[0, 0, i * s[0] + a, j * s[1] + b] += g[0, 0, i, j]
    np.testing.assert_array_equal(grads["x0"], expected)
    assert not np.signbit(grads["x0"][expected == 0]).any()


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,shapes,attrs,field",
    [
        ("conv", [(1, 3, 5, 5), (2, 2, 3, 3)], {}, "inputs[1]"),  # channel mismatch
        ("conv", [(1, 4, 5, 5), (3, 2, 3, 3)], {"groups": 2}, "attrs.groups"),
        ("conv", [(1, 3, 5, 5), (2, 3, 3)], {}, "inputs[1]"),  # kernel rank
        ("conv", [(1, 3, 2, 2), (2, 3, 3, 3)], {}, "attrs.kernel_shape"),  # larger than input
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3)], {"strides": [1, 1, 1]}, "attrs.strides"),
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3)], {"strides": [0, 1]}, "attrs.strides"),
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3)], {"pads": [1, 1, -1, 0]}, "attrs.pads"),
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3)], {"auto_pad": "SAME"}, "attrs.auto_pad"),
        (
            "conv",
            [(1, 3, 5, 5), (2, 3, 3, 3)],
            {"auto_pad": "VALID", "pads": [1] * 4},
            "attrs.pads",
        ),
        ("conv", [(1, 3, 5, 5), (2, 3, 3, 3), (3,)], {}, "inputs[2]"),  # bias shape
        ("conv", [(3, 5), (2, 3, 3)], {}, "inputs[0]"),  # no spatial axis
        ("conv", [(1, 3, 5)], {}, "inputs"),
        ("max_pool", [(1, 3, 5, 5)], {"kernel_shape": [2, 2, 2]}, "attrs.kernel_shape"),
        ("max_pool", [(1, 3, 5, 5)], {"kernel_shape": [6, 6]}, "attrs.kernel_shape"),
        ("max_pool", [(1, 3, 5, 5)], {"kernel_shape": [2, 2], "ceil_mode": 2}, "attrs.ceil_mode"),
        (
            "avg_pool",
            [(1, 3, 5, 5)],
            {"kernel_shape": [2, 2], "count_include_pad": 3},
            "attrs.count_include_pad",
        ),
        ("avg_pool", [(1, 3, 5, 5)], {}, "attrs.kernel_shape"),
        ("conv_input_grad", [G_SHAPE, W_SHAPE], {**GEOMETRY, "shape": [8, 4]}, "inputs[0]"),
        ("conv_input_grad", [G_SHAPE, (6, 2, 2)], {**GEOMETRY, "shape": [5, 4]}, "inputs[1]"),
        ("conv_input_grad", [G_SHAPE, W_SHAPE], {**GEOMETRY, "shape": [5]}, "attrs.kernel_shape"),
        (
            "conv_input_grad",
            [G_SHAPE, W_SHAPE],
            {**GEOMETRY, "shape": [5, 4], "groups": 4},
            "inputs[0]",
        ),
        ("conv_kernel_grad", [X_SHAPE, (1, 6, 3, 2)], GEOMETRY, "inputs[1]"),  # batch sizes
        ("conv_kernel_grad", [X_SHAPE, (2, 6, 3, 3)], GEOMETRY, "inputs[1]"),  # not the windows
        ("conv_kernel_grad", [X_SHAPE, G_SHAPE], {**GEOMETRY, "groups": 3}, "inputs[0]"),
        ("conv_kernel_grad", [X_SHAPE, G_SHAPE], {**GEOMETRY, "groups": 0}, "attrs.groups"),
    ],
)
def test_errors_name_the_node_and_field(op, shapes, attrs, field):
    check_graph_error(op, shapes, attrs, field)


def test_integer_operands_are_refused():
    check_graph_error("conv", [(1, 1, 3), (1, 1, 2)], {}, "inputs[0]", dtype="int64")


def test_sdk_global_avg_pool_is_the_spatial_mean():
    import gradserve_client as gs

    g = gs.Graph()
    x = g.input("x", (2, 3, 4, 5))
    y = gs.global_avg_pool(x)
    assert y.shape == (2, 3, 1, 1)
    g.output("y", gs.sum(gs.conv(y, g.input("w", (2, 3, 1, 1)))))
    feeds = {"x": RNG.standard_normal((2, 3, 4, 5)), "w": RNG.standard_normal((2, 3, 1, 1))}
    c = gs.LocalClient()
    want = np.einsum("nc,oc->", feeds["x"].mean(axis=(2, 3)), feeds["w"][:, :, 0, 0])
    np.testing.assert_allclose(c.evaluate(g, feeds)["y"], want)
    grad = c.grad(g, feeds, of="y", wrt="x")
    np.testing.assert_allclose(grad, np.broadcast_to(feeds["w"].sum(0) / 20, (2, 3, 4, 5)))
    with pytest.raises(ValueError, match="global_avg_pool"):
        gs.global_avg_pool(g.input("v", (2, 3)))
