"""The gradserve.v1.Gradient servicer: requests in, core calls, responses out.

Each RPC resolves the graph (cache), decodes the tensors (codec), runs the core with a cancel
callback bound to the call's deadline and cancellation, and encodes the results. Errors are
raised, never set on the context: ``errors.rpc_method`` maps them to statuses.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence

import grpc
import numpy as np
from gradserve_client.opset.listing import operators_response
from gradserve_client.proto import gradient_service_pb2 as pb

from gradserve import __version__, autodiff, blas
from gradserve.autodiff import OPSET, Program, memory
from gradserve.autodiff.cache import PROGRAM_CACHE
from gradserve.config import Settings
from gradserve.rpc import derivatives, training
from gradserve.rpc.codec import decode_tensors, encode_tensor, encode_tensors
from gradserve.rpc.datasets import DatasetCache
from gradserve.rpc.errors import (
    InvalidArgument,
    JacobianTooLarge,
    LimitExceeded,
    StreamTooLarge,
    rpc_method,
)
from gradserve.rpc.errors import core_errors as _core_errors
from gradserve.rpc.graph_cache import CachedGraph, GraphCache
from gradserve.rpc.wire import DIRECT_ENCODE_BYTES, EncodedEvaluateResponse

_MODES = {
    pb.JACOBIAN_MODE_UNSPECIFIED: "auto",
    pb.JACOBIAN_MODE_AUTO: "auto",
    pb.JACOBIAN_MODE_FORWARD: "forward",
    pb.JACOBIAN_MODE_REVERSE: "reverse",
}
# Bytes of a JacobianRowBlock that are not row values (names, shapes, framing).
_ROW_BLOCK_OVERHEAD = 64 * 1024


# How often the cancel callback asks the RPC context whether the client is still there. The
# deadline is checked at every step against the clock; the context (a lock in grpc each time)
# only this often, so a short call never asks it at all.
CANCEL_POLL_INTERVAL = 0.002


def cancel_callback(
    context: grpc.ServicerContext, interval: float = CANCEL_POLL_INTERVAL
) -> Callable[[], bool]:
    """True once the client has gone away or the call's deadline has passed.

    The deadline is read once and then compared with the clock at every call; whether the
    client is still active is asked at most every ``interval`` seconds.
    """
    clock = time.monotonic
    remaining = context.time_remaining()
    deadline = None if remaining is None else clock() + remaining
    next_poll = clock() + interval

    def cancelled() -> bool:
        nonlocal next_poll
        now = clock()
        if deadline is not None and now >= deadline:
            left = context.time_remaining()  # grpc's own view, which reports the status
            if left is not None and left <= 0:
                return True
        if now < next_poll:
            return False
        next_poll = now + interval
        return not context.is_active()

    return cancelled


def _float_inputs(program: Program) -> list[str]:
    """The inputs a derivative is taken by when the request lists none."""
    return [i.name for i in program.inputs if program.types[i.name].is_float]


class _Call:
    """A request's graph entry, Program, and decoded inputs."""

    __slots__ = ("entry", "inputs", "program")

    def __init__(self, entry: CachedGraph, program: Program, inputs: dict[str, np.ndarray]):
        self.entry = entry
        self.program = program
        self.inputs = inputs

    @property
    def graph_id(self) -> str:
        return self.entry.graph_id


