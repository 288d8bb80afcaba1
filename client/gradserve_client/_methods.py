"""The SDK's methods, one definition each: which RPC carries a call, how the call's resolved
arguments (`_args.Call`) become its request, how the response becomes the user's result, and
how `LocalClient` computes the same result in this process.

`AsyncClient` (aio.py) and `Client` (client.py, generated from aio.py) send
``method.request(call)`` over ``method.rpc`` and return ``method.decode(call, response)``;
`LocalClient` returns ``method.local(local, call)``. Adding an RPC to the SDK is a `Method`
here and its public one-line method in aio.py (then ``make sdk`` regenerates client.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, Protocol, TypeVar

from grpc_health.v1 import health_pb2

from . import _wire
from ._args import KINDS, Array, Call
from ._channel import SERVICE
from ._decode import JacobianAssembler, decode, decode_jacobian, is_jacobian_too_large
from ._info import OperatorInfo, ServerInfo, decode_operators, decode_server_info
from .graph import Graph
from .opset.listing import operators_response
from .proto import gradient_service_pb2 as pb
from .proto import tensor_codec
from .proto import training_pb2 as tpb
from .training import dataset_id, dataset_wire_chunks

C = TypeVar("C")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, eq=False)
class Rpc:
    """One RPC as a channel calls it: its path, kind and (de)serializers."""

    path: str
    kind: str  # "unary_unary", "unary_stream" or "stream_unary": the channel's method
    serialize: Callable[[Any], bytes]
    deserialize: Callable[[bytes], Any]


def gradient_rpc(name: str, request: Any, response: Any, kind: str = "unary_unary") -> Rpc:
    """An RPC of gradserve.v1.Gradient, with its messages' protobuf (de)serializers."""
    return Rpc(f"/{SERVICE}/{name}", kind, request.SerializeToString, response.FromString)


class LocalRunner(Protocol):
    """What `Method.local` runs on: `LocalClient`."""

    _core: Any  # the ``gradserve.autodiff`` package
    _in_process: Any  # the server's entry point, ``gradserve.rpc.inprocess.InProcess``

    def _compute(self, fn: Callable[..., Any], call: Call, *args: Any, **kwargs: Any) -> Any:
        """``fn(program, call.feeds, *args, **kwargs)``, the core's errors raised as a server
        would."""
        ...


class Collector(Protocol):
    """Folds the responses of a server stream into the one value `Method.decode` reads."""

    graph_id: str

    def add(self, response: Any) -> None: ...


def _never(err: Exception) -> bool:
    return False


def _same(call: Any) -> Method[Any, Any] | None:
    return None


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Method(Generic[C, T]):
    """One SDK method: a call ``C`` (resolved arguments) in, a result ``T`` out."""

    rpc: Rpc
    request: Callable[[C], Any]  # the request, without its graph source
    decode: Callable[[C, Any], T]  # the response (or the `collect`ed stream) as the result
    local: Callable[[LocalRunner, C], T] | None  # the result computed in process
    graph: bool = True  # the request carries a graph source (``call.meta``)
    collect: Callable[[], Collector] | None = None  # for a server stream
    route: Callable[[C], Method[C, T] | None] = _same  # another method to send this call by
    fallback: Method[C, T] | None = None  # sent instead when the first answer is
    fallback_on: Callable[[Exception], bool] = _never  # an error this accepts


def _with_tensors(request: Any, call: Call, seeds: str = "") -> Any:
    """``request`` with the call's inputs (and its seeds in the map field ``seeds``) filled in:
    no Tensor built, then copied."""
    tensor_codec.fill_tensor_map(request.inputs, call.feeds)
    if seeds:
        tensor_codec.fill_tensor_map(getattr(request, seeds), call.seeds)
    return request


# -- Evaluate


def _outputs(call: Call, response: Any) -> dict[str, Array]:
    """The outputs of an EvaluateResponse, in the order asked (or the graph's)."""
    return decode(response.outputs, call.of or call.meta.outputs)


def _evaluate_locally(local: LocalRunner, call: Call) -> dict[str, Array]:
    return local._compute(local._core.evaluate, call, call.of)  # type: ignore[no-any-return]


#: Evaluate through the hand-written wire path (`_wire`: values copied once each way).
EVALUATE_WIRE: Method[Call, dict[str, Array]] = Method(
    rpc=Rpc(_wire.EVALUATE, "unary_unary", _wire.write_evaluate_request,
            _wire.read_evaluate_response),
    request=lambda call: _wire.EvaluateRequest(call.feeds, call.of),
    decode=_outputs,
    local=_evaluate_locally,
)  # fmt: skip
EVALUATE: Method[Call, dict[str, Array]] = Method(
    rpc=gradient_rpc("Evaluate", pb.EvaluateRequest, pb.EvaluateResponse),
    request=lambda call: _with_tensors(pb.EvaluateRequest(outputs=call.of), call),
    decode=_outputs,
    local=_evaluate_locally,
    route=lambda call: EVALUATE_WIRE if _wire.is_large(call.feeds) else None,
)


