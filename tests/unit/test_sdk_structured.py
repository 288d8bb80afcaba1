"""The SDK's decoding of structured Jacobian blocks (no server): dense, diagonal and CSR blocks
and sparsity patterns become the arrays and scipy CSR arrays the methods return."""

from __future__ import annotations

import gradserve_client as gs
import numpy as np
import pytest
from gradserve_client._decode import decode_block, decode_jacobian
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec
from scipy import sparse as sp

RNG = np.random.default_rng(3)


def csr_message(matrix: sp.csr_array, values: bool = True) -> pb.SparseMatrix:
    message = pb.SparseMatrix(
        rows=matrix.shape[0],
        cols=matrix.shape[1],
        indptr=tensor_codec.to_tensor(matrix.indptr.astype(np.int64)),
        indices=tensor_codec.to_tensor(matrix.indices.astype(np.int64)),
    )
    if values:
        message.values.CopyFrom(tensor_codec.to_tensor(matrix.data))
    return message


def test_a_csr_block_decodes_to_the_same_matrix_sparse_or_dense() -> None:
    dense = RNG.normal(size=(4, 6)) * (RNG.random((4, 6)) < 0.3)
    matrix = sp.csr_array(dense)
    block = pb.JacobianBlock(of="y", wrt="x", shape=[2, 2, 6], sparse=csr_message(matrix))
    got = decode_block(block, sparse=True)
    assert isinstance(got, sp.csr_array) and got.shape == (4, 6) and got.nnz == matrix.nnz
    np.testing.assert_array_equal(got.toarray(), dense)
    as_dense = decode_block(block, sparse=False)
    assert as_dense.shape == (2, 2, 6)
    np.testing.assert_array_equal(as_dense.reshape(4, 6), dense)


def test_a_diagonal_block_is_a_diagonal_csr_array() -> None:
    diagonal = RNG.normal(size=5)
    block = pb.JacobianBlock(
        of="s", wrt="x", shape=[5, 5], diagonal=tensor_codec.to_tensor(diagonal)
    )
    got = decode_block(block, sparse=True)
    assert isinstance(got, sp.csr_array) and got.nnz == 5
    np.testing.assert_array_equal(got.toarray(), np.diag(diagonal))
    np.testing.assert_array_equal(decode_block(block, sparse=False), np.diag(diagonal))


def test_a_pattern_has_no_values_and_decodes_to_booleans() -> None:
    pattern = sp.csr_array(np.eye(3, k=1) + np.eye(3))
    response = pb.JacobianSparsityResponse(
        blocks=[pb.JacobianBlock(of="r", wrt="x", shape=[3, 3], sparse=csr_message(pattern, False))]
    )
    got = decode_jacobian(response, sparse=True)["r"]["x"]
    assert got.dtype == bool
    np.testing.assert_array_equal(got.toarray(), pattern.toarray() != 0)


def test_unknown_or_unexpected_representations_are_refused() -> None:
    with pytest.raises(gs.GradserveError, match="does not know"):
        decode_block(pb.JacobianBlock(of="y", wrt="x", shape=[2]), sparse=False)
    dense = pb.JacobianBlock(of="y", wrt="x", shape=[2, 2], dense=tensor_codec.to_tensor(np.eye(2)))
    with pytest.raises(gs.GradserveError, match="older than this SDK"):
        decode_block(dense, sparse=True)


def test_bad_arguments_are_refused_before_any_call() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    g.output("y", x * 2.0)
    with pytest.raises(gs.InvalidArgument) as info:
        gs.LocalClient().derivative_program(g, of="y", wrt="x", kind="hessian")
    assert info.value.field_violations[0][0] == "kind"
    with pytest.raises(gs.InvalidArgument, match="scalar output") as info:
        gs.LocalClient().hessian(g, {"x": np.ones(3)}, of="y", wrt="x")
    assert info.value.field_violations[0][0] == "of"
