"""Jacobians and Hessians larger than one message, streamed in row blocks against a real server:
CSR runs of rows for sparse results (a 10^6 x 10^6 tridiagonal Jacobian in memory
proportional to its non-zeros on both ends), dense rows for dense Hessians (StreamHessian),
their routing by the SDK, their limits, and their cancellation between blocks."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve.autodiff.executor import Executable
from gradserve.rpc import derivatives
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec
from scipy import sparse as sp
from wire import rich_error, tensors

RNG = np.random.default_rng(11)
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SMALL_MESSAGES = 256 << 10  # a 256 KiB message limit: results of a few hundred KiB stream


def tridiagonal(n: int) -> gs.Graph:
    """r_i = x_{i+1}**2 - x_i * x_{i+2}, i < n - 2: three non-zeros a row."""
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("r", x[1:-1] ** 2 - x[:-2] * x[2:])
    return g


def tridiagonal_csr(x: np.ndarray) -> sp.csr_array:
    """The closed form: row i holds -x_{i+2}, 2 x_{i+1}, -x_i at columns i, i+1, i+2."""
    m = x.size - 2
    data = np.stack([-x[2:], 2 * x[1:-1], -x[:-2]], axis=1).ravel()
    indices = (np.arange(m)[:, None] + np.arange(3)).ravel()
    return sp.csr_array((data, indices, np.arange(0, 3 * m + 1, 3)), shape=(m, x.size))


def assert_same_csr(got: Any, want: sp.csr_array) -> None:
    """Equal patterns and values, compared without densifying."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


def csr_bytes(a: sp.csr_array) -> int:
    return a.data.nbytes + a.indices.nbytes + a.indptr.nbytes


def logsumexp(n: int, k: int) -> tuple[gs.Graph, dict[str, np.ndarray], Any]:
    """f = log(sum(exp(A x + B y))), dense in x and y, and its closed-form Hessian blocks:
    C^T (diag(p) - p p^T) C with C = [A B] and p = softmax(A x + B y)."""
    A, B = RNG.normal(size=(k, n)) / n, RNG.normal(size=(k, n)) / n
    g = gs.Graph()
    x, y = g.input("x", shape=(n,)), g.input("y", shape=(n,))
    g.output("f", gs.log(gs.sum(gs.exp(g.constant(A) @ x + g.constant(B) @ y))))
    at = {"x": RNG.normal(size=n), "y": RNG.normal(size=n)}
    z = A @ at["x"] + B @ at["y"]
    p = np.exp(z - z.max())
    p /= p.sum()
    middle = np.diag(p) - np.outer(p, p)
    C = {"x": A, "y": B}
    closed = {a: {b: C[a].T @ middle @ C[b] for b in C} for a in C}
    return g, at, closed


def cubic_chain(n: int) -> gs.Graph:
    """f = sum(x_i**2 x_{i+1}): a tridiagonal Hessian, H_ii = 2 x_{i+1} (i < n-1) and
    H_i,i+1 = H_i+1,i = 2 x_i."""
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("f", gs.sum(x[:-1] ** 2 * x[1:]))
    return g


def cubic_chain_hessian(x: np.ndarray) -> sp.csr_array:
    """The closed form, with H_n-1,n-1 (structurally zero) not stored."""
    diagonal = np.append(2 * x[1:], 0.0)
    H = sp.csr_array(sp.diags([2 * x[:-1], diagonal, 2 * x[:-1]], [-1, 0, 1], format="csr"))
    H.eliminate_zeros()
    return H


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# ---- sparse Jacobians: CSR runs of rows ------------------------------------------------------


