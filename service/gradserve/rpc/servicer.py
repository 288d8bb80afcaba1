"""The gradserve.v1.Gradient servicer: requests in, core calls, responses out.

Each RPC resolves the graph and decodes the tensors (``requests``: the steps every RPC shares),
runs the core with a cancel callback bound to the call's deadline and cancellation, and encodes
the results. Errors are
raised, never set on the context: ``errors.rpc_method`` maps them to statuses.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import numpy as np
from gradserve_client.opset.listing import operators_response
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import tensor_codec

from gradserve import __version__, autodiff, blas
from gradserve.autodiff import OPSET
from gradserve.autodiff.cache import PROGRAM_CACHE
from gradserve.autodiff.ir import Cancel
from gradserve.config import Settings
from gradserve.rpc import derivatives, requests, training
from gradserve.rpc.codec import decode_tensors, encode_tensor, encode_tensors
from gradserve.rpc.datasets import DatasetCache
from gradserve.rpc.errors import (
    InvalidArgument,
    JacobianTooLarge,
    rpc_method,
)
from gradserve.rpc.errors import core_errors as _core_errors
from gradserve.rpc.graph_cache import GraphCache
from gradserve.rpc.requests import (
    Call,
    cancel_callback,
    float_inputs,
    jacobian_mode,
    names,
    of_wrt,
)
from gradserve.rpc.wire import DIRECT_ENCODE_BYTES, EncodedEvaluateResponse


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

    def _prepare(self, request, cancel: Cancel = None) -> Call:
        return requests.prepare(request, self.graph_cache, self.settings, cancel)

    def _decode(self, tensors, prefix: str) -> dict[str, np.ndarray]:
        return decode_tensors(tensors, prefix, self.settings.max_tensor_elements)

    # ---- RPCs ---------------------------------------------------------------------------------

    @rpc_method
    def Evaluate(self, request, context):
        cancel = cancel_callback(context)  # one per call: its deadline is the call's
        call = self._prepare(request, cancel)
        with _core_errors(call.program):
            # Looked up once per (Program, outputs): the plan and the results' size.
            evaluation = autodiff.evaluation(call.program, tuple(request.outputs), cancel=cancel)
            values = evaluation.run(call.inputs, cancel)
        if evaluation.result_bytes >= DIRECT_ENCODE_BYTES:
            return EncodedEvaluateResponse(call.graph_id, values)  # one copy of the values
        response = pb.EvaluateResponse(graph_id=call.graph_id)
        tensor_codec.fill_tensor_map(response.outputs, values)  # no Tensor built, then copied
        return response

    @rpc_method
    def Jacobian(self, request, context):
        cancel = cancel_callback(context)
        call = self._prepare(request, cancel)
        mode = jacobian_mode(request)
        of, wrt = of_wrt(call.program, request)
        part = derivatives.work_part(request)
        if request.structured:
            return derivatives.structured_jacobian(self, call, of, wrt, mode, cancel, part)
        types = call.program.types
        elements = sum(types[o].size * types[w].size for o in of for w in wrt)
        limit = self.settings.max_jacobian_elements
        if limit and elements > limit:
            raise JacobianTooLarge(elements, limit)
        with _core_errors(call.program):
            values, jac = autodiff.jacobian(
                call.program, call.inputs, of, wrt, mode, cancel=cancel, part=part
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
        yield from derivatives.stream_jacobian(self, request, cancel_callback(context))

    @rpc_method
    def Vjp(self, request, context):
        cancel = cancel_callback(context)
        call = self._prepare(request, cancel)
        cotangents = self._decode(request.cotangents, "cotangents")
        program = call.program
        names(program, tuple(cotangents), "cotangents", ())
        wrt = names(program, request.wrt, "wrt", float_inputs(program))
        with _core_errors(program):
            values, grads = autodiff.vjp_values(program, call.inputs, cotangents, wrt, cancel)
        return pb.VjpResponse(
            graph_id=call.graph_id,
            outputs=encode_tensors(values),
            gradients=encode_tensors(grads),
        )

    @rpc_method
    def Jvp(self, request, context):
        cancel = cancel_callback(context)
        call = self._prepare(request, cancel)
        tangents = self._decode(request.tangents, "tangents")
        program = call.program
        for name in tangents:
            if name not in program.input_names:
                raise InvalidArgument(f'tangents["{name}"]', "not an input of the graph")
            # Checked here: the core would name its `wrt`, which JvpRequest does not have.
            if not program.types[name].is_float:
                dtype = program.types[name].dtype
                raise InvalidArgument(
                    f'tangents["{name}"]', f"is {dtype}: only floats have derivatives"
                )
        of = names(program, request.of, "of", program.outputs)
        with _core_errors(program):
            values, out = autodiff.jvp_values(program, call.inputs, tangents, of, cancel)
        return pb.JvpResponse(
            graph_id=call.graph_id, outputs=encode_tensors(values), tangents=encode_tensors(out)
        )

    @rpc_method
    def Train(self, request, context):
        yield from training.train(
            request,
            context,
            graphs=self.graph_cache,
            datasets=self.dataset_cache,
            settings=self.settings,
        )

    @rpc_method
    def PutDataset(self, request_iterator, context):
        return training.put_dataset(
            request_iterator, datasets=self.dataset_cache, settings=self.settings
        )

    # ---- structured and second-order derivatives: derivatives.py ----------------------------

    @rpc_method
    def Hessian(self, request, context):
        return derivatives.hessian_rpc(self, request, cancel_callback(context))

    @rpc_method
    def StreamHessian(self, request, context) -> Iterator[pb.JacobianRowBlock]:
        yield from derivatives.stream_hessian(self, request, cancel_callback(context))

    @rpc_method
    def Hvp(self, request, context):
        return derivatives.hvp_rpc(self, request, cancel_callback(context))

    @rpc_method
    def JacobianSparsity(self, request, context):
        return derivatives.jacobian_sparsity_rpc(self, request, cancel_callback(context))

    @rpc_method
    def DerivativeProgram(self, request, context):
        return derivatives.derivative_program_rpc(self, request, cancel_callback(context))

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


__all__ = ["GradientServicer"]
