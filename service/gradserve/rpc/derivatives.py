"""The RPCs of structured and second-order derivatives (design section 10): structured Jacobian
blocks, Hessian, Hvp, JacobianSparsity and DerivativeProgram.

They share the servicer's steps (graph resolution, input decoding, name checks) and follow
Jacobian's rules: limits are checked before anything large is computed, core errors name the
request field, and the core's cancel callback ends the work when the client goes away or the
deadline passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto.tensor_codec import fill_tensor

from gradserve import autodiff
from gradserve.autodiff.hessian import hessian, hvp
from gradserve.autodiff.jacobian import Part
from gradserve.autodiff.sparsity import jacobian_sparsity
from gradserve.autodiff.transforms import derivative_program
from gradserve.rpc.codec import encode_tensor, encode_tensors, graph_to_proto
from gradserve.rpc.errors import InvalidArgument, LimitExceeded, core_errors

if TYPE_CHECKING:
    from gradserve.autodiff import Program
    from gradserve.rpc.servicer import GradientServicer, _Call

Cancel = Callable[[], bool] | None

#: What GetServerInfo lists for these RPCs.
FEATURES = (
    "structured_jacobian",
    "hessian",
    "hvp",
    "jacobian_sparsity",
    "derivative_program",
    "work_part",  # Jacobian and Hessian requests honour `part` (older servers ignore it)
)

KINDS = {
    pb.DERIVATIVE_KIND_VJP: "vjp",
    pb.DERIVATIVE_KIND_JVP: "jvp",
    pb.DERIVATIVE_KIND_HVP: "hvp",
}


# ---- blocks on the wire ------------------------------------------------------------------------


def fill_sparse(message: pb.SparseMatrix, csr: Any, values: bool = True) -> None:
    """Set an empty SparseMatrix in place to a scipy CSR array (without its values for a
    pattern): each array is copied once, into its message."""
    message.rows, message.cols = csr.shape
    fill_tensor(message.indptr, csr.indptr.astype(np.int64, copy=False))
    fill_tensor(message.indices, csr.indices.astype(np.int64, copy=False))
    if values:
        fill_tensor(message.values, csr.data)


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


def _check_stored(entries: int, what: str, limit: int) -> None:
    """A structured result is bounded by its stored entries, as a dense one by its elements."""
    if limit and entries > limit:
        raise LimitExceeded(
            f"the {what} has {entries} stored entries, more than max_jacobian_elements={limit} "
            "for one response; ask for fewer outputs or inputs, or raise --max-jacobian-elements",
            limit="max_jacobian_elements",
        )


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
    call: _Call,
    of: Sequence[str],
    wrt: Sequence[str],
    mode: str,
    cancel: Cancel,
    part: Part = None,
) -> pb.JacobianResponse:
    """Jacobian blocks computed by sparsity detection and colouring, sent diagonal or CSR
    (of a `part`, its entries only)."""
    program = call.program
    limit = servicer.settings.max_jacobian_elements
    with core_errors(program):
        stored = sum(jacobian_sparsity(program, o, w).nnz for o in of for w in wrt)
        _check_stored(stored, "sparse Jacobian", limit)
        values, jac = autodiff.jacobian(
            program, call.inputs, of, wrt, mode, cancel=cancel, sparse=True, part=part
        )
    types = program.types
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


def _wrt(servicer: GradientServicer, program: Program, names: Sequence[str]) -> tuple[str, ...]:
    inputs = set(program.input_names)
    float_inputs = [i.name for i in program.inputs if program.types[i.name].is_float]
    wrt = servicer._names(program, names, "wrt", float_inputs)
    for name in wrt:
        if name not in inputs:
            raise InvalidArgument(f'wrt["{name}"]', "not an input of the graph")
        if not program.types[name].is_float:
            raise InvalidArgument(f'wrt["{name}"]', "not a float input")
    if not wrt:
        raise InvalidArgument("wrt", "the graph has no float inputs to differentiate by")
    return wrt


def hessian_rpc(servicer: GradientServicer, request: Any, cancel: Cancel) -> pb.HessianResponse:
    call = servicer._prepare(request)
    program = call.program
    of = _scalar_of(program, request.of)
    wrt = _wrt(servicer, program, request.wrt)
    types = program.types
    limit = servicer.settings.max_jacobian_elements
    elements = sum(types[a].size * types[b].size for a in wrt for b in wrt)
    if not request.structured and limit and elements > limit:
        raise LimitExceeded(
            f"the Hessian has {elements} elements, more than max_jacobian_elements={limit} for "
            "one response; ask for it sparse (structured), for fewer wrt inputs, or raise "
            "--max-jacobian-elements",
            limit="max_jacobian_elements",
        )
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
    if request.structured:
        _check_stored(sum(blocks[a][b].nnz for a in wrt for b in wrt), "sparse Hessian", limit)
    response = pb.HessianResponse(graph_id=call.graph_id, value=encode_tensor(np.asarray(value)))
    for a in wrt:
        for b in wrt:
            add_block(response.blocks, a, b, types[a].shape + types[b].shape, blocks[a][b])
    return response


def hvp_rpc(servicer: GradientServicer, request: Any, cancel: Cancel) -> pb.HvpResponse:
    call = servicer._prepare(request)
    program = call.program
    of = _scalar_of(program, request.of)
    vectors = servicer._decode(request.vectors, "vectors")
    wrt = _wrt(servicer, program, request.wrt or tuple(vectors))
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


def jacobian_sparsity_rpc(servicer: GradientServicer, request: Any) -> pb.JacobianSparsityResponse:
    call = servicer._prepare(request)
    program = call.program
    of, wrt = servicer._of_wrt(call, request)
    types = program.types
    response = pb.JacobianSparsityResponse(graph_id=call.graph_id)
    stored = 0
    with core_errors(program):
        for o in of:
            for w in wrt:
                pattern = jacobian_sparsity(program, o, w)
                stored += pattern.nnz
                _check_stored(stored, "sparsity pattern", servicer.settings.max_jacobian_elements)
                pattern.sort_indices()
                block = response.blocks.add(of=o, wrt=w, shape=types[o].shape + types[w].shape)
                fill_sparse(block.sparse, pattern, values=False)
    return response


def derivative_program_rpc(
    servicer: GradientServicer, request: Any
) -> pb.DerivativeProgramResponse:
    kind = KINDS.get(request.kind)
    if kind is None:
        raise InvalidArgument("kind", "set kind: DERIVATIVE_KIND_VJP, _JVP or _HVP")
    call = servicer._prepare(request)
    program = call.program
    of, wrt = servicer._of_wrt(call, request)
    if kind == "hvp":
        if len(of) != 1:
            raise InvalidArgument("of", "an HVP program needs one scalar output")
        _scalar_of(program, of[0])
    with core_errors(program):
        derived = derivative_program(program, of, wrt, kind)
    return pb.DerivativeProgramResponse(graph_id=call.graph_id, program=graph_to_proto(derived))
