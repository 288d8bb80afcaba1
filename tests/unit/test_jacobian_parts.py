"""`part=(index, count)` of the core's `jacobian` and `hessian`: each share holds the entries of
its run of the whole computation's chunks, the shares are disjoint, and they add up to the
whole result bit for bit, in forward and reverse mode, dense, coloured and sparse."""

from __future__ import annotations

import gradserve_client as gs
import numpy as np
import pytest
from gradserve.autodiff.hessian import hessian
from gradserve.autodiff.jacobian import chunk_starts, jacobian
from gradserve.rpc.graph_cache import GraphCache

N = 400  # 3 chunks of passes for the dense blocks


@pytest.fixture(scope="module")
def program():
    rng = np.random.default_rng(5)
    g = gs.Graph()
    x = g.input("x", shape=(N,))
    w = g.constant(rng.standard_normal((N, N)) / np.sqrt(N))
    g.output("y", gs.tanh(w @ gs.sin(x)))  # dense
    g.output("b", x[1:] * x[:-1] + gs.sin(x[:-1]))  # banded: coloured
    g.output("loss", gs.sum(gs.tanh(w @ x) ** 2))
    cache = GraphCache(4)
    return cache.put_proto(g.to_proto(), max_nodes=100, max_elements=N * N).program


def test_chunk_starts_split_the_chunks_into_contiguous_runs():
    assert list(chunk_starts(10, 3)) == [0, 3, 6, 9]
    runs = [list(chunk_starts(10, 3, (i, 3))) for i in range(3)]
    assert runs == [[0], [3], [6, 9]]
    assert [list(chunk_starts(10, 5, (i, 3))) for i in range(3)] == [[], [0], [5]]


def _stored(block):
    return block.nnz if hasattr(block, "nnz") else np.count_nonzero(block)


@pytest.mark.parametrize("of", ["y", "b"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("sparse", [False, True])
def test_shares_add_up_to_the_whole_jacobian(program, of, mode, sparse):
    x = {"x": np.random.default_rng(6).standard_normal(N)}
    values, whole = jacobian(program, x, [of], ["x"], mode, sparse=sparse)
    want = whole[of]["x"]
    for count in (2, 3):
        shares = [
            jacobian(program, x, [of], ["x"], mode, sparse=sparse, part=(i, count))
            for i in range(count)
        ]
        for share_values, _ in shares:
            assert np.array_equal(share_values[of], values[of])
        blocks = [share[of]["x"] for _, share in shares]
        total = blocks[0]
        for block in blocks[1:]:
            total = total + block
        assert sum(_stored(b) for b in blocks) == _stored(want)  # disjoint
        if of == "y" and count == 3:  # 3 chunks of the dense block: every share has work
            assert all(_stored(b) > 0 for b in blocks)
        if sparse:
            assert (total != want).nnz == 0
        else:
            assert np.array_equal(total, want)


@pytest.mark.parametrize("sparse", [False, True])
def test_shares_add_up_to_the_whole_hessian(program, sparse):
    x = {"x": np.random.default_rng(7).standard_normal(N)}
    value, whole = hessian(program, x, "loss", ["x"], sparse=sparse)
    shares = [hessian(program, x, "loss", ["x"], sparse=sparse, part=(i, 3)) for i in range(3)]
    blocks = [s["x"]["x"] for _, s in shares]
    assert all(_stored(b) > 0 for b in blocks)
    total = blocks[0] + blocks[1] + blocks[2]
    want = whole["x"]["x"]
    assert (total != want).nnz == 0 if sparse else np.array_equal(total, want)
    assert all(v == value for v, _ in shares)
