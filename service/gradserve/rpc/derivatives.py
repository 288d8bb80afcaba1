"""The RPCs of structured and second-order derivatives (design section 10): structured Jacobian
blocks, Hessian, Hvp, JacobianSparsity and DerivativeProgram, and the row-block streams of
Jacobians and Hessians (StreamJacobian, StreamHessian), dense or CSR.

They share every RPC's steps (``requests``: graph resolution, input decoding, name checks) and
follow Jacobian's rules: limits are checked before anything large is computed, core errors name
the request field, and the core's cancel callback ends the work when the client goes away or
the deadline passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto.tensor_codec import fill_tensor

from gradserve import autodiff
from gradserve.autodiff.hessian import (
    hessian,
    hessian_plans,
    hessian_rows,
    hessian_sparse_rows,
    hvp,
)
from gradserve.autodiff.ir import Cancel
from gradserve.autodiff.jacobian import ColourPlan, Part, block_plan, sparse_rows
from gradserve.autodiff.sparsity import jacobian_sparsity, structural_pattern
from gradserve.autodiff.transforms import derivative_program
from gradserve.rpc import requests
from gradserve.rpc.codec import decode_tensors, encode_tensor, encode_tensors, graph_to_proto
from gradserve.rpc.errors import (
    JACOBIAN_TOO_LARGE,
    LIMIT_EXCEEDED,
    InvalidArgument,
    LimitExceeded,
    StreamTooLarge,
    core_errors,
)
from gradserve.rpc.requests import Call

if TYPE_CHECKING:
    from gradserve.autodiff import Program
    from gradserve.rpc.servicer import GradientServicer


#: What GetServerInfo lists for these RPCs.
FEATURES = (
    "structured_jacobian",
    "hessian",
    "hvp",
    "jacobian_sparsity",
    "derivative_program",
    "stream_structured_jacobian",
    "stream_hessian",
    "work_part",  # Jacobian and Hessian requests honour `part` (older servers ignore it)
)

KINDS = {
    pb.DERIVATIVE_KIND_VJP: "vjp",
    pb.DERIVATIVE_KIND_JVP: "jvp",
    pb.DERIVATIVE_KIND_HVP: "hvp",
}


#: Bytes of a message that are not its values (names, shapes, framing).
ROW_BLOCK_OVERHEAD = 64 * 1024
#: Bytes of one int64 index of a CSR matrix.
INDEX_BYTES = 8
#: The most bytes of a CSR run's message (below the message limit): while a stream builds and
#: sends one, it holds a few copies of its arrays (the values, their bytes, the message, its
#: serialization, which grpc keeps until the next is built), the most of a sparse stream's
#: memory besides the result's passes. At 4 MiB a 10^6 x 10^6 tridiagonal stream peaks ~40 MB
#: lower than in 16 MiB messages; a message more costs well under a millisecond.
MAX_RUN_BYTES = 4 << 20


# ---- blocks on the wire ------------------------------------------------------------------------


def _itemsize(types: Mapping[str, Any], name: str) -> int:
    return np.dtype(types[name].dtype).itemsize


def fill_sparse(message: pb.SparseMatrix, csr: Any, values: bool = True) -> None:
    """Set an empty SparseMatrix in place to a scipy CSR array (without its values for a
    pattern): each array is copied once, into its message."""
    fill_csr(message, csr.shape, csr.indptr, csr.indices, csr.data if values else None)


def fill_csr(
    message: pb.SparseMatrix,
    shape: tuple[int, int],
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray | None,
) -> None:
    """`fill_sparse` from the CSR arrays themselves (a run of rows: slices, indptr from 0)."""
    message.rows, message.cols = shape
    fill_tensor(message.indptr, indptr.astype(np.int64, copy=False))
    fill_tensor(message.indices, indices.astype(np.int64, copy=False))
    if data is not None:
        fill_tensor(message.values, data)


def _is_diagonal(csr: Any) -> bool:
    """Whether the block stores exactly its whole diagonal (element-wise ops give these)."""
    rows, cols = csr.shape
    if rows != cols or csr.nnz != rows:
        return False
    diagonal = np.arange(rows + 1)
    return bool(np.array_equal(csr.indptr, diagonal) and np.array_equal(csr.indices, diagonal[:-1]))


def add_block(blocks: Any, of: str, wrt: str, shape: Sequence[int], value: Any) -> None:
    """Append a block to a response's ``blocks``, filled in place: ``dense`` for an array; for
    a CSR array ``diagonal`` when it is one, else ``sparse``."""
    block = blocks.add(of=of, wrt=wrt, shape=shape)
    if isinstance(value, np.ndarray):
        fill_tensor(block.dense, value)
        return
    value.sort_indices()
    if _is_diagonal(value):
        fill_tensor(block.diagonal, value.diagonal())
    else:
        fill_sparse(block.sparse, value)


def csr_bytes(rows: int, entries: int, itemsize: int) -> int:
    """The bytes of a (rows, ...) CSR matrix in a message: an int64 indptr entry per row (and
    one more), an int64 column index and a value per stored entry."""
    return (rows + 1) * INDEX_BYTES + entries * (INDEX_BYTES + itemsize)


def _check_stored(
    servicer: GradientServicer, entries: int, nbytes: int, what: str, stream: str = ""
) -> None:
    """A structured response is bounded by its stored entries (as a dense one by its elements,
    max_jacobian_elements) and by the message size its CSR arrays take. Over either, a result
    that ``stream`` can send is JACOBIAN_TOO_LARGE, for the client to stream instead."""
    settings = servicer.settings
    if settings.max_jacobian_elements and entries > settings.max_jacobian_elements:
        setting = "max_jacobian_elements"
    elif nbytes > settings.max_message_bytes - ROW_BLOCK_OVERHEAD:
        setting = "max_message_bytes"
    else:
        return
    instead = f"use {stream} with structured=true, which sends it in row blocks, " if stream else ""
    raise LimitExceeded(
        f"the {what} has {entries} stored entries ({nbytes} bytes), more than"
        f" {setting}={getattr(settings, setting)} allows in one response; {instead}ask for fewer"
        f" outputs or inputs, or raise --{setting.replace('_', '-')}",
        limit=setting,
        reason=JACOBIAN_TOO_LARGE if stream else LIMIT_EXCEEDED,
    )


def _check_patterns(
    servicer: GradientServicer,
    types: Mapping[str, Any],
    patterns: Sequence[tuple[str, Any]],
    what: str,
    stream: str,
) -> None:
    """`_check_stored` of the CSR results of these (row value, pattern) blocks, from their
    patterns: before any pass."""
    stored = sum(p.nnz for _, p in patterns)
    nbytes = sum(csr_bytes(p.shape[0], p.nnz, _itemsize(types, o)) for o, p in patterns)
    _check_stored(servicer, stored, nbytes, what, stream)


def work_part(request: Any) -> Part:
    """The share of the result a Jacobian or Hessian request asks for (its WorkPart), checked;
    None for the whole result."""
    index, count = request.part.index, request.part.count
    if count <= 1 and index == 0:
        return None
    if index >= count:
        raise InvalidArgument("part.index", f"must be less than part.count, got {index} of {count}")
    return index, count


# ---- Jacobian with structured=true ---------------------------------------------------------------


def structured_jacobian(
    servicer: GradientServicer,
    call: Call,
    of: Sequence[str],
    wrt: Sequence[str],
    mode: str,
    cancel: Cancel,
    part: Part = None,
) -> pb.JacobianResponse:
    """Jacobian blocks computed by sparsity detection and colouring, sent diagonal or CSR
    (of a `part`, its entries only)."""
    program = call.program
    types = program.types
    with core_errors(program):
        patterns = [(o, structural_pattern(program, o, w, cancel=cancel)) for o in of for w in wrt]
        _check_patterns(servicer, types, patterns, "sparse Jacobian", "StreamJacobian")
        values, jac = autodiff.jacobian(
            program, call.inputs, of, wrt, mode, cancel=cancel, sparse=True, part=part
        )
    response = pb.JacobianResponse(graph_id=call.graph_id, outputs=encode_tensors(values))
    for o in of:
        for w in wrt:
            add_block(response.blocks, o, w, types[o].shape + types[w].shape, jac[o][w])
    return response


# ---- Hessian and Hvp ----------------------------------------------------------------------------


def _scalar_of(program: Program, of: str) -> str:
    """The request's `of`, or the graph's only output; checked to be a scalar."""
    if not of:
        if len(program.outputs) != 1:
            raise InvalidArgument("of", f"the graph has outputs {list(program.outputs)}; say which")
        of = program.outputs[0]
    if of not in program.types:
        raise InvalidArgument("of", f"{of!r} is not a value of the graph")
    shape = program.types[of].shape
    if shape != ():
        raise InvalidArgument(
            "of", f"second derivatives need a scalar output, but {of!r} has shape {list(shape)}"
        )
    return of


def hessian_rpc(servicer: GradientServicer, request: Any, cancel: Cancel) -> pb.HessianResponse:
    call = requests.prepare(request, servicer.graph_cache, servicer.settings, cancel)
    program = call.program
    of = _scalar_of(program, request.of)
    wrt = requests.wrt_names(program, request.wrt)
    types = program.types
    limit = servicer.settings.max_jacobian_elements
    elements = sum(types[a].size * types[b].size for a in wrt for b in wrt)
    if not request.structured and limit and elements > limit:
        raise LimitExceeded(
            f"the Hessian has {elements} elements, more than max_jacobian_elements={limit} for "
            "one response; use StreamHessian, which sends it in row blocks, ask for it sparse "
            "(structured), or raise --max-jacobian-elements",
            limit="max_jacobian_elements",
            reason=JACOBIAN_TOO_LARGE,
        )
    if request.structured:  # bounded by its whole pattern, before any pass (shares too)
        with core_errors(program):
            plans = hessian_plans(program, of, wrt, cancel)
        patterns = [(a, plan.pattern) for (a, _), plan in plans.items()]
        _check_patterns(servicer, types, patterns, "sparse Hessian", "StreamHessian")
    with core_errors(program):
        value, blocks = hessian(
            program,
            call.inputs,
            of,
            wrt,
            sparse=request.structured,
            cancel=cancel,
            part=work_part(request),
        )
    response = pb.HessianResponse(graph_id=call.graph_id, value=encode_tensor(np.asarray(value)))
    for a in wrt:
        for b in wrt:
            add_block(response.blocks, a, b, types[a].shape + types[b].shape, blocks[a][b])
    return response


def hvp_rpc(servicer: GradientServicer, request: Any, cancel: Cancel) -> pb.HvpResponse:
    call = requests.prepare(request, servicer.graph_cache, servicer.settings, cancel)
    program = call.program
    of = _scalar_of(program, request.of)
    vectors = decode_tensors(request.vectors, "vectors", servicer.settings.max_tensor_elements)
    wrt = requests.wrt_names(program, request.wrt or tuple(vectors))
    _check_vectors(program, wrt, vectors)
    with core_errors(program):
        value, products = hvp(program, call.inputs, of, wrt, vectors, cancel=cancel)
    return pb.HvpResponse(
        graph_id=call.graph_id,
        products=encode_tensors(products),
        value=encode_tensor(np.asarray(value)),
    )


def _check_vectors(program: Program, wrt: Sequence[str], vectors: Mapping[str, np.ndarray]) -> None:
    for name in vectors:
        if name not in wrt:
            raise InvalidArgument(f'vectors["{name}"]', "not one of the wrt inputs")
    for name in wrt:
        if name not in vectors:
            raise InvalidArgument(f'vectors["{name}"]', "missing: every wrt input needs a vector")
        expected, got = program.types[name], vectors[name]
        if got.shape != expected.shape:
            field = f'vectors["{name}"].shape'
            raise InvalidArgument(field, f"got {list(got.shape)}, expected {list(expected.shape)}")
        if got.dtype != np.dtype(expected.dtype):
            raise InvalidArgument(
                f'vectors["{name}"].dtype', f"got {got.dtype.name}, expected {expected.dtype}"
            )


# ---- JacobianSparsity and DerivativeProgram -------------------------------------------------


def jacobian_sparsity_rpc(
    servicer: GradientServicer, request: Any, cancel: Cancel
) -> pb.JacobianSparsityResponse:
    call = requests.prepare(request, servicer.graph_cache, servicer.settings, cancel)
    program = call.program
    of, wrt = requests.of_wrt(program, request)
    types = program.types
    response = pb.JacobianSparsityResponse(graph_id=call.graph_id)
    stored = nbytes = 0
    with core_errors(program):
        for o in of:
            for w in wrt:
                pattern = jacobian_sparsity(program, o, w, cancel)
                stored += pattern.nnz
                nbytes += csr_bytes(pattern.shape[0], pattern.nnz, 0)
                _check_stored(servicer, stored, nbytes, "sparsity pattern")
                pattern.sort_indices()
                block = response.blocks.add(of=o, wrt=w, shape=types[o].shape + types[w].shape)
                fill_sparse(block.sparse, pattern, values=False)
    return response


def derivative_program_rpc(
    servicer: GradientServicer, request: Any, cancel: Cancel
) -> pb.DerivativeProgramResponse:
    kind = KINDS.get(request.kind)
    if kind is None:
        raise InvalidArgument("kind", "set kind: DERIVATIVE_KIND_VJP, _JVP or _HVP")
    call = requests.prepare(request, servicer.graph_cache, servicer.settings, cancel)
    program = call.program
    of, wrt = requests.of_wrt(program, request)
    if kind == "hvp":
        if len(of) != 1:
            raise InvalidArgument("of", "an HVP program needs one scalar output")
        _scalar_of(program, of[0])
    with core_errors(program):
        derived = derivative_program(program, of, wrt, kind, cancel=cancel)
    return pb.DerivativeProgramResponse(graph_id=call.graph_id, program=graph_to_proto(derived))


# ---- StreamJacobian and StreamHessian: row blocks ----------------------------------------------
#
# Both stream the blocks (a, b) of a result, J[of][wrt] or H[wi][wj], each a matrix of
# a.size rows (a's dtype) by b.size columns, in consecutive runs of rows, each run as large as
# one message holds: dense rows computed one run at a time, or CSR runs sized by the stored
# entries of the block's pattern (detected and coloured first) and computed run after run
# (`jacobian.sparse_rows`: the whole CSR result is never held). Everything is checked before
# the first message (the sizes from the shapes or the patterns), so a refused request streams
# and computes nothing; a client that goes away (or a deadline that passes) stops the stream
# between two runs, and the core's cancel callback stops the computation within one.

Rows = Callable[[str, str, int], Iterator[tuple[int, np.ndarray]]]
#: (a, b, plan, bounds) -> (first row, end row, values) of each run of block (a, b).
SparseRows = Callable[[str, str, ColourPlan, Sequence[int]], Iterator[tuple[int, int, np.ndarray]]]


def stream_jacobian(
    servicer: GradientServicer, request: Any, cancel: Cancel
) -> Iterator[pb.JacobianRowBlock]:
    call = requests.prepare(request, servicer.graph_cache, servicer.settings, cancel)
    mode = requests.jacobian_mode(request)  # the structured stream; dense rows are reverse mode
    of, wrt = requests.of_wrt(call.program, request)
    pairs = [(o, w) for o in of for w in wrt]
    hint = _rows_hint(request)
    program, inputs = call.program, call.inputs
    if not request.structured:

        def rows(o: str, w: str, count: int) -> Iterator[tuple[int, np.ndarray]]:
            return autodiff.jacobian_rows(program, inputs, o, w, count, cancel)

        counted = "the Jacobians asked for have {} elements"
        return _dense_stream(servicer, call, pairs, hint, rows, counted)
    with core_errors(program):
        plans = {(o, w): block_plan(program, o, w, mode, cancel=cancel) for o, w in pairs}

    def runs(o: str, w: str, plan: ColourPlan, bounds: Sequence[int]) -> Any:
        return sparse_rows(program, inputs, o, w, plan, bounds, cancel)

    counted = "the sparse Jacobians asked for have {} stored entries"
    return _sparse_stream(servicer, call, plans, hint, runs, counted)


def stream_hessian(
    servicer: GradientServicer, request: Any, cancel: Cancel
) -> Iterator[pb.JacobianRowBlock]:
    call = requests.prepare(request, servicer.graph_cache, servicer.settings, cancel)
    program, inputs = call.program, call.inputs
    of = _scalar_of(program, request.of)
    wrt = requests.wrt_names(program, request.wrt)
    pairs = [(a, b) for a in wrt for b in wrt]
    hint = _rows_hint(request)
    if not request.structured:

        def rows(a: str, b: str, count: int) -> Iterator[tuple[int, np.ndarray]]:
            return hessian_rows(program, inputs, of, wrt, a, b, count, cancel)

        counted = "the Hessian asked for has {} elements"
        return _dense_stream(servicer, call, pairs, hint, rows, counted)
    with core_errors(program):
        plans = hessian_plans(program, of, wrt, cancel)

    def runs(a: str, b: str, plan: ColourPlan, bounds: Sequence[int]) -> Any:
        return hessian_sparse_rows(program, inputs, of, wrt, a, b, plan, bounds, cancel)

    counted = "the sparse Hessian asked for has {} stored entries"
    return _sparse_stream(servicer, call, plans, hint, runs, counted)


def _rows_hint(request: Any) -> int:
    if request.rows_per_message < 0:
        raise InvalidArgument("rows_per_message", "must be >= 0 (0: let the server choose)")
    return int(request.rows_per_message)


def _check_stream(servicer: GradientServicer, count: int, counted: str) -> None:
    """``counted`` formats ``count``: what a stream holds, bounded by its setting."""
    limit = servicer.settings.max_stream_jacobian_elements
    if count > limit:
        raise StreamTooLarge(count, limit, counted)


def _row_too_large(a: str, b: str, nbytes: int, servicer: GradientServicer) -> LimitExceeded:
    limit = servicer.settings.max_message_bytes
    return LimitExceeded(
        f"one row of d {a} / d {b} is {nbytes} bytes, more than max_message_bytes={limit} "
        "allows; raise --max-message-bytes",
        limit="max_message_bytes",
    )


def _block(call: Call, a: str, b: str, start: int, count: int, **values: Any) -> Any:
    types = call.program.types
    return pb.JacobianRowBlock(
        graph_id=call.graph_id,
        of=a,
        wrt=b,
        shape=types[a].shape + types[b].shape,
        row_start=start,
        row_count=count,
        **values,
    )


def _dense_stream(
    servicer: GradientServicer,
    call: Call,
    pairs: Sequence[tuple[str, str]],
    hint: int,
    rows: Rows,
    counted: str,
) -> Iterator[pb.JacobianRowBlock]:
    """Dense row blocks: ``rows(a, b, count)`` computes runs of ``count`` rows of block (a, b),
    as many as fit one message (at most ``hint`` if set). ``counted`` names their elements."""
    types = call.program.types
    elements = sum(types[a].size * types[b].size for a, b in pairs)
    _check_stream(servicer, elements, counted)
    budget = servicer.settings.max_message_bytes - ROW_BLOCK_OVERHEAD
    counts = []
    for a, b in pairs:
        row_bytes = types[b].size * _itemsize(types, a)
        if row_bytes > budget:
            raise _row_too_large(a, b, row_bytes, servicer)
        count = max(1, budget // max(row_bytes, 1))
        counts.append(min(count, hint) if hint else count)
    return _dense_blocks(call, pairs, counts, rows)


def _dense_blocks(
    call: Call, pairs: Sequence[tuple[str, str]], counts: Sequence[int], rows: Rows
) -> Iterator[pb.JacobianRowBlock]:
    types = call.program.types
    for (a, b), count in zip(pairs, counts, strict=True):
        if types[a].size == 0:  # still tell the client the shape
            empty = np.zeros((0, *types[b].shape), types[a].dtype)
            yield _block(call, a, b, 0, 0, rows=encode_tensor(empty))
            continue
        with core_errors(call.program):
            for start, block in rows(a, b, count):
                yield _block(call, a, b, start, block.shape[0], rows=encode_tensor(block))


def _sparse_stream(
    servicer: GradientServicer,
    call: Call,
    plans: Mapping[tuple[str, str], ColourPlan],
    hint: int,
    runs: SparseRows,
    counted: str,
) -> Iterator[pb.JacobianRowBlock]:
    """CSR row blocks of the blocks that ``plans`` compute, each run of rows as many as one
    message of MAX_RUN_BYTES (or the message limit) holds by the stored entries of the plan's
    pattern (at most ``hint`` if set), their values computed run by run by ``runs``.
    ``counted`` names the stored entries."""
    _check_stream(servicer, sum(plan.pattern.nnz for plan in plans.values()), counted)
    limit = servicer.settings.max_message_bytes - ROW_BLOCK_OVERHEAD
    budget = min(limit, MAX_RUN_BYTES)
    types = call.program.types
    bounds = {}
    for (a, b), plan in plans.items():
        # cost[r]: the bytes of rows [0, r) in a message; each run takes at most `budget`.
        per_entry = INDEX_BYTES + _itemsize(types, a)
        indptr = plan.pattern.indptr.astype(np.int64)  # int32 bytes would wrap past 2 GiB
        cost = np.arange(indptr.size, dtype=np.int64) * INDEX_BYTES + indptr * per_entry
        widest = int(np.diff(cost).max(initial=0))
        if widest > limit:
            raise _row_too_large(a, b, widest, servicer)
        bounds[a, b] = _runs(cost, budget, hint)  # a row over `budget` is a run of its own
    return _sparse_blocks(call, plans, bounds, runs)


def _runs(cost: np.ndarray, budget: int, hint: int) -> list[int]:
    """The row boundaries [0, ..., rows] of runs whose ``cost`` each fits ``budget`` (a matrix
    without rows has one empty run: its message still tells the client the shape)."""
    rows = cost.size - 1
    if rows == 0:
        return [0, 0]
    bounds = [0]
    while bounds[-1] < rows:
        start = bounds[-1]
        end = int(np.searchsorted(cost, cost[start] + budget, side="right")) - 1
        end = max(end, start + 1)
        bounds.append(min(end, start + hint, rows) if hint else min(end, rows))
    return bounds


def _sparse_blocks(
    call: Call,
    plans: Mapping[tuple[str, str], ColourPlan],
    bounds: Mapping[tuple[str, str], list[int]],
    runs: SparseRows,
) -> Iterator[pb.JacobianRowBlock]:
    for (a, b), plan in plans.items():
        pattern = plan.pattern
        with core_errors(call.program):
            for start, end, values in runs(a, b, plan, bounds[a, b]):
                first, last = pattern.indptr[start], pattern.indptr[end]
                block = _block(call, a, b, start, end - start)
                fill_csr(
                    block.sparse,
                    (end - start, pattern.shape[1]),
                    pattern.indptr[start : end + 1] - first,
                    pattern.indices[first:last],
                    values,
                )
                del values
                yield block
                del block  # sent: not held while the next run is computed