class GradientServicer:
    """Implements every RPC of gradserve.v1.Gradient (see handlers.add_to_server)."""

    def __init__(self, settings: Settings, graph_cache: GraphCache | None = None) -> None:
        self.settings = settings
        self.graph_cache = graph_cache or GraphCache(
            settings.graph_cache_size, settings.graph_cache_bytes
        )
        PROGRAM_CACHE.set_limits(settings.program_cache_bytes)  # one per process
        self.dataset_cache = DatasetCache(settings.dataset_cache_bytes)  # PutDataset uploads
        self.version = __version__

    # ---- shared steps -------------------------------------------------------------------------

    def _resolve(self, request) -> CachedGraph:
        # Every plan this request runs is checked against the budget first. grpc runs each RPC
        # in a context of its own (its stream's messages too), so this holds for this one only.
        memory.set_limit(self.settings.max_request_bytes)
        source = request.WhichOneof("graph_source")
        if source == "graph":
            return self.graph_cache.put_proto(
                request.graph,
                max_nodes=self.settings.max_graph_nodes,
                max_elements=self.settings.max_tensor_elements,
            )
        if source == "graph_id" and request.graph_id:
            return self.graph_cache.get(request.graph_id)
        if source == "onnx_model":
            return self.graph_cache.put_onnx(
                request.onnx_model,
                max_nodes=self.settings.max_graph_nodes,
                max_elements=self.settings.max_tensor_elements,
            )
        raise InvalidArgument("graph", "set graph (the full graph), graph_id or onnx_model")

    def _decode(self, tensors, prefix: str) -> dict[str, np.ndarray]:
        return decode_tensors(tensors, prefix, self.settings.max_tensor_elements)

    def _prepare(self, request) -> _Call:
        entry = self._resolve(request)
        inputs = self._decode(request.inputs, "inputs")
        program = entry.program_for(
            {k: v.shape for k, v in inputs.items()}, self.settings.max_graph_nodes
        )
        return _Call(entry, program, inputs)

    @staticmethod
    def _names(program: Program, names: Sequence[str], field: str, default: Sequence[str]):
        names = tuple(names) or tuple(default)
        for name in names:
            if name not in program.types:
                raise InvalidArgument(f'{field}["{name}"]', "not a value of the graph")
        if len(set(names)) != len(names):
            raise InvalidArgument(field, "a name is listed twice")
        return names

    def _of_wrt(self, call: _Call, request) -> tuple[tuple[str, ...], tuple[str, ...]]:
        program = call.program
        of = self._names(program, request.of, "of", program.outputs)
        wrt = self._names(program, request.wrt, "wrt", _float_inputs(program))
        inputs = set(program.input_names)
        for name in wrt:
            if name not in inputs:
                raise InvalidArgument(f'wrt["{name}"]', "not an input of the graph")
        if not wrt:
            raise InvalidArgument("wrt", "the graph has no float inputs to differentiate by")
        return of, wrt

    @staticmethod
    def _mode(request) -> str:
        mode = _MODES.get(request.mode)
        if mode is None:
            raise InvalidArgument("mode", f"unknown JacobianMode {request.mode}")
        return mode

    # ---- RPCs ---------------------------------------------------------------------------------

    @rpc_method
    def Evaluate(self, request, context):
        call = self._prepare(request)
        with _core_errors(call.program):
            values = autodiff.evaluate(
                call.program, call.inputs, tuple(request.outputs), cancel_callback(context)
            )
        if sum(np.asarray(v).nbytes for v in values.values()) >= DIRECT_ENCODE_BYTES:
            return EncodedEvaluateResponse(call.graph_id, values)  # one copy of the values
        return pb.EvaluateResponse(graph_id=call.graph_id, outputs=encode_tensors(values))

    @rpc_method
    def Jacobian(self, request, context):
        call = self._prepare(request)
        mode = self._mode(request)
        of, wrt = self._of_wrt(call, request)
        part = derivatives.work_part(request)
        if request.structured:
            cancel = cancel_callback(context)
            return derivatives.structured_jacobian(self, call, of, wrt, mode, cancel, part)
        types = call.program.types
        elements = sum(types[o].size * types[w].size for o in of for w in wrt)
        limit = self.settings.max_jacobian_elements
        if limit and elements > limit:
            raise JacobianTooLarge(elements, limit)
        with _core_errors(call.program):
            values, jac = autodiff.jacobian(
                call.program, call.inputs, of, wrt, mode, cancel=cancel_callback(context), part=part
            )
        blocks = [
            pb.JacobianBlock(of=o, wrt=w, shape=jac[o][w].shape, dense=encode_tensor(jac[o][w]))
            for o in of
            for w in wrt
        ]
        return pb.JacobianResponse(
            graph_id=call.graph_id, blocks=blocks, outputs=encode_tensors(values)
        )

    @rpc_method
    def StreamJacobian(self, request, context) -> Iterator[pb.JacobianRowBlock]:
        call = self._prepare(request)
        self._mode(request)  # validated; rows are always computed in reverse mode
        of, wrt = self._of_wrt(call, request)
        if request.rows_per_message < 0:
            raise InvalidArgument("rows_per_message", "must be >= 0 (0: let the server choose)")
        types = call.program.types
        budget = self.settings.max_message_bytes - _ROW_BLOCK_OVERHEAD
        cancel = cancel_callback(context)
        # Check everything before the first message, so a bad request streams nothing.
        elements = sum(types[o].size * types[w].size for o in of for w in wrt)
        if elements > self.settings.max_stream_jacobian_elements:
            raise StreamTooLarge(elements, self.settings.max_stream_jacobian_elements)
        plans = []
        for o in of:
            for w in wrt:
                row_bytes = types[w].size * np.dtype(types[o].dtype).itemsize
                if row_bytes > budget:
                    raise LimitExceeded(
                        f"one Jacobian row of d {o} / d {w} is {row_bytes} bytes, more than "
                        f"max_message_bytes={self.settings.max_message_bytes} allows; "
                        "raise --max-message-bytes",
                        limit="max_message_bytes",
                    )
                rows = max(1, budget // max(row_bytes, 1))
                if request.rows_per_message:
                    rows = min(rows, request.rows_per_message)
                plans.append((o, w, rows))
        for o, w, rows in plans:
            shape = types[o].shape + types[w].shape
            m = types[o].size
            if m == 0:  # still tell the client the shape
                empty = np.zeros((0, *types[w].shape), types[o].dtype)
                yield pb.JacobianRowBlock(
                    graph_id=call.graph_id, of=o, wrt=w, shape=shape, rows=encode_tensor(empty)
                )
                continue
            with _core_errors(call.program):
                blocks = autodiff.jacobian_rows(call.program, call.inputs, o, w, rows, cancel)
                for start, block in blocks:
                    yield pb.JacobianRowBlock(
                        graph_id=call.graph_id,
                        of=o,
                        wrt=w,
                        shape=shape,
                        row_start=start,
                        row_count=block.shape[0],
                        rows=encode_tensor(block),
                    )

    @rpc_method
    def Vjp(self, request, context):
        call = self._prepare(request)
        cotangents = self._decode(request.cotangents, "cotangents")
        program = call.program
        self._names(program, tuple(cotangents), "cotangents", ())
        wrt = self._names(program, request.wrt, "wrt", _float_inputs(program))
        with _core_errors(program):
            values, grads = autodiff.vjp_values(
                program, call.inputs, cotangents, wrt, cancel_callback(context)
            )
        return pb.VjpResponse(
            graph_id=call.graph_id,
            outputs=encode_tensors(values),
            gradients=encode_tensors(grads),
        )

    @rpc_method
    def Jvp(self, request, context):
        call = self._prepare(request)
        tangents = self._decode(request.tangents, "tangents")
        program = call.program
        for name in tangents:
            if name not in program.input_names:
                raise InvalidArgument(f'tangents["{name}"]', "not an input of the graph")
        of = self._names(program, request.of, "of", program.outputs)
        with _core_errors(program):
            values, out = autodiff.jvp_values(
                program, call.inputs, tangents, of, cancel_callback(context)
            )
        return pb.JvpResponse(
            graph_id=call.graph_id, outputs=encode_tensors(values), tangents=encode_tensors(out)
        )

    @rpc_method
    def Train(self, request, context):
        yield from training.train(self, request, context)

    @rpc_method
    def PutDataset(self, request_iterator, context):
        return training.put_dataset(self, request_iterator, context)

    # ---- structured and second-order derivatives: derivatives.py ----------------------------

    @rpc_method
    def Hessian(self, request, context):
        return derivatives.hessian_rpc(self, request, cancel_callback(context))

    @rpc_method
    def Hvp(self, request, context):
        return derivatives.hvp_rpc(self, request, cancel_callback(context))

    @rpc_method
    def JacobianSparsity(self, request, context):
        return derivatives.jacobian_sparsity_rpc(self, request)

    @rpc_method
    def DerivativeProgram(self, request, context):
        return derivatives.derivative_program_rpc(self, request)

    @rpc_method
    def ListOperators(self, request, context):
        return operators_response()

    @rpc_method
    def GetServerInfo(self, request, context):
        s = self.settings
        return pb.GetServerInfoResponse(
            version=self.version,
            opset=OPSET,
            limits=pb.ServerLimits(
                max_message_bytes=s.max_message_bytes,
                max_graph_nodes=s.max_graph_nodes,
                max_tensor_elements=s.max_tensor_elements,
                max_jacobian_elements=s.max_jacobian_elements,
                max_request_bytes=s.max_request_bytes,
                max_stream_jacobian_elements=s.max_stream_jacobian_elements,
            ),
            features=self.features(),
            blas_threads=blas.current_threads(),
            process=f"{socket.gethostname()}:{os.getpid()}",
        )

    def features(self) -> list[str]:
        s = self.settings
        features = ["stream_jacobian", "graph_cache", "dynamic_shapes", *derivatives.FEATURES]
        if training.AVAILABLE:
            features.append("train")
        if s.auth_token_file is not None:
            features.append("auth")
        if s.tls_cert is not None:
            features.append("tls")
        if s.tls_client_ca is not None:
            features.append("mtls")
        return features


__all__ = ["GradientServicer", "cancel_callback"]
