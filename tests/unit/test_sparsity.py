"""Sparsity detection, colouring and sparse Jacobians.

Detected patterns are checked against the true non-zero pattern of dense Jacobians at random
points (equal where no value cancels, and never missing an entry); sparse Jacobians against
column-by-column JVPs and the dense result; and the large cases
(tridiagonal of 10^5 variables, a Brusselator residual on a periodic grid) for memory
proportional to the non-zeros.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from gradserve.autodiff import (
    OPS,
    GraphDef,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    hessian,
    jacobian,
    jacobian_sparsity,
    jvp_values,
    vjp_values,
)
from gradserve.autodiff.cache import PROGRAM_CACHE
from gradserve.autodiff.colouring import band_colouring, colour_columns, greedy_colouring
from gradserve.autodiff.executor import Cancelled
from gradserve.autodiff.jacobian import colour_plan
from gradserve.autodiff.sparsity import INDEX_OPS, RULES, structural_pattern
from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, programs

from bench.sparse import brusselator, brusselator_numpy, tridiagonal, tridiagonal_numpy


def build(
    inputs: dict[str, tuple[int, ...]], nodes: list[tuple], out: str, dtypes: dict | None = None
) -> Program:
    dtypes = dtypes or {}
    return Program.build(
        GraphDef(
            tuple(InputDef(n, dtypes.get(n, "float64"), s) for n, s in inputs.items()),
            tuple(NodeDef(n[0], n[1], n[2], n[3] if len(n) > 3 else {}) for n in nodes),
            (out,),
        )
    )


def true_pattern(p: Program, feeds_list: list[dict], of: str, wrt: str) -> np.ndarray:
    """The union over points of the non-zeros of the dense Jacobian, by one JVP per column."""
    n = p.types[wrt].size
    seen = np.zeros((p.types[of].size, n), bool)
    for feeds in feeds_list:
        seen |= dense_by_columns(p, feeds, of, wrt) != 0
    return seen


def dense_by_columns(p: Program, feeds: dict, of: str, wrt: str) -> np.ndarray:
    """The Jacobian with one unbatched JVP per column: independent of colouring and chunking."""
    n = p.types[wrt].size
    cols = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1
        tangents = {w: np.zeros(p.types[w].shape) for w in p.input_names}
        tangents[wrt] = e.reshape(p.types[wrt].shape)
        _, t = jvp_values(p, feeds, {wrt: tangents[wrt]}, [of])
        cols.append(t[of].ravel())
    return np.stack(cols, axis=1) if cols else np.zeros((p.types[of].size, 0))


def dense_by_rows(p: Program, feeds: dict, of: str, wrt: str) -> np.ndarray:
    """The Jacobian with one unbatched VJP per row."""
    m = p.types[of].size
    rows = []
    for i in range(m):
        e = np.zeros(m)
        e[i] = 1
        _, g = vjp_values(p, feeds, {of: e.reshape(p.types[of].shape)}, [wrt])
        rows.append(g[wrt].ravel())
    return np.stack(rows) if rows else np.zeros((0, p.types[wrt].size))


def _may_cancel(p: Program) -> bool:
    """A subtraction can cancel exactly (x - x, x - reshape(x)): the entry is structurally there
    and numerically zero at every point."""
    return any(n.op == "subtract" for n in p.nodes)


# ---- detection on random graphs ----------------------------------------------------------------


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_detected_pattern_is_the_true_pattern_on_random_graphs(case, seed):
    p, out = case.program, case.out
    rng = np.random.default_rng(seed)
    points = [case.feeds, {k: rng.uniform(-1.5, 1.5, v.shape) for k, v in case.feeds.items()}]
    for w in p.input_names:
        detected = jacobian_sparsity(p, out, w)
        assert isinstance(detected, sp.csr_array) and detected.dtype == bool
        assert detected.shape == (p.types[out].size, p.types[w].size)
        actual = true_pattern(p, points, out, w)
        assert not (actual & ~detected.toarray()).any(), "a structurally non-zero entry is missing"
        if not _may_cancel(p):
            np.testing.assert_array_equal(detected.toarray(), actual)


@SETTINGS
@given(programs(), st.sampled_from(["auto", "forward", "reverse"]))
def test_sparse_jacobian_equals_dense_on_random_graphs(case, mode):
    p, feeds, out = case.program, case.feeds, case.out
    _, sparse = jacobian(p, feeds, [out], list(p.input_names), mode=mode, sparse=True)
    _, dense = jacobian(p, feeds, [out], list(p.input_names), mode=mode)
    for w in p.input_names:
        block = sparse[out][w]
        assert isinstance(block, sp.csr_array)
        assert block.shape == (p.types[out].size, p.types[w].size)
        # Against one pass per column (row) in the direction the colouring took: colouring
        # adds only exact zeros, but BLAS may sum in another order for another batch shape.
        plan = colour_plan(p, out, w, mode)
        reference = (dense_by_columns if plan.forward else dense_by_rows)(p, feeds, out, w)
        np.testing.assert_allclose(block.toarray(), reference, rtol=1e-14, atol=1e-16)
        np.testing.assert_array_equal(block.indices, plan.pattern.indices)
        np.testing.assert_allclose(
            dense[out][w].reshape(reference.shape), reference, rtol=1e-12, atol=1e-14
        )


# ---- one op at a time ---------------------------------------------------------------------------

# (inputs, nodes, of): every pattern rule, and the generic derivations, on shapes where the
# structure is visible. Each is compared with the dense Jacobian at random points.
OP_CASES = {
    "matmul_matrix": ({"x": (4, 3)}, [("W", "constant", (), {"value": np.arange(1.0, 9).reshape(2, 4)}), ("y", "matmul", ("W", "x"))], "y"),
    "matmul_stack": ({"x": (2, 3, 4)}, [("W", "constant", (), {"value": np.ones((4, 2))}), ("y", "matmul", ("x", "W"))], "y"),
    "matmul_vector": ({"x": (4,), "A": (3, 4)}, [("y", "matmul", ("A", "x"))], "y"),
    "matmul_both": ({"x": (3, 3)}, [("t", "transpose", ("x",)), ("y", "matmul", ("x", "t"))], "y"),
    "dot_matrix": ({"x": (2, 3), "b": (2, 3, 4)}, [("y", "dot", ("x", "b"))], "y"),
    "dot_vectors": ({"x": (3,), "b": (3,)}, [("y", "dot", ("x", "b"))], "y"),
    "dot_scalar": ({"x": (3,), "b": ()}, [("y", "dot", ("b", "x"))], "y"),
    "outer": ({"x": (2, 2), "b": (3,)}, [("y", "outer", ("x", "b"))], "y"),
    "softmax": ({"x": (3, 4)}, [("y", "softmax", ("x",), {"axis": 0})], "y"),
    "log_softmax": ({"x": (3, 4)}, [("y", "log_softmax", ("x",))], "y"),
    "sum_axis": ({"x": (3, 4, 2)}, [("y", "sum", ("x",), {"axis": (0, 2), "keepdims": 1})], "y"),
    "prod": ({"x": (3, 4)}, [("y", "prod", ("x",), {"axis": (1,)})], "y"),
    "logsumexp": ({"x": (3, 4)}, [("y", "logsumexp", ("x",), {"axis": (0,)})], "y"),
    "var": ({"x": (3, 4)}, [("y", "var", ("x",))], "y"),
    "mse": ({"x": (3, 4), "b": (4,)}, [("y", "mse", ("x", "b"), {"reduction": "none"})], "y"),
    "mse_mean": ({"x": (3, 4), "b": (4,)}, [("y", "mse", ("x", "b"))], "y"),
    "slice": ({"x": (5, 4)}, [("y", "slice", ("x",), {"index": "1::2,::-1"})], "y"),
    "concatenate": ({"x": (3, 2)}, [("s", "sin", ("x",)), ("y", "concatenate", ("x", "s", "x"), {"axis": 1})], "y"),
    "stack": ({"x": (3,), "b": (3,)}, [("y", "stack", ("b", "x"), {"axis": 1})], "y"),
    "broadcast_to": ({"x": (3, 1)}, [("y", "broadcast_to", ("x",), {"shape": (2, 3, 4)})], "y"),
    "transpose": ({"x": (2, 3, 4)}, [("y", "transpose", ("x",), {"axes": (2, 0, 1)})], "y"),
    "expand_squeeze": ({"x": (3, 1)}, [("e", "expand_dims", ("x",), {"axis": (0,)}), ("y", "squeeze", ("e",))], "y"),
    "broadcast_binary": ({"x": (3, 1), "b": (4,)}, [("y", "multiply", ("x", "b"))], "y"),
    "periodic_shift": ({"x": (4, 3)}, [("a", "slice", ("x",), {"index": "-1:"}), ("b", "slice", ("x",), {"index": ":-1"}), ("r", "concatenate", ("a", "b")), ("y", "add", ("r", "x"))], "y"),
    "einsum_matmul": ({"x": (3, 4), "b": (4, 2)}, [("y", "einsum", ("x", "b"), {"subscripts": "ij,jk->ik"})], "y"),
    "einsum_chain": ({"x": (2, 3), "b": (3, 4), "c": (4,)}, [("y", "einsum", ("x", "b", "c"), {"subscripts": "ij,jk,k->i"})], "y"),
    "einsum_transposed": ({"x": (2, 3, 4), "b": (4, 2)}, [("y", "einsum", ("x", "b"), {"subscripts": "ijk,ki->kj"})], "y"),
    "einsum_ellipsis": ({"x": (2, 3, 4), "b": (3, 4)}, [("y", "einsum", ("x", "b"), {"subscripts": "...k,...k->..."})], "y"),
    "einsum_implicit_sum_alone": ({"x": (2, 3), "b": (3, 4)}, [("y", "einsum", ("x", "x", "b"), {"subscripts": "ij,ij,jk"})], "y"),
    "conv_2d": ({"x": (1, 4, 5, 5), "w": (4, 2, 3, 3), "b": (4,)}, [("y", "conv", ("x", "w", "b"), {"strides": (2, 1), "pads": (1, 0, 1, 2), "dilations": (1, 2), "groups": 2})], "y"),
    "conv_1d": ({"x": (2, 3, 6), "w": (2, 3, 2)}, [("y", "conv", ("x", "w"), {"pads": (1, 1)})], "y"),
    "conv_depthwise": ({"x": (1, 2, 4, 4), "w": (2, 1, 2, 2)}, [("y", "conv", ("x", "w"), {"groups": 2, "auto_pad": "SAME_UPPER"})], "y"),
    "conv_input_grad": ({"x": (1, 4, 2, 4), "w": (4, 1, 2, 2)}, [("y", "conv_input_grad", ("x", "w"), {"kernel_shape": (2, 2), "strides": (2, 1), "pads": (1, 0, 0, 1), "dilations": (1, 1), "shape": (3, 4), "groups": 2})], "y"),
    "conv_kernel_grad": ({"x": (2, 4, 4, 4), "g": (2, 2, 3, 2)}, [("y", "conv_kernel_grad", ("x", "g"), {"kernel_shape": (2, 2), "strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 2), "groups": 2})], "y"),
    "conv_patches": ({"x": (1, 2, 4, 4)}, [("y", "conv_patches", ("x",), {"kernel_shape": (2, 2), "strides": (2, 1), "pads": (1, 0, 0, 1), "dilations": (1, 1), "pad_value": 0.5})], "y"),
    "conv_patches_grad": ({"x": (1, 2, 2, 4, 2, 2)}, [("y", "conv_patches_grad", ("x",), {"kernel_shape": (2, 2), "strides": (2, 1), "pads": (1, 0, 0, 1), "dilations": (1, 1), "shape": (4, 4)})], "y"),
    "avg_pool": ({"x": (1, 2, 5, 5)}, [("y", "avg_pool", ("x",), {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 0), "ceil_mode": 1})], "y"),
    "avg_pool_include_pad": ({"x": (2, 1, 6)}, [("y", "avg_pool", ("x",), {"kernel_shape": (3,), "strides": (2,), "pads": (2, 1), "count_include_pad": 1, "ceil_mode": 1})], "y"),
    "layer_norm": ({"x": (3, 4, 2), "w": (4, 2), "b": (2,)}, [("y", "layer_norm", ("x", "w", "b"), {"axis": 1})], "y"),
    "layer_norm_last": ({"x": (3, 4)}, [("y", "layer_norm", ("x",))], "y"),
    "batch_norm": ({"x": (2, 3, 2), "w": (3,), "b": (3,), "m": (3,), "v": (3,)}, [("y", "batch_norm", ("x", "w", "b", "m", "v"))], "y"),
    "pad_constant": ({"x": (3, 4)}, [("y", "pad", ("x",), {"pads": (1, 2, 0, 1), "constant_value": 2.0})], "y"),
    "pad_reflect": ({"x": (3, 4)}, [("y", "pad", ("x",), {"pads": (2, 1, 1, 3), "mode": "reflect"})], "y"),
    "pad_edge": ({"x": (3, 4)}, [("y", "pad", ("x",), {"pads": (0, 2, 2, 1), "mode": "edge"})], "y"),
    "pad_grad_reflect": ({"x": (6, 8)}, [("y", "pad_grad", ("x",), {"pads": (2, 1, 1, 3), "mode": "reflect"})], "y"),
    "pad_grad_edge": ({"x": (5, 7)}, [("y", "pad_grad", ("x",), {"pads": (0, 2, 2, 1), "mode": "edge"})], "y"),
    "pad_grad_constant": ({"x": (4, 7)}, [("y", "pad_grad", ("x",), {"pads": (1, 2, 0, 1)})], "y"),
    "flip": ({"x": (3, 4)}, [("y", "flip", ("x",), {"axis": (1,)})], "y"),
    "tile": ({"x": (2, 3)}, [("y", "tile", ("x",), {"reps": (2, 1, 2)})], "y"),
    "repeat": ({"x": (2, 3)}, [("y", "repeat", ("x",), {"repeats": 2, "axis": 1})], "y"),
    "cumsum": ({"x": (3, 4)}, [("y", "cumsum", ("x",), {"axis": 1})], "y"),
    "cumsum_exclusive": ({"x": (4, 3)}, [("y", "cumsum", ("x",), {"axis": 0, "exclusive": 1})], "y"),
    "cumsum_reverse": ({"x": (2, 4, 2)}, [("y", "cumsum", ("x",), {"axis": -2, "reverse": 1})], "y"),
    "cumsum_exclusive_reverse": ({"x": (5,)}, [("y", "cumsum", ("x",), {"axis": 0, "exclusive": 1, "reverse": 1})], "y"),
    "astype_float": ({"x": (3,)}, [("c", "astype", ("x",), {"dtype": "float32"}), ("y", "sin", ("c",))], "y"),
    "einsum_diagonals": ({"x": (2, 3, 3), "b": (3, 3)}, [("y", "einsum", ("x", "b"), {"subscripts": "bii,jj->bij"})], "y"),
    "einsum_trace": ({"x": (3, 3)}, [("y", "einsum", ("x",), {"subscripts": "ii"})], "y"),
    "pad_wrap": ({"x": (2, 3)}, [("y", "pad", ("x",), {"pads": (1, 2, 3, 4), "mode": "wrap"})], "y"),
    "pad_grad_wrap": ({"x": (6, 9)}, [("y", "pad_grad", ("x",), {"pads": (1, 2, 3, 4), "mode": "wrap"})], "y"),
    "avg_pool_dilations": ({"x": (1, 1, 7, 6)}, [("y", "avg_pool", ("x",), {"kernel_shape": (2,), "dilations": (2, 3), "pads": (1,), "ceil_mode": 1})], "y"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_pattern_is_the_true_pattern(name):
    inputs, nodes, of = OP_CASES[name]
    p = build(inputs, nodes, of)
    rng = np.random.default_rng(0)
    points = [{k: rng.uniform(0.5, 1.5, s) for k, s in inputs.items()} for _ in range(2)]
    for w in inputs:
        np.testing.assert_array_equal(
            jacobian_sparsity(p, of, w).toarray(), true_pattern(p, points, of, w), err_msg=w
        )


# (float inputs, integer inputs {name: (shape, bound)}, nodes, of): ops whose pattern depends
# on index data that the graph does not hold. The pattern must contain every point's, and is
# the tightest that holds for every index: the union over many random indices.
INDEXED_CASES = {
    "take": ({"x": (3, 2, 2)}, {"i": ((2, 2), 2)}, [("y", "take", ("x", "i"), {"axis": 1})], "y"),
    "take_grad": ({"x": (3, 2, 2, 2)}, {"i": ((2, 2), 3)}, [("y", "take_grad", ("x", "i"), {"axis": -2, "size": 3})], "y"),
    "take_along_axis": ({"x": (3, 4)}, {"i": ((3, 2), 4)}, [("y", "take_along_axis", ("x", "i"), {"axis": 1})], "y"),
    "take_along_axis_grad": ({"x": (3, 2)}, {"i": ((3, 2), 3)}, [("y", "take_along_axis_grad", ("x", "i"), {"axis": -1, "shape": (3, 3)})], "y"),
    "take_along_axis_grad_broadcast": ({"x": (3, 2)}, {"i": ((3, 2), 3)}, [("y", "take_along_axis_grad", ("x", "i"), {"axis": -1, "shape": (1, 3)})], "y"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(INDEXED_CASES))
def test_index_data_patterns_cover_every_index(name):
    floats, ints, nodes, of = INDEXED_CASES[name]
    p = build(
        {**floats, **{k: s for k, (s, _) in ints.items()}}, nodes, of, dict.fromkeys(ints, "int64")
    )
    detected = jacobian_sparsity(p, of, "x").toarray()
    rng = np.random.default_rng(0)
    union = np.zeros_like(detected)
    for _ in range(40):
        feeds = {k: rng.uniform(0.5, 1.5, s) for k, s in floats.items()}
        feeds |= {k: rng.integers(0, bound, s) for k, (s, bound) in ints.items()}
        actual = true_pattern(p, [feeds], of, "x")
        assert not (actual & ~detected).any(), "a structurally non-zero entry is missing"
        union |= actual
    np.testing.assert_array_equal(detected, union)


POOLS = {
    "padded_ceil": {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 0), "ceil_mode": 1},
    "strided": {"kernel_shape": (2, 2), "strides": (1, 2), "pads": (0, 1, 1, 0)},
    "plain": {"kernel_shape": (2, 3)},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(POOLS))
def test_max_pool_and_its_derivative_ops_depend_on_whole_windows(name):
    # The max may be any element of its window: each counts, as for avg_pool (whose pattern is
    # exact), padding never; max_pool_grad is the transpose of max_pool_pick.
    attrs, x = POOLS[name], (1, 2, 5, 5)
    rng = np.random.default_rng(0)
    avg = build({"x": x}, [("y", "avg_pool", ("x",), attrs)], "y")
    points = [{"x": rng.uniform(0.5, 1.5, x)} for _ in range(2)]
    windows = jacobian_sparsity(avg, "y", "x").toarray()
    np.testing.assert_array_equal(windows, true_pattern(avg, points, "y", "x"))
    pool = [("m", "max_pool", ("x",), attrs)]
    pick = build({"x": x, "t": x}, [*pool, ("y", "max_pool_pick", ("x", "m", "t"), attrs)], "y")
    g = avg.types["y"].shape
    grad = build({"x": x, "t": g}, [*pool, ("y", "max_pool_grad", ("x", "m", "t"), attrs)], "y")
    for p, of, wrt, expected in [
        (pick, "m", "x", windows),
        (pick, "y", "t", windows),
        (grad, "y", "t", windows.T),
    ]:
        np.testing.assert_array_equal(jacobian_sparsity(p, of, wrt).toarray(), expected)
        feeds = [{k: rng.uniform(0.5, 1.5, p.types[k].shape) for k in p.input_names}]
        actual = true_pattern(p, feeds, of, wrt)
        assert actual.any() and not (actual & ~expected).any()
    assert jacobian_sparsity(pick, "y", "x").nnz == 0  # the selection carries no derivative


def test_a_small_convnet_has_exact_sparse_jacobians_and_hessians():
    # Its derivative programs hold the internal ops (conv_patches_grad, max_pool_grad, einsum,
    # pad_grad, ...) with batch axes: the sparse results equal the dense ones.
    nodes = [
        ("c", "conv", ("x", "w", "b"), {"pads": (1, 1, 0, 1), "groups": 2}),
        ("t", "tanh", ("c",)),
        ("m", "max_pool", ("t",), {"kernel_shape": (2, 2), "pads": (0, 1, 1, 0)}),
        ("a", "avg_pool", ("m",), {"kernel_shape": (2, 2), "pads": (1, 0, 0, 1)}),
        ("l", "layer_norm", ("a",), {"axis": 2}),
        ("p", "pad", ("l",), {"pads": (0, 0, 1, 0, 0, 0, 0, 1), "mode": "reflect"}),
        ("f", "flip", ("p",), {"axis": (3,)}),
        ("q", "cumsum", ("f",), {"axis": 3, "reverse": 1}),
        ("s", "sin", ("q",)),
        ("e", "einsum", ("s", "s"), {"subscripts": "nchw,nchw->nc"}),
        ("y", "sum", ("e",)),
    ]
    p = build({"x": (1, 2, 4, 4), "w": (2, 1, 2, 2), "b": (2,)}, nodes, "y")
    rng = np.random.default_rng(3)
    feeds = {k: rng.uniform(0.5, 1.5, p.types[k].shape) for k in p.input_names}
    wrt = list(p.input_names)
    _, sparse = hessian(p, feeds, "y", wrt, sparse=True)
    _, dense = hessian(p, feeds, "y", wrt)
    for i in wrt:
        for j in wrt:
            block = sparse[i][j].toarray()
            np.testing.assert_allclose(block, dense[i][j].reshape(block.shape), atol=1e-13)
    assert sparse["x"]["x"].nnz < sparse["x"]["x"].shape[0] ** 2  # the groups do not mix
    for of in ("m", "q", "e"):
        _, sparse = jacobian(p, feeds, [of], wrt, sparse=True)
        _, dense = jacobian(p, feeds, [of], wrt)
        for w in wrt:
            block = sparse[of][w].toarray()
            np.testing.assert_allclose(block, dense[of][w].reshape(block.shape), atol=1e-13)


def test_casts_to_integers_carry_no_pattern():
    nodes = [
        ("i", "astype", ("x",), {"dtype": "int64"}),
        ("y", "astype", ("i",), {"dtype": "float64"}),
    ]
    p = build({"x": (3,)}, nodes, "y")
    assert jacobian_sparsity(p, "y", "x").nnz == 0


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_max_and_min_depend_on_their_whole_slice(reduction):
    # The argmax moves with the point: structurally every element of the slice counts.
    p = build({"x": (3, 4)}, [("y", reduction, ("x",), {"axis": (1,)})], "y")
    expected = np.kron(np.eye(3, dtype=bool), np.ones((1, 4), bool))
    np.testing.assert_array_equal(jacobian_sparsity(p, "y", "x").toarray(), expected)


def test_where_depends_on_both_branches_elementwise():
    p = build(
        {"x": (4,), "b": (4,)}, [("c", "greater", ("b", "x")), ("y", "where", ("c", "x", "b"))], "y"
    )
    for w in "xb":
        np.testing.assert_array_equal(jacobian_sparsity(p, "y", w).toarray(), np.eye(4, dtype=bool))


def test_cross_entropy_and_its_internal_gradient_op_have_row_patterns():
    labels = InputDef("t", "int64", (3,))
    nodes = (
        NodeDef("l", "cross_entropy", ("x", "t"), {"reduction": "none"}),
        NodeDef("g", "cross_entropy_grad", ("x", "t")),
    )
    p = Program.build(GraphDef((InputDef("x", "float64", (3, 4)), labels), nodes, ("l", "g")))
    rows = np.kron(np.eye(3, dtype=bool), np.ones((1, 4), bool))
    np.testing.assert_array_equal(jacobian_sparsity(p, "l", "x").toarray(), rows)
    blocks = np.kron(np.eye(3, dtype=bool), np.ones((4, 4), bool))
    np.testing.assert_array_equal(jacobian_sparsity(p, "g", "x").toarray(), blocks)


def test_every_op_has_a_pattern_rule_or_a_generic_derivation():
    # The dense fallback is for ops added later; today every op states its pattern.
    fallback = [
        name
        for name, o in OPS.items()
        if o.differentiable and name not in RULES and o.partials is None and name not in INDEX_OPS
    ]
    assert fallback == []


def test_an_op_without_a_rule_gets_the_dense_pattern(monkeypatch):
    monkeypatch.delitem(RULES, "matmul")
    p = build(
        {"x": (4,)},
        [("W", "constant", (), {"value": np.eye(3, 4)}), ("y", "matmul", ("W", "x"))],
        "y",
    )
    np.testing.assert_array_equal(jacobian_sparsity(p, "y", "x").toarray(), np.ones((3, 4), bool))


def test_values_that_do_not_depend_on_wrt_have_an_empty_pattern():
    p = build({"x": (3,), "b": (2,)}, [("y", "sin", ("b",))], "y")
    pattern = jacobian_sparsity(p, "y", "x")
    assert pattern.shape == (2, 3) and pattern.nnz == 0
    _, jac = jacobian(p, {"x": np.ones(3), "b": np.ones(2)}, ["y"], ["x"], sparse=True)
    assert jac["y"]["x"].shape == (2, 3) and jac["y"]["x"].nnz == 0


def test_sparsity_errors_name_the_target():
    p = build({"x": (3,)}, [("y", "sin", ("x",))], "y")
    with pytest.raises(GraphError, match="nope: of: not a value"):
        jacobian_sparsity(p, "nope", "x")
    with pytest.raises(GraphError, match="y: wrt: not an input"):
        jacobian_sparsity(p, "y", "y")


# ---- colouring -----------------------------------------------------------------------------------


def _valid(pattern: sp.csr_array, colours: np.ndarray) -> bool:
    rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
    keys = rows * (colours.max() + 1) + colours[pattern.indices]
    return np.unique(keys).size == keys.size


@pytest.mark.parametrize("seed", range(8))
def test_colourings_never_give_two_entries_of_a_row_one_colour(seed):
    pattern = sp.csr_array(sp.random_array((60, 50), density=0.07, rng=seed) != 0)
    for colours in (greedy_colouring(pattern), band_colouring(pattern), colour_columns(pattern)):
        assert colours.shape == (50,) and _valid(pattern, colours)
    degree = np.diff(sp.csr_array(pattern.T @ pattern).indptr).max()
    assert greedy_colouring(pattern).max() + 1 <= degree  # greedy: at most max degree + 1


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_banded_patterns_take_as_many_colours_as_the_band_is_wide(width):
    n = 40
    dense = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) < width
    colours = colour_columns(sp.csr_array(dense))
    assert colours.max() + 1 == 2 * width - 1


def test_block_diagonal_patterns_take_one_colour_per_block_column():
    pattern = sp.csr_array(sp.block_diag([np.ones((2, 3), bool)] * 50, format="csr"))
    assert colour_columns(pattern).max() + 1 == 3


def test_plan_is_cached_with_the_program_and_picks_the_cheaper_direction():
    # y = A x with A a full 1 x 6 row: reverse mode needs one colour, forward six.
    p = build({"x": (6,), "A": (1, 6)}, [("y", "matmul", ("A", "x"))], "y")
    plan = colour_plan(p, "y", "x")
    assert not plan.forward and plan.count == 1
    assert colour_plan(p, "y", "x") is plan
    assert colour_plan(p, "y", "x", "forward").count == 6


def test_cached_patterns_are_read_only_and_results_copy_only_their_data():
    # Sparse results share the cached pattern's structure (no copy on the warm path): an
    # in-place change of one must fail rather than corrupt every later call's pattern.
    p = tridiagonal(8)
    diagonal = build({"x": (4,)}, [("y", "sin", ("x",))], "y")
    plans = [colour_plan(p, "y", "x"), colour_plan(diagonal, "y", "x")]
    for cached in [structural_pattern(p, "y", "x"), *(plan.pattern for plan in plans)]:
        for array in (cached.data, cached.indices, cached.indptr):
            with pytest.raises(ValueError, match="read-only"):
                array[:1] = 0
    _, blocks = jacobian(p, {"x": np.linspace(0, 1, 8)}, ["y"], ["x"], sparse=True)
    assert blocks["y"]["x"].indices is plans[0].pattern.indices
    assert blocks["y"]["x"].data.flags.writeable
    assert jacobian_sparsity(p, "y", "x").indices.flags.writeable  # a copy of its own


# ---- large and structured ----------------------------------------------------------------------


def tridiagonal_reference(x: np.ndarray) -> sp.csr_array:
    nxt = np.r_[x[1:], 0.0]
    main = -2 + np.cos(x) * nxt
    upper = 1 + np.sin(x[:-1])
    return sp.csr_array(sp.diags_array([np.ones(x.size - 1), main, upper], offsets=[-1, 0, 1]))


def csr_bytes(a: sp.csr_array) -> int:
    return a.data.nbytes + a.indices.nbytes + a.indptr.nbytes


def test_tridiagonal_of_1e5_variables_is_sparse_exact_and_small():
    n = 100_000
    p = tridiagonal(n)
    x = np.random.default_rng(0).uniform(-1, 1, n)
    tracemalloc.start()
    start = time.perf_counter()
    values, jac = jacobian(p, {"x": x}, ["y"], ["x"], sparse=True)
    cold = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_allclose(values["y"], tridiagonal_numpy(x), rtol=1e-15)
    block = jac["y"]["x"]
    assert block.nnz == 3 * n - 2
    assert colour_plan(p, "y", "x").count == 3
    expected = tridiagonal_reference(x)
    assert abs(block - expected).max() <= 1e-15
    assert peak <= 12 * csr_bytes(block), (peak, csr_bytes(block))  # a dense J: 80 GB
    assert cold < 20  # a dense Jacobian of this size would never finish
    start = time.perf_counter()
    jacobian(p, {"x": x}, ["y"], ["x"], sparse=True)
    assert time.perf_counter() - start < max(cold, 0.5)
    # Warm, the passes run one colour at a time: the result, the stacked results of the pass
    # running, its value and its seeds, and nothing of an earlier pass (2.0x the CSR result;
    # 2.2x when one colour's results lived through the next pass).
    tracemalloc.start()
    _, jac = jacobian(p, {"x": x}, ["y"], ["x"], sparse=True, chunk_size=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= 2.1 * csr_bytes(jac["y"]["x"]), peak / csr_bytes(jac["y"]["x"])


def test_brusselator_on_a_periodic_32x32_grid_is_sparse_and_exact():
    n = 32
    p = brusselator(n)
    x = np.random.default_rng(1).uniform(0, 1, (2, n, n))
    tracemalloc.start()
    values, jac = jacobian(p, {"x": x}, ["f"], ["x"], sparse=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_allclose(values["f"].ravel(), brusselator_numpy(x.ravel()), rtol=1e-13)
    block = jac["f"]["x"]
    size = 2 * n * n
    # Each residual: its own point's 5-point stencil, plus the other species at that point.
    assert block.shape == (size, size) and block.nnz == size * 6
    plan = colour_plan(p, "f", "x")
    assert plan.count <= 20  # a dense Jacobian takes 2048 passes
    _, dense = jacobian(p, {"x": x}, ["f"], ["x"], mode="forward")
    assert np.count_nonzero(dense["f"]["x"]) == block.nnz
    np.testing.assert_array_equal(block.toarray(), dense["f"]["x"].reshape(size, size))
    assert peak <= 200 * csr_bytes(block)  # the dense result alone is 2000 x the CSR


def test_dense_requests_use_colouring_when_the_pattern_is_sparse(monkeypatch):
    jac_module = sys.modules["gradserve.autodiff.jacobian"]
    p = tridiagonal(50)
    x = np.random.default_rng(2).uniform(-1, 1, 50)
    batches = []
    real = jac_module.jvp

    def spy(program, wrt, of, batch=None, **context):  # context: the cancel callback
        batches.append(batch)
        return real(program, wrt, of, batch, **context)

    monkeypatch.setattr(jac_module, "jvp", spy)
    _, jac = jacobian(p, {"x": x}, ["y"], ["x"], mode="forward")
    assert batches == [3]  # three colours, one batched pass; not 50 one-hot tangents
    np.testing.assert_allclose(jac["y"]["x"], tridiagonal_reference(x).toarray(), rtol=1e-15)
    _, sparse = jacobian(p, {"x": x}, ["y"], ["x"], mode="forward", sparse=True)
    np.testing.assert_array_equal(sparse["y"]["x"].toarray(), jac["y"]["x"])  # the same passes


# ---- structured seeds: a wrt that feeds only a matmul ----------------------------------------


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_jacobian_through_a_linear_head_is_the_matrix_scaled_not_an_identity_product(
    monkeypatch, left, sparse
):
    jac_module = sys.modules["gradserve.autodiff.jacobian"]
    rng = np.random.default_rng(5)
    W = rng.standard_normal((24, 20) if left else (20, 24))
    x, b = rng.standard_normal(24), rng.standard_normal(20)
    h = ("h", "matmul", ("x", "W") if left else ("W", "x"))
    p = build(
        {"W": W.shape, "b": (20,), "x": (24,)},
        [h, ("z", "add", ("h", "b")), ("y", "relu", ("z",))],
        "y",
    )
    batches = []
    real = jac_module.jvp

    def spy(program, wrt, of, batch=None, **context):  # context: the cancel callback
        batches.append(batch)
        return real(program, wrt, of, batch, **context)

    monkeypatch.setattr(jac_module, "jvp", spy)
    PROGRAM_CACHE.clear()  # a compiled pass is cached: the spy sees only the first call's JVP
    values, jac = jacobian(p, {"W": W, "b": b, "x": x}, ["y"], ["x"], sparse=sparse)
    z = (x @ W if left else W @ x) + b
    np.testing.assert_allclose(values["y"], np.maximum(z, 0))
    expected = (z > 0)[:, None] * (W.T if left else W)
    block = jac["y"]["x"]
    np.testing.assert_array_equal(block.toarray() if sparse else block, expected)
    if sparse:
        assert block.nnz == 480  # the detected pattern, zeros of inactive units included
    assert batches == [None]  # one unbatched JVP of relu(h + b) in h: a diagonal


@pytest.mark.parametrize("mode", ["auto", "forward", "reverse"])
def test_a_dense_jacobian_through_a_linear_head_takes_about_the_result_in_memory(mode):
    # M1's shape: d tanh(A x) / d x is dense, of.size x wrt.size; detecting its pattern (an
    # index and a gather entry per element, cached) took more than the result itself.
    m, n = 6000, 20
    rng = np.random.default_rng(6)
    A, x = rng.standard_normal((m, n)) / np.sqrt(n), rng.standard_normal(n)
    p = build({"A": (m, n), "x": (n,)}, [("h", "matmul", ("A", "x")), ("y", "tanh", ("h",))], "y")
    PROGRAM_CACHE.clear()
    tracemalloc.start()
    _, jac = jacobian(p, {"A": A, "x": x}, ["y"], ["x"], mode=mode)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    block = jac["y"]["x"]
    np.testing.assert_allclose(block, (1 - np.tanh(A @ x) ** 2)[:, None] * A, rtol=1e-12)
    assert peak <= 1.5 * block.nbytes, (peak, block.nbytes)


def test_no_linear_head_when_wrt_is_used_twice_or_is_the_output():
    p = build({"W": (3, 4), "x": (4,)}, [("h", "matmul", ("W", "x")), ("s", "sin", ("x",))], "h")
    assert sys.modules["gradserve.autodiff.jacobian"].linear_head(p, "x") is None
    q = build({"W": (3, 4), "x": (4,)}, [("h", "matmul", ("W", "x"))], "h")
    _, jac = jacobian(q, {"W": np.ones((3, 4)), "x": np.ones(4)}, ["x", "h"], ["x"])
    np.testing.assert_array_equal(jac["x"]["x"], np.eye(4))
    np.testing.assert_array_equal(jac["h"]["x"], np.ones((3, 4)))


def test_detection_stops_on_a_dense_block_and_the_jacobian_is_computed_densely(monkeypatch):
    # A dense block would make detection hold of.size x wrt.size entries per live value;
    # past MAX_LIVE_ENTRIES it stops (PatternTooLarge, a MemoryError: RESOURCE_EXHAUSTED on the
    # server) and a dense request computes without colouring.
    import gradserve.autodiff.sparsity as sparsity
    from gradserve.autodiff.sparsity import PatternTooLarge

    monkeypatch.setattr(sparsity, "MAX_LIVE_ENTRIES", 100)
    PROGRAM_CACHE.clear()
    p = build(
        {"x": (20,), "W": (20, 20)}, [("y", "matmul", ("W", "x")), ("t", "tanh", ("y",))], "t"
    )
    with pytest.raises(PatternTooLarge, match="it is dense"):
        jacobian_sparsity(p, "t", "x")
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=20), "W": rng.normal(size=(20, 20))}
    _, jac = jacobian(p, feeds, ["t"], ["x"], mode="forward")
    t = np.tanh(feeds["W"] @ feeds["x"])
    np.testing.assert_allclose(jac["t"]["x"], (1 - t**2)[:, None] * feeds["W"], rtol=1e-12)
    with pytest.raises(PatternTooLarge):
        jacobian(p, feeds, ["t"], ["x"], sparse=True)
    PROGRAM_CACHE.clear()


# ---- the program cache and cancellation ----------------------------------------------------------


def test_patterns_and_plans_live_in_the_byte_bounded_program_cache():
    PROGRAM_CACHE.clear()
    p = tridiagonal(1000)
    plan = colour_plan(p, "y", "x")
    assert structural_pattern(p, "y", "x") is plan.pattern  # one detection, shared
    # Counted in bytes: the pattern and the plan's index arrays, not only the program.
    assert PROGRAM_CACHE.nbytes >= plan.pattern.indices.nbytes + plan.gather.nbytes
    limit = PROGRAM_CACHE.max_bytes
    try:
        PROGRAM_CACHE.set_limits(1)  # the bound covers them: all but the newest entry go
        assert len(PROGRAM_CACHE) == 1
        assert colour_plan(p, "y", "x") is not plan  # detected and coloured again
    finally:
        PROGRAM_CACHE.set_limits(limit)


def test_detection_stops_when_cancelled_and_caches_nothing():
    PROGRAM_CACHE.clear()
    p = brusselator(8)
    asked = []

    def cancel_after_five() -> bool:
        asked.append(1)
        return len(asked) > 5

    with pytest.raises(Cancelled):
        structural_pattern(p, "f", "x", cancel=cancel_after_five)
    assert len(asked) == 6  # checked between nodes, stopped at the first true
    # Through a sparse Jacobian, detection is the first thing the cancel token stops.
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8))
    with pytest.raises(Cancelled):
        jacobian(p, {"x": x}, ["f"], ["x"], sparse=True, cancel=lambda: True)
    asked.clear()
    structural_pattern(p, "f", "x", cancel=lambda: bool(asked.append(1)))
    assert len(asked) > 5, "a cancelled detection was cached: the next one did not run"
    # Greedy colouring (rounds over a graph of up to 2^25 edges) asks between rounds.
    with pytest.raises(Cancelled):
        greedy_colouring(structural_pattern(p, "f", "x"), cancel=lambda: True)
    _, jac = jacobian(p, {"x": x}, ["f"], ["x"], sparse=True)  # uncancelled: complete
    assert jac["f"]["x"].nnz == 6 * x.size