def test_a_million_variable_tridiagonal_jacobian_streams_in_memory_of_its_non_zeros(
    server_process: Any,
) -> None:
    """10^6 x 10^6 (8 TB dense), 3 x 10^6 non-zeros: over the unary limit, so the SDK streams
    it (several 16 MiB messages) and assembles the CSR array without densifying; the client's
    traced peak stays within 3 x the CSR result, the server's whole process under 1 GiB."""
    n = 1_000_000
    server = server_process("--max-message-bytes", str(16 << 20))
    x = RNG.normal(size=n)
    blocks: list[int] = []
    with gs.Client(server.address, interceptors=[_count_blocks(blocks)]) as c:
        c.server_info()  # the limits, asked once: not traced below
        g = tridiagonal(n)
        tracemalloc.start()
        try:
            J = c.jacobian(g, {"x": x}, of="r", wrt="x", sparse=True)
            _, client_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(J, sp.csr_array) and J.shape == (n - 2, n)
    assert len(blocks) == 1 and blocks[0] >= 4  # one stream of several CSR runs
    assert_same_csr(J, tridiagonal_csr(x))
    result = csr_bytes(J)  # 56 MB
    print(f"client traced peak {client_peak / 1e6:.0f} MB for a {result / 1e6:.0f} MB CSR result")
    assert client_peak < 3 * result
    server_peak = peak_rss_bytes(server.proc.pid)
    print(f"server peak RSS {server_peak / 1e6:.0f} MB")
    assert server_peak < 1 << 30


def _count_blocks(streams: list[int]) -> Any:
    """A client interceptor that appends, per StreamJacobian call, the messages it received."""

    class Counter(grpc.UnaryStreamClientInterceptor):
        def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
            responses = continuation(details, request)
            if details.method.endswith("/StreamJacobian"):
                streams.append(0)

                def counted():  # type: ignore[no-untyped-def]
                    for response in responses:
                        streams[-1] += 1
                        yield response

                return _Stream(responses, counted())
            return responses

    return Counter()