# -- Jacobian, and StreamJacobian for a Jacobian over the unary limit (dense or CSR)


def _owned(blocks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The core's blocks with each sparse one's structure copied: the core's CSR results share
    `indices` and `indptr` with the pattern it caches (read-only), and the user's array must be
    theirs to change (``eliminate_zeros``) without touching later calls'."""
    return {
        of: {wrt: b.copy() if hasattr(b, "indptr") else b for wrt, b in row.items()}
        for of, row in blocks.items()
    }


def _jacobian_locally(local: LocalRunner, call: Call) -> Any:
    jacobian = local._core.jacobian
    _, result = local._compute(jacobian, call, call.of, call.wrt, call.mode, sparse=call.sparse)
    return call.jacobians(_owned(result))


STREAM_JACOBIAN: Method[Call, Any] = Method(
    rpc=gradient_rpc(
        "StreamJacobian", pb.StreamJacobianRequest, pb.JacobianRowBlock, "unary_stream"
    ),
    request=lambda call: _with_tensors(
        pb.StreamJacobianRequest(
            of=call.of, wrt=call.wrt, mode=call.wire_mode, structured=call.sparse
        ),
        call,
    ),
    collect=JacobianAssembler,
    decode=lambda call, assembled: call.jacobians(assembled.result(call.of, call.wrt, call.sparse)),
    local=_jacobian_locally,
)
JACOBIAN: Method[Call, Any] = Method(
    rpc=gradient_rpc("Jacobian", pb.JacobianRequest, pb.JacobianResponse),
    request=lambda call: _with_tensors(
        pb.JacobianRequest(of=call.of, wrt=call.wrt, mode=call.wire_mode, structured=call.sparse),
        call,
    ),
    decode=lambda call, response: call.jacobians(decode_jacobian(response, call.sparse)),
    local=_jacobian_locally,
    fallback=STREAM_JACOBIAN,
    fallback_on=is_jacobian_too_large,
)


# -- Vjp (grad and vjp) and Jvp


def _vjp_locally(local: LocalRunner, call: Call) -> Any:
    _, grads = local._compute(local._core.vjp_values, call, call.seeds, call.wrt)
    return call.by_wrt(grads)


VJP: Method[Call, Any] = Method(
    rpc=gradient_rpc("Vjp", pb.VjpRequest, pb.VjpResponse),
    request=lambda call: _with_tensors(pb.VjpRequest(wrt=call.wrt), call, "cotangents"),
    decode=lambda call, response: call.by_wrt(decode(response.gradients)),
    local=_vjp_locally,
)


def _jvp_locally(local: LocalRunner, call: Call) -> Any:
    _, tangents = local._compute(local._core.jvp_values, call, call.seeds, call.of)
    return call.by_of(tangents)


JVP: Method[Call, Any] = Method(
    rpc=gradient_rpc("Jvp", pb.JvpRequest, pb.JvpResponse),
    request=lambda call: _with_tensors(pb.JvpRequest(of=call.of), call, "tangents"),
    decode=lambda call, response: call.by_of(decode(response.tangents)),
    local=_jvp_locally,
)


# -- Hessian (StreamHessian over the unary limit) and Hvp


def _hessian_locally(local: LocalRunner, call: Call) -> Any:
    from gradserve.autodiff.hessian import hessian

    _, blocks = local._compute(hessian, call, call.of[0], call.wrt, sparse=call.sparse)
    return call.hessians(_owned(blocks))


STREAM_HESSIAN: Method[Call, Any] = Method(
    rpc=gradient_rpc("StreamHessian", pb.StreamHessianRequest, pb.JacobianRowBlock, "unary_stream"),
    request=lambda call: _with_tensors(
        pb.StreamHessianRequest(of=call.of[0], wrt=call.wrt, structured=call.sparse), call
    ),
    collect=JacobianAssembler,
    decode=lambda call, assembled: call.hessians(assembled.result(call.wrt, call.wrt, call.sparse)),
    local=_hessian_locally,
)
HESSIAN: Method[Call, Any] = Method(
    rpc=gradient_rpc("Hessian", pb.HessianRequest, pb.HessianResponse),
    request=lambda call: _with_tensors(
        pb.HessianRequest(of=call.of[0], wrt=call.wrt, structured=call.sparse), call
    ),
    decode=lambda call, response: call.hessians(decode_jacobian(response, call.sparse)),
    local=_hessian_locally,
    fallback=STREAM_HESSIAN,
    fallback_on=is_jacobian_too_large,
)


def _hvp_locally(local: LocalRunner, call: Call) -> Any:
    from gradserve.autodiff.hessian import hvp

    _, products = local._compute(hvp, call, call.of[0], call.wrt, call.seeds)
    return call.by_wrt(products)


HVP: Method[Call, Any] = Method(
    rpc=gradient_rpc("Hvp", pb.HvpRequest, pb.HvpResponse),
    request=lambda call: _with_tensors(pb.HvpRequest(of=call.of[0], wrt=call.wrt), call, "vectors"),
    decode=lambda call, response: call.by_wrt(decode(response.products)),
    local=_hvp_locally,
)


# -- JacobianSparsity and DerivativeProgram


def _sparsity_locally(local: LocalRunner, call: Call) -> Any:
    from gradserve.autodiff.sparsity import jacobian_sparsity

    def patterns(program: Any, feeds: Any) -> dict[str, dict[str, Any]]:
        return {o: {w: jacobian_sparsity(program, o, w) for w in call.wrt} for o in call.of}

    return call.jacobians(local._compute(patterns, call))


JACOBIAN_SPARSITY: Method[Call, Any] = Method(
    rpc=gradient_rpc("JacobianSparsity", pb.JacobianSparsityRequest, pb.JacobianSparsityResponse),
    request=lambda call: _with_tensors(pb.JacobianSparsityRequest(of=call.of, wrt=call.wrt), call),
    decode=lambda call, response: call.jacobians(decode_jacobian(response, sparse=True)),
    local=_sparsity_locally,
)


def _derivative_locally(local: LocalRunner, call: Call) -> Graph:
    from gradserve.autodiff.transforms import derivative_program

    def derive(program: Any, feeds: Any) -> Any:
        derived = derivative_program(program, call.of, call.wrt, call.mode)
        return local._in_process.graph_message(derived)

    return Graph.from_proto(local._compute(derive, call))


DERIVATIVE_PROGRAM: Method[Call, Graph] = Method(
    rpc=gradient_rpc(
        "DerivativeProgram", pb.DerivativeProgramRequest, pb.DerivativeProgramResponse
    ),
    request=lambda call: pb.DerivativeProgramRequest(
        of=call.of, wrt=call.wrt, kind=KINDS[call.mode]
    ),
    decode=lambda call, response: Graph.from_proto(response.program),
    local=_derivative_locally,
)


# -- Train (its stream is driven by the clients' `_train`) and PutDataset

TRAIN = gradient_rpc("Train", tpb.TrainRequest, tpb.TrainEvent, "unary_stream")


PUT_DATASET: Method[Mapping[str, Array], str] = Method(
    # the chunks are serialized already (dataset_wire_chunks)
    rpc=Rpc(f"/{SERVICE}/PutDataset", "stream_unary", bytes, tpb.DatasetInfo.FromString),
    request=dataset_wire_chunks,
    decode=lambda data, response: response.dataset_id,
    local=lambda local, data: dataset_id(data),  # the content id; LocalClient sends data inline
    graph=False,
)


# -- The server's description


def _operators_locally(local: LocalRunner, call: None) -> list[OperatorInfo]:
    return decode_operators(operators_response())  # the listing the server sends


def _server_info_locally(local: LocalRunner, call: None) -> ServerInfo:
    try:
        current = version("gradserve")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        current = "0+unknown"
    limits = {f.name: 0 for f in pb.ServerLimits.DESCRIPTOR.fields}
    return ServerInfo(current, local._core.OPSET, limits, ("local",))


OPERATORS: Method[None, list[OperatorInfo]] = Method(
    rpc=gradient_rpc("ListOperators", pb.ListOperatorsRequest, pb.ListOperatorsResponse),
    request=lambda call: pb.ListOperatorsRequest(),
    decode=lambda call, response: decode_operators(response),
    local=_operators_locally,
    graph=False,
)
SERVER_INFO: Method[None, ServerInfo] = Method(
    rpc=gradient_rpc("GetServerInfo", pb.GetServerInfoRequest, pb.GetServerInfoResponse),
    request=lambda call: pb.GetServerInfoRequest(),
    decode=lambda call, response: decode_server_info(response),
    local=_server_info_locally,
    graph=False,
)
HEALTH: Method[str, str] = Method(
    rpc=Rpc("/grpc.health.v1.Health/Check", "unary_unary",
            health_pb2.HealthCheckRequest.SerializeToString,
            health_pb2.HealthCheckResponse.FromString),
    request=lambda service: health_pb2.HealthCheckRequest(service=service),
    decode=lambda service, response: health_pb2.HealthCheckResponse.ServingStatus.Name(
        response.status
    ),
    local=lambda local, service: "SERVING",  # the core is this process
    graph=False,
)  # fmt: skip