class _Stream:
    """A response stream whose iteration is ``iterator``, otherwise the call's."""

    def __init__(self, call: Any, iterator: Any) -> None:
        self._call, self._iterator = call, iterator

    def __iter__(self) -> Any:
        return self._iterator

    def __next__(self) -> Any:
        return next(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def test_structured_stream_runs_are_sized_by_stored_entries(make_server: Any) -> None:
    """The raw contract: with structure asked, every block is `sparse`, a (row_count, n) CSR
    slice whose indptr starts at 0, each within the message limit, together the whole
    Jacobian; without, dense `rows` of n values each (so far fewer rows per message)."""
    n = 20_000
    running = make_server(max_message_bytes=SMALL_MESSAGES)
    x = RNG.normal(size=n)
    request = pb.StreamJacobianRequest(
        graph=tridiagonal(n).to_proto(), inputs=tensors({"x": x}), structured=True
    )
    channel, stub = running.stub()
    with channel:
        runs = list(stub.StreamJacobian(request))
        dense = stub.StreamJacobian(
            pb.StreamJacobianRequest(graph_id=runs[0].graph_id, inputs=tensors({"x": x}))
        )
        first_dense = next(dense)
        dense.cancel()
    assert len(runs) >= 2
    assert all(b.WhichOneof("structure") == "sparse" for b in runs)
    assert all(b.ByteSize() <= SMALL_MESSAGES for b in runs)
    assert [b.row_start for b in runs] == list(np.cumsum([0] + [b.row_count for b in runs])[:-1])
    assert sum(b.row_count for b in runs) == n - 2
    pieces = []
    for b in runs:
        indptr = tensor_codec.from_tensor(b.sparse.indptr)
        assert indptr[0] == 0 and b.sparse.rows == b.row_count and b.sparse.cols == n
        pieces.append(
            sp.csr_array(
                (tensor_codec.from_tensor(b.sparse.values),
                 tensor_codec.from_tensor(b.sparse.indices), indptr),
                shape=(b.row_count, n),
            )
        )  # fmt: skip
    assert_same_csr(sp.vstack(pieces, format="csr"), tridiagonal_csr(x))
    assert first_dense.WhichOneof("structure") == "rows"
    assert first_dense.row_count * 20 < runs[0].row_count  # a dense row is n values wide


def test_csr_runs_are_at_most_max_run_bytes_below_a_larger_message_limit(
    make_server: Any, monkeypatch: Any
) -> None:
    """A stream holds a few copies of the message it sends: runs stay small (MAX_RUN_BYTES)
    however large messages may be, and still come in order and make the whole Jacobian."""
    monkeypatch.setattr(derivatives, "MAX_RUN_BYTES", 100_000)
    n = 20_000  # 60,000 entries: 960 kB in CSR
    x = RNG.normal(size=n)
    running = make_server(max_message_bytes=64 << 20)
    channel, stub = running.stub()
    with channel:
        request = pb.StreamJacobianRequest(
            graph=tridiagonal(n).to_proto(), inputs=tensors({"x": x}), structured=True
        )
        runs = list(stub.StreamJacobian(request))
    assert len(runs) >= 10 and all(b.ByteSize() <= 100_000 + 1000 for b in runs)
    assert [b.row_start for b in runs] == list(np.cumsum([0] + [b.row_count for b in runs])[:-1])
    assembled = gs._decode.JacobianAssembler()
    for block in runs:
        assembled.add(block)
    assert_same_csr(assembled.result(["r"], ["x"], sparse=True)["r"]["x"], tridiagonal_csr(x))


def test_rows_per_message_bounds_csr_runs_and_an_empty_jacobian_still_has_its_shape(
    server: Any,
) -> None:
    x = RNG.normal(size=50)
    g = gs.Graph()
    xi = g.input("x", shape=(50,))
    g.output("r", xi[1:-1] ** 2 - xi[:-2] * xi[2:])
    g.output("none", xi[:0])
    channel, stub = server.stub()
    with channel:
        request = pb.StreamJacobianRequest(
            graph=g.to_proto(), inputs=tensors({"x": x}), of=["r", "none"], structured=True,
            rows_per_message=7,
        )  # fmt: skip
        blocks = list(stub.StreamJacobian(request))
    r = [b for b in blocks if b.of == "r"]
    assert [b.row_count for b in r] == [7] * 6 + [6]
    (empty,) = [b for b in blocks if b.of == "none"]
    assert list(empty.shape) == [0, 50] and empty.row_count == 0
    assert empty.sparse.rows == 0 and empty.sparse.cols == 50


def test_sparse_jacobians_of_several_pairs_stream_and_match_the_unary_ones(
    make_server: Any,
) -> None:
    """J[of][wrt] for two outputs and two inputs: each block its own CSR runs, all assembled."""
    n = 3000
    g = gs.Graph()
    x, y = g.input("x", shape=(n,)), g.input("y", shape=(n,))
    g.output("u", x * y + gs.sin(x))
    g.output("v", x[1:] * y[:-1])
    at = {"x": RNG.normal(size=n), "y": RNG.normal(size=n)}
    small = make_server(max_message_bytes=SMALL_MESSAGES)
    with gs.Client(small.address) as c:
        streamed = c.jacobian(g, at, of=["u", "v"], wrt=["x", "y"], sparse=True)
    local = gs.LocalClient().jacobian(g, at, of=["u", "v"], wrt=["x", "y"], sparse=True)
    for o in ("u", "v"):
        for w in ("x", "y"):
            assert isinstance(streamed[o][w], sp.csr_array)
            np.testing.assert_array_equal(streamed[o][w].toarray(), local[o][w].toarray())
    np.testing.assert_allclose(streamed["u"]["x"].diagonal(), at["y"] + np.cos(at["x"]))


def test_the_unary_refusal_of_a_large_sparse_jacobian_is_a_safety_net(make_server: Any) -> None:
    """When the SDK cannot know the size before asking (a -1 dimension), the unary Jacobian is
    refused with JACOBIAN_TOO_LARGE naming its stored entries, and the SDK streams it."""
    n = 500
    g = gs.Graph()
    x = g.input("x", shape=(-1,))
    g.output("r", x[1:-1] ** 2 - x[:-2] * x[2:])
    at = RNG.normal(size=n)
    tiny = make_server(max_jacobian_elements=n)
    channel, stub = tiny.stub()
    with channel, pytest.raises(grpc.RpcError) as exc:
        stub.Jacobian(pb.JacobianRequest(graph=g.to_proto(), inputs=tensors({"x": at}),
                                         structured=True))  # fmt: skip
    err = rich_error(exc.value)
    assert err.code == EXHAUSTED and err.reason == "JACOBIAN_TOO_LARGE"
    assert f"{3 * (n - 2)} stored entries" in err.message and "StreamJacobian" in err.message
    assert err.metadata["limit"] == "max_jacobian_elements"
    streams: list[int] = []
    with gs.Client(tiny.address, interceptors=[_count_blocks(streams)]) as c:
        J = c.jacobian(g, {"x": at}, of="r", wrt="x", sparse=True)
    assert len(streams) == 1  # refused as unary, then streamed
    np.testing.assert_array_equal(J.toarray(), tridiagonal_csr(at).toarray())


def test_the_async_client_streams_and_assembles_the_same(make_server: Any) -> None:
    n = 20_000
    x = RNG.normal(size=n)
    g, at, closed = logsumexp(300, 40)
    small = make_server(max_message_bytes=SMALL_MESSAGES)

    async def main() -> tuple[Any, Any]:
        async with gs.AsyncClient(small.address) as c:
            J = await c.jacobian(tridiagonal(n), {"x": x}, of="r", wrt="x", sparse=True)
            H = await c.hessian(g, at, wrt="y")
        return J, H

    J, H = asyncio.run(main())
    assert_same_csr(J, tridiagonal_csr(x))
    np.testing.assert_allclose(H, closed["y"]["y"], rtol=1e-8, atol=1e-12)


# ---- Hessians: StreamHessian -------------------------------------------------------------------


def test_a_dense_hessian_over_the_unary_limit_streams_and_equals_the_unary_one(
    make_server: Any, server: Any
) -> None:
    """300 + 300 inputs: four 300 x 300 blocks (720 KB each) over a 256 KiB message limit."""
    g, at, closed = logsumexp(300, 40)
    small = make_server(max_message_bytes=SMALL_MESSAGES)
    channel, stub = small.stub()
    with channel, pytest.raises(grpc.RpcError) as exc:  # unary: too large
        stub.Hessian(pb.HessianRequest(graph=g.to_proto(), inputs=tensors(at)))
    assert rich_error(exc.value).reason == "JACOBIAN_TOO_LARGE"
    with gs.Client(small.address) as c:
        streamed = c.hessian(g, at, wrt=["x", "y"])
        one = c.hessian(g, at, wrt="x")
    with gs.Client(server.address) as c:  # large messages: unary
        unary = c.hessian(g, at, wrt=["x", "y"])
    for a in ("x", "y"):
        for b in ("x", "y"):
            assert streamed[a][b].shape == (300, 300)
            np.testing.assert_allclose(streamed[a][b], unary[a][b], rtol=1e-10, atol=1e-15)
            np.testing.assert_allclose(streamed[a][b], closed[a][b], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(one, closed["x"]["x"], rtol=1e-8, atol=1e-12)


def test_stream_hessian_sends_dense_rows_in_several_messages(make_server: Any) -> None:
    g, at, closed = logsumexp(300, 40)
    small = make_server(max_message_bytes=SMALL_MESSAGES)
    channel, stub = small.stub()
    with channel:
        request = pb.StreamHessianRequest(graph=g.to_proto(), inputs=tensors(at), wrt=["x"])
        blocks = list(stub.StreamHessian(request))
    assert len(blocks) >= 3 and all(b.ByteSize() <= SMALL_MESSAGES for b in blocks)
    assert {(b.of, b.wrt) for b in blocks} == {("x", "x")}
    rows = np.concatenate([tensor_codec.from_tensor(b.rows) for b in blocks])
    np.testing.assert_allclose(rows, closed["x"]["x"], rtol=1e-8, atol=1e-12)


def test_a_large_sparse_hessian_streams_csr_runs(make_server: Any) -> None:
    """10^5 variables, tridiagonal: 10^10 dense elements, so the SDK streams the CSR blocks."""
    n = 100_000
    x = RNG.normal(size=n)
    small = make_server(max_message_bytes=1 << 20)
    with gs.Client(small.address) as c:
        H = c.hessian(cubic_chain(n), {"x": x}, wrt="x", sparse=True)
    assert isinstance(H, sp.csr_array) and H.shape == (n, n)
    H.sort_indices()
    want = cubic_chain_hessian(x)
    assert H.nnz == want.nnz == 3 * n - 3
    np.testing.assert_array_equal(H.indices, want.indices)
    np.testing.assert_allclose(H.data, want.data, rtol=1e-14)
    channel, stub = small.stub()
    with channel:
        request = pb.StreamHessianRequest(
            graph=cubic_chain(n).to_proto(), inputs=tensors({"x": x}), structured=True
        )
        runs = list(stub.StreamHessian(request))
    assert len(runs) >= 3 and all(b.WhichOneof("structure") == "sparse" for b in runs)


def test_small_hessians_are_still_unary_and_streams_agree_with_them(server: Any) -> None:
    """A stream asked for directly (raw) gives the unary result, dense and sparse."""
    n = 40
    x = RNG.normal(size=n)
    channel, stub = server.stub()
    graph = cubic_chain(n).to_proto()
    with channel:
        for structured in (False, True):
            unary = stub.Hessian(
                pb.HessianRequest(graph=graph, inputs=tensors({"x": x}), structured=structured)
            )
            stream = stub.StreamHessian(
                pb.StreamHessianRequest(
                    graph=graph, inputs=tensors({"x": x}), structured=structured,
                    rows_per_message=9,
                )
            )  # fmt: skip
            assembled = gs._decode.JacobianAssembler()
            for block in stream:
                assembled.add(block)
            got = assembled.result(["x"], ["x"])["x"]["x"]
            want = gs._decode.decode_jacobian(unary, sparse=structured)["x"]["x"]
            if structured:
                got, want = got.toarray(), want.toarray()
            np.testing.assert_array_equal(got, want)


# ---- limits and errors -------------------------------------------------------------------------


def _refusal(stream: Any) -> Any:
    """The error a stream answers with, before any block."""
    with pytest.raises(grpc.RpcError) as exc:
        next(stream)
    return rich_error(exc.value)


def test_stream_limits_bound_stored_entries_of_sparse_streams_and_elements_of_dense_ones(
    make_server: Any,
) -> None:
    """--max-stream-jacobian-elements counts the stored entries of a structured stream (before
    computing, from the pattern, for Jacobians) and the dense elements otherwise."""
    n = 1000
    x = RNG.normal(size=n)
    running = make_server(max_stream_jacobian_elements=2000)
    channel, stub = running.stub()
    with channel:
        jac = pb.StreamJacobianRequest(
            graph=tridiagonal(n).to_proto(), inputs=tensors({"x": x}), structured=True
        )
        err = _refusal(stub.StreamJacobian(jac))
        assert err.code == EXHAUSTED and err.metadata["limit"] == "max_stream_jacobian_elements"
        assert err.metadata["elements"] == str(3 * (n - 2))
        assert f"sparse Jacobians asked for have {3 * (n - 2)} stored entries" in err.message
        assert "--max-stream-jacobian-elements" in err.message

        hess = pb.StreamHessianRequest(graph=cubic_chain(n).to_proto(), inputs=tensors({"x": x}))
        err = _refusal(stub.StreamHessian(hess))
        assert err.code == EXHAUSTED and err.metadata["elements"] == str(n * n)
        assert f"the Hessian asked for has {n * n} elements" in err.message
        hess.structured = True
        err = _refusal(stub.StreamHessian(hess))
        assert f"the sparse Hessian asked for has {3 * n - 3} stored entries" in err.message

        small = pb.StreamJacobianRequest(
            graph=tridiagonal(500).to_proto(), inputs=tensors({"x": x[:500]}), structured=True
        )
        assert sum(b.row_count for b in stub.StreamJacobian(small)) == 498  # 1494 entries pass


def test_a_sparse_stream_over_the_limit_is_refused_before_any_pass(
    make_server: Any, monkeypatch: Any
) -> None:
    """The stored entries of a structured StreamHessian (and StreamJacobian) are known from
    the patterns, after detection and colouring: over the limit, nothing is computed."""
    runs: list[int] = []
    run = Executable.run

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Executable, "run", counted)
    n = 1000
    x = RNG.normal(size=n)
    running = make_server(max_stream_jacobian_elements=2000)
    channel, stub = running.stub()
    with channel:
        hess = pb.StreamHessianRequest(
            graph=cubic_chain(n).to_proto(), inputs=tensors({"x": x}), structured=True
        )
        err = _refusal(stub.StreamHessian(hess))
        assert err.code == EXHAUSTED and err.metadata["limit"] == "max_stream_jacobian_elements"
        assert err.metadata["elements"] == str(3 * n - 3)
        jac = pb.StreamJacobianRequest(
            graph=tridiagonal(n).to_proto(), inputs=tensors({"x": x}), structured=True
        )
        assert _refusal(stub.StreamJacobian(jac)).code == EXHAUSTED
        assert runs == []
        small = pb.StreamHessianRequest(
            graph=cubic_chain(600).to_proto(), inputs=tensors({"x": x[:600]}), structured=True
        )
        assert sum(b.row_count for b in stub.StreamHessian(small)) == 600  # 1797 entries pass
        assert runs  # computed once accepted


def test_a_sparse_unary_hessian_over_the_limit_is_refused_before_any_pass(
    make_server: Any, monkeypatch: Any
) -> None:
    """A structured Hessian's stored entries are known from its plans' patterns: over
    --max-jacobian-elements it is refused (for StreamHessian) with nothing computed."""
    runs: list[int] = []
    run = Executable.run
    monkeypatch.setattr(
        Executable, "run", lambda self, *a, **k: runs.append(1) or run(self, *a, **k)
    )
    n = 1000
    x = RNG.normal(size=n)
    running = make_server(max_jacobian_elements=2000)
    channel, stub = running.stub()
    with channel:
        hess = pb.HessianRequest(
            graph=cubic_chain(n).to_proto(), inputs=tensors({"x": x}), structured=True
        )
        with pytest.raises(grpc.RpcError) as exc:
            stub.Hessian(hess)
        err = rich_error(exc.value)
        assert err.code == EXHAUSTED and err.metadata["limit"] == "max_jacobian_elements"
        assert f"the sparse Hessian has {3 * n - 3} stored entries" in err.message
        assert "use StreamHessian" in err.message
        assert runs == []
        small = pb.HessianRequest(
            graph=cubic_chain(600).to_proto(), inputs=tensors({"x": x[:600]}), structured=True
        )
        block = stub.Hessian(small).blocks[0]
        assert list(block.sparse.indices.shape) == [3 * 600 - 3]  # 1797 entries pass
        assert runs


def test_a_csr_row_over_the_message_limit_is_refused_naming_the_setting(make_server: Any) -> None:
    """The gradient of sum(x) as a Jacobian has one row of n stored entries: at 16 bytes each,
    100,000 of them are over a 1 MiB message."""
    n = 100_000
    g = gs.Graph()
    x = g.input("x", shape=(n,))
    g.output("s", gs.sum(x, axis=0, keepdims=True) * 1.0)
    running = make_server(max_message_bytes=1 << 20)
    channel, stub = running.stub()
    with channel:
        request = pb.StreamJacobianRequest(
            graph=g.to_proto(), inputs=tensors({"x": np.ones(n)}), structured=True
        )
        err = _refusal(stub.StreamJacobian(request))
    assert err.code == EXHAUSTED and err.metadata["limit"] == "max_message_bytes"
    assert "one row of d s / d x is" in err.message and "--max-message-bytes" in err.message


def test_stream_hessian_bad_requests_are_invalid_argument(server: Any) -> None:
    g, at, _ = logsumexp(10, 3)
    channel, stub = server.stub()
    with channel:
        bad = pb.StreamHessianRequest(graph=g.to_proto(), inputs=tensors(at), rows_per_message=-1)
        err = _refusal(stub.StreamHessian(bad))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "rows_per_message" in err.message
        vector = tridiagonal(10).to_proto()
        bad = pb.StreamHessianRequest(graph=vector, inputs=tensors({"x": np.ones(10)}))
        err = _refusal(stub.StreamHessian(bad))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "scalar output" in err.message and err.fields == ["of"]
        bad = pb.StreamHessianRequest(graph=g.to_proto(), inputs=tensors(at), wrt=["nope"])
        err = _refusal(stub.StreamHessian(bad))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and 'wrt["nope"]' in err.message


def test_the_client_refuses_a_dense_hessian_over_its_budget_but_not_a_sparse_one(
    server: Any,
) -> None:
    n = 2000
    x = RNG.normal(size=n)
    with gs.Client(server.address, max_result_bytes=1 << 20) as c:
        with pytest.raises(gs.ResourceExhausted, match="the Hessian asked for would take") as e:
            c.hessian(cubic_chain(n), {"x": x}, wrt="x")
        assert e.value.reason == "RESULT_TOO_LARGE"
        assert "sparse=True" in e.value.message
        H = c.hessian(cubic_chain(n), {"x": x}, wrt="x", sparse=True)
    np.testing.assert_allclose(H.toarray(), cubic_chain_hessian(x).toarray(), atol=1e-12)


# ---- cancellation ------------------------------------------------------------------------------


def _counting_hessian_rows(monkeypatch: Any) -> list[int]:
    """Count the row blocks the server computes (StreamHessian's dense rows)."""
    computed: list[int] = []
    rows = derivatives.hessian_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        for start, block in rows(*args, **kwargs):
            computed.append(start)
            yield start, block

    monkeypatch.setattr(derivatives, "hessian_rows", counted)
    return computed


def _settled(computed: list[int]) -> int:
    """The count once it stops growing."""
    before = -1
    while before != len(computed):
        before = len(computed)
        time.sleep(0.3)
    return before


def test_a_cancelled_stream_hessian_stops_computing_between_blocks(
    make_server: Any, monkeypatch: Any
) -> None:
    """400 messages of one row each: cancelled after the first, the server computes only
    the few that flow control let it send ahead."""
    computed = _counting_hessian_rows(monkeypatch)
    g, at, _ = logsumexp(400, 40)
    running = make_server(worker_threads=1, max_concurrent_rpcs=1)
    channel, stub = running.stub()
    with channel:
        request = pb.StreamHessianRequest(
            graph=g.to_proto(), inputs=tensors(at), wrt=["x"], rows_per_message=1
        )
        stream = stub.StreamHessian(request)
        next(stream)
        stream.cancel()
        assert _settled(computed) < 200
        # the one worker is free again: the next call is served
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5).version


def test_a_deadline_stops_stream_hessian_between_blocks(make_server: Any, monkeypatch: Any) -> None:
    """4000 messages of one row each, seconds of work: a 1 s deadline ends the stream and the
    server computes no further rows."""
    computed = _counting_hessian_rows(monkeypatch)
    g, at, _ = logsumexp(1000, 100)
    running = make_server()
    channel, stub = running.stub()
    received = 0
    with channel:
        request = pb.StreamHessianRequest(
            graph=g.to_proto(), inputs=tensors(at), rows_per_message=1
        )
        with pytest.raises(grpc.RpcError) as exc:
            for _ in stub.StreamHessian(request, timeout=1):
                received += 1
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0 < received <= _settled(computed) < 4000
