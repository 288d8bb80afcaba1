"""What `Client`, `AsyncClient` and `LocalClient` share: argument handling, request building,
response decoding, the graph-id cache, Jacobian row-block assembly and channel options.

Each public client method is: resolve the arguments here (`GraphMeta`, `names`, `as_array`),
build the request here (`*_request`), make the call (sync, asyncio or in-process), decode the
response here (`decode_*`). Adding an RPC to all three clients is one builder, one decoder and
three short methods.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2_grpc

from . import _wire
from .errors import DataLoss, GradserveError, InvalidArgument, NotFound, ResourceExhausted
from .graph import Graph
from .proto import gradient_service_pb2 as pb
from .proto import gradient_service_pb2_grpc as pb_grpc
from .proto import graph_pb2, tensor_codec
from .proto import training_pb2 as tpb
from .training import (
    Checkpoint,
    Event,
    Optimizer,
    Schedule,
    dataset_id,
    decode_event,
    num_examples,
    optimizer_proto,
    schedule_proto,
    total_steps,
)

#: A graph as the clients accept it: a `Graph`, or its wire message.
GraphLike: TypeAlias = "Graph | graph_pb2.Graph"
#: Names of outputs or inputs: one name, a list of names, or None for the default set.
Names: TypeAlias = "str | Sequence[str] | None"
Array: TypeAlias = "np.ndarray[Any, np.dtype[Any]]"
R = TypeVar("R")

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SERVICE = "gradserve.v1.Gradient"
MODES = {
    "auto": pb.JACOBIAN_MODE_AUTO,
    "forward": pb.JACOBIAN_MODE_FORWARD,
    "reverse": pb.JACOBIAN_MODE_REVERSE,
}
_FLOAT_KINDS = "f"


class InvalidInput(InvalidArgument, TypeError):
    """A value the SDK refuses before any call (a string array, say): INVALID_ARGUMENT, and
    also a ``TypeError``."""


# ----------------------------------------------------------------------------------------------
# Graphs


@dataclass(frozen=True, slots=True, eq=False)
class GraphMeta:
    """What the clients need to know about one version of a graph, computed once."""

    proto: graph_pb2.Graph
    key: str  # sha256 of the deterministic serialization: the graph-id cache key
    input_dtypes: Mapping[str, np.dtype[Any]]
    float_inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    output_dtypes: Mapping[str, np.dtype[Any]]
    output_shapes: Mapping[str, tuple[int, ...] | None]


_META: weakref.WeakKeyDictionary[Graph, GraphMeta] = weakref.WeakKeyDictionary()


def graph_meta(graph: GraphLike) -> GraphMeta:
    """The `GraphMeta` of a graph's current version (cached per `Graph` until it changes)."""
    if isinstance(graph, Graph):
        proto = graph.to_proto()  # cached by the Graph until it changes
        meta = _META.get(graph)
        if meta is not None and meta.proto is proto:
            return meta
        outs = graph.outputs
        meta = _make_meta(
            proto,
            {n: np.dtype(v.dtype) for n, v in outs.items()},
            {n: v.shape for n, v in outs.items()},
        )
        _META[graph] = meta
        return meta
    if isinstance(graph, graph_pb2.Graph):
        return _make_meta(graph, {}, {})
    raise TypeError(f"expected a gs.Graph (or a graph_pb2.Graph), got {type(graph).__name__}")


def _make_meta(
    proto: graph_pb2.Graph,
    output_dtypes: Mapping[str, np.dtype[Any]],
    output_shapes: Mapping[str, tuple[int, ...] | None],
) -> GraphMeta:
    key = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
    dtypes = {}
    for spec in proto.inputs:
        try:
            dtypes[spec.name] = tensor_codec.dtype_to_numpy(spec.dtype)
        except ValueError:
            dtypes[spec.name] = np.dtype("float64")  # the server will name the problem
    return GraphMeta(
        proto=proto,
        key=key,
        input_dtypes=dtypes,
        float_inputs=tuple(n for n, d in dtypes.items() if d.kind in _FLOAT_KINDS),
        outputs=tuple(proto.outputs),
        output_dtypes=dict(output_dtypes),
        output_shapes=dict(output_shapes),
    )


class GraphIds:
    """A client's memory of which graphs the server already has: graph key -> graph_id.

    The first request for a graph carries it in full; the response's graph_id is remembered and
    later requests carry only the id. When the server answers NOT_FOUND to an id (a restart, or
    another replica behind a load balancer), the id is forgotten and the full graph resent.
    """

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def attach(self, request: Any, meta: GraphMeta) -> str | None:
        """Set the request's graph source; return the graph_id used, or None if sent in full."""
        graph_id = self._ids.get(meta.key)
        if graph_id is None:
            request.graph.CopyFrom(meta.proto)
        else:
            request.graph_id = graph_id
        return graph_id

    def resend(self, request: Any, meta: GraphMeta, sent_id: str | None, err: Exception) -> bool:
        """After ``err``: if the server did not know the id we sent, put the full graph in
        ``request`` and return True (the caller retries once); else False."""
        if sent_id is None or not is_graph_not_found(err):
            return False
        self._ids.pop(meta.key, None)
        request.graph.CopyFrom(meta.proto)
        return True

    def remember(self, meta: GraphMeta, graph_id: str) -> None:
        """Record the graph_id of a response."""
        if graph_id:
            self._ids[meta.key] = graph_id


def is_graph_not_found(err: Exception) -> bool:
    """NOT_FOUND for an unknown graph_id (ErrorInfo reason GRAPH_NOT_FOUND, or no reason)."""
    return isinstance(err, NotFound) and err.reason in ("GRAPH_NOT_FOUND", "")


def is_jacobian_too_large(err: Exception) -> bool:
    """RESOURCE_EXHAUSTED because a dense Jacobian exceeds the unary limit."""
    return isinstance(err, ResourceExhausted) and (
        err.reason == "JACOBIAN_TOO_LARGE" or (not err.reason and "StreamJacobian" in err.message)
    )


# ----------------------------------------------------------------------------------------------
# Arguments


def names(value: Names, default: Sequence[str], what: str) -> tuple[tuple[str, ...], bool]:
    """(the names, whether one name was given as a str)."""
    if value is None:
        return tuple(default), False
    if isinstance(value, str):
        return (value,), True
    out = tuple(value)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what}: expected names (str), got {n!r}")
    return out, False


def as_array(name: str, value: npt.ArrayLike, dtype: np.dtype[Any] | None, field: str) -> Array:
    """``value`` as an array fit to send. Python scalars and lists (anything but an ndarray)
    take the declared ``dtype``; string, object and other unsupported arrays are refused."""
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise _refuse(name, field, f"cannot convert {type(value).__name__}: {exc}") from None
    if array.dtype is dtype:  # the common case: nothing to check or cast
        return array
    try:
        tensor_codec.dtype_from_numpy(array.dtype)
    except TypeError as exc:
        if dtype is None or array.dtype.kind in "OSUVMmc":
            raise _refuse(name, field, str(exc)) from None
    if dtype is not None and array.dtype != dtype and not isinstance(value, np.ndarray):
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise _refuse(name, field, f"cannot cast {array.dtype.name} values to {dtype.name}")
        array = array.astype(dtype)
    return array


def _refuse(name: str, field: str, reason: str) -> InvalidInput:
    where = f'{field}["{name}"]'
    return InvalidInput(f"{where}: {reason}", field_violations=[(where, reason)])


def arrays(
    values: Mapping[str, npt.ArrayLike], dtypes: Mapping[str, np.dtype[Any]], field: str
) -> dict[str, Array]:
    """`as_array` over a mapping (inputs by input name, cotangents by output name, ...)."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{field}: expected a dict of name -> value, got {type(values).__name__}")
    return {n: as_array(n, v, dtypes.get(n), field) for n, v in values.items()}


def scalar_output(meta: GraphMeta, of: str) -> np.dtype[Any]:
    """The dtype of output ``of``, checked to be a scalar where the shape is known."""
    shape = meta.output_shapes.get(of)
    if shape is not None and shape != () and all(d >= 0 for d in shape):
        reason = (
            f"grad needs a scalar output, but {of!r} has shape {shape}; "
            "use jacobian() or vjp() for non-scalar outputs"
        )
        raise InvalidArgument(reason, field_violations=[("of", reason)])
    return meta.output_dtypes.get(of, np.dtype("float64"))


def the_output(meta: GraphMeta, of: str | None) -> str:
    """``of``, or the graph's only output when None."""
    if of is not None:
        return of
    if len(meta.outputs) != 1:
        raise TypeError(f"grad: the graph has outputs {list(meta.outputs)}; say which with of=")
    return meta.outputs[0]


def mode_enum(mode: str) -> int:
    """The wire JacobianMode of "auto", "forward" or "reverse"."""
    try:
        return MODES[mode]
    except KeyError:
        reason = f"unknown mode {mode!r}; use one of {', '.join(MODES)}"
        raise InvalidArgument(reason, field_violations=[("mode", reason)]) from None


# ----------------------------------------------------------------------------------------------
# Requests and responses


class Call:
    """One call's arguments, resolved once for every client (no I/O): the graph, the inputs and
    the seeds (cotangents or tangents) as arrays, the names asked for, and how the result is
    shaped (an array when the names were given as a str, else a dict ordered as asked)."""

    __slots__ = ("feeds", "meta", "mode", "of", "seeds", "single", "wrt")

    def __init__(
        self,
        meta: GraphMeta,
        feeds: dict[str, Array],
        seeds: dict[str, Array],
        of: tuple[str, ...],
        wrt: tuple[str, ...],
        single: bool,
        mode: str = "auto",
    ) -> None:
        self.meta, self.feeds, self.seeds = meta, feeds, seeds
        self.of, self.wrt, self.single, self.mode = of, wrt, single, mode

    def by_of(self, values: dict[str, Array]) -> Any:
        """Values by output name (jvp), shaped as asked."""
        return one_or_dict(values, self.of, self.single)

    def by_wrt(self, values: dict[str, Array]) -> Any:
        """Values by input name (grad, vjp), shaped as asked."""
        return one_or_dict(values, self.wrt, self.single)

    def jacobians(self, result: dict[str, dict[str, Array]]) -> Any:
        """J[of][wrt], shaped as asked."""
        return select(result, self.of, self.wrt, self.single)


def evaluate_call(graph: GraphLike, inputs: Mapping[str, npt.ArrayLike], outputs: Names) -> Call:
    """The arguments of ``evaluate``; ``of`` holds the outputs asked for (() for all)."""
    meta = graph_meta(graph)
    wanted, _ = names(outputs, (), "outputs")
    return Call(meta, arrays(inputs, meta.input_dtypes, "inputs"), {}, wanted, (), False)


def jacobian_call(
    graph: GraphLike, inputs: Mapping[str, npt.ArrayLike], of: Names, wrt: Names, mode: str
) -> Call:
    """The arguments of ``jacobian`` (``mode`` checked)."""
    meta = graph_meta(graph)
    of_names, one_of = names(of, meta.outputs, "of")
    wrt_names, one_wrt = names(wrt, meta.float_inputs, "wrt")
    feeds = arrays(inputs, meta.input_dtypes, "inputs")
    mode_enum(mode)
    return Call(meta, feeds, {}, of_names, wrt_names, one_of and one_wrt, mode)


def grad_call(
    graph: GraphLike, inputs: Mapping[str, npt.ArrayLike], of: str | None, wrt: Names
) -> Call:
    """The arguments of ``grad``: a vjp of the scalar output ``of`` seeded with 1."""
    meta = graph_meta(graph)
    of = the_output(meta, of)
    seed = np.ones((), scalar_output(meta, of))
    return _vjp_call(meta, inputs, {of: seed}, wrt)


def vjp_call(
    graph: GraphLike,
    inputs: Mapping[str, npt.ArrayLike],
    cotangents: Mapping[str, npt.ArrayLike],
    wrt: Names,
) -> Call:
    """The arguments of ``vjp``: the cotangents are the seeds."""
    return _vjp_call(graph_meta(graph), inputs, cotangents, wrt)


def _vjp_call(
    meta: GraphMeta,
    inputs: Mapping[str, npt.ArrayLike],
    cotangents: Mapping[str, npt.ArrayLike],
    wrt: Names,
) -> Call:
    wrt_names, single = names(wrt, meta.float_inputs, "wrt")
    feeds = arrays(inputs, meta.input_dtypes, "inputs")
    seeds = arrays(cotangents, meta.output_dtypes, "cotangents")
    return Call(meta, feeds, seeds, (), wrt_names, single)


def jvp_call(
    graph: GraphLike,
    inputs: Mapping[str, npt.ArrayLike],
    tangents: Mapping[str, npt.ArrayLike],
    of: Names,
) -> Call:
    """The arguments of ``jvp``: the tangents are the seeds."""
    meta = graph_meta(graph)
    of_names, single = names(of, meta.outputs, "of")
    feeds = arrays(inputs, meta.input_dtypes, "inputs")
    seeds = arrays(tangents, meta.input_dtypes, "tangents")
    return Call(meta, feeds, seeds, of_names, (), single)


def evaluate_request(call: Call) -> pb.EvaluateRequest:
    """An EvaluateRequest without its graph source (see `GraphIds.attach`)."""
    request = pb.EvaluateRequest(outputs=call.of)
    tensor_codec.fill_tensor_map(request.inputs, call.feeds)  # no Tensor built, then copied
    return request


def decode_outputs(call: Call, response: pb.EvaluateResponse) -> dict[str, Array]:
    """The outputs of an EvaluateResponse, in the order asked (or the graph's)."""
    return decode(response.outputs, call.of or call.meta.outputs)


def jacobian_request(call: Call) -> pb.JacobianRequest:
    """A JacobianRequest without its graph source."""
    request = pb.JacobianRequest(of=call.of, wrt=call.wrt, mode=MODES[call.mode])
    tensor_codec.fill_tensor_map(request.inputs, call.feeds)
    return request


def stream_jacobian_request(request: pb.JacobianRequest) -> pb.StreamJacobianRequest:
    """The StreamJacobianRequest asking for the same Jacobians (graph source included)."""
    stream = pb.StreamJacobianRequest(
        inputs=request.inputs, of=request.of, wrt=request.wrt, mode=request.mode
    )
    if request.HasField("graph"):
        stream.graph.CopyFrom(request.graph)
    else:
        stream.graph_id = request.graph_id
    return stream


def vjp_request(call: Call) -> pb.VjpRequest:
    """A VjpRequest (of grad or vjp) without its graph source."""
    request = pb.VjpRequest(wrt=call.wrt)
    tensor_codec.fill_tensor_map(request.inputs, call.feeds)
    tensor_codec.fill_tensor_map(request.cotangents, call.seeds)
    return request


def jvp_request(call: Call) -> pb.JvpRequest:
    """A JvpRequest without its graph source."""
    request = pb.JvpRequest(of=call.of)
    tensor_codec.fill_tensor_map(request.inputs, call.feeds)
    tensor_codec.fill_tensor_map(request.tangents, call.seeds)
    return request


class TrainCall:
    """A train call's arguments resolved (no I/O): the TrainRequest without its graph source
    and data, the parameters (none when resuming) and data as arrays, and the step count and
    first step for the progress bar."""

    __slots__ = ("arrays", "feeds", "meta", "request", "start", "total")

    def __init__(
        self,
        meta: GraphMeta,
        feeds: dict[str, Array],
        arrays: dict[str, Array],
        request: tpb.TrainRequest,
        total: int | None,
        start: int,
    ) -> None:
        self.meta, self.feeds, self.arrays = meta, feeds, arrays
        self.request, self.total, self.start = request, total, start


def train_call(
    graph: GraphLike,
    *,
    loss: str | None,
    params: Mapping[str, npt.ArrayLike],
    data: Mapping[str, npt.ArrayLike],
    optimizer: Optimizer,
    schedule: Schedule | None,
    batch_size: int | None,
    epochs: int | None,
    max_steps: int | None,
    seed: int,
    shuffle: bool,
    report_every: int,
    checkpoint_every: int | None,
    resume: Checkpoint | None,
) -> TrainCall:
    """The arguments of ``train``. With ``resume``, the checkpoint's parameters are used and
    ``params`` is not sent."""
    meta = graph_meta(graph)
    loss = the_output(meta, loss)
    feeds = arrays(params, meta.input_dtypes, "params")
    data_arrays = arrays(data, meta.input_dtypes, "data")
    if resume is not None and not isinstance(resume, Checkpoint):
        reason = f"expected a gs.Checkpoint (run.checkpoint), got {type(resume).__name__}"
        raise InvalidInput(f"resume_from: {reason}", field_violations=[("resume_from", reason)])
    if resume is not None:
        feeds = {}
    request = tpb.TrainRequest(
        loss=loss,
        batch_size=batch_size or 0,
        epochs=epochs or 0,
        max_steps=max_steps or 0,
        shuffle=bool(shuffle),
        seed=int(seed),
        optimizer=optimizer_proto(optimizer),
        report_every=report_every or 0,
        checkpoint_every=checkpoint_every or 0,
    )
    tensor_codec.fill_tensor_map(request.params, feeds)
    sched = schedule_proto(schedule)
    if sched is not None:
        request.schedule.CopyFrom(sched)
    if resume is not None:
        request.resume_from.CopyFrom(resume.to_proto())
    total = total_steps(num_examples(data_arrays), batch_size or 0, epochs, max_steps)
    start = resume.step if resume is not None else 0
    return TrainCall(meta, feeds, data_arrays, request, total, start)


#: Data up to this many bytes is sent inline with the TrainRequest; more is uploaded once with
#: PutDataset and referenced by its content id.
INLINE_DATA_BYTES = 4 << 20


class TrainData:
    """How a run's data travels: inline, or as a dataset id (uploaded when the server does not
    have it, and again when it forgets it)."""

    __slots__ = ("arrays", "id", "inline")

    def __init__(self, arrays: Mapping[str, Array]) -> None:
        self.arrays = dict(arrays)
        self.inline = sum(a.nbytes for a in self.arrays.values()) <= INLINE_DATA_BYTES
        self.id = "" if self.inline else dataset_id(self.arrays)

    def attach(self, request: tpb.TrainRequest) -> None:
        """Put the data in ``request``: inline, or its dataset id."""
        if self.inline:
            tensor_codec.fill_tensor_map(request.inline_data.tensors, self.arrays)
        else:
            request.dataset_id = self.id


def is_dataset_not_found(err: Exception) -> bool:
    """NOT_FOUND for an unknown dataset_id."""
    return isinstance(err, NotFound) and err.reason == "DATASET_NOT_FOUND"


#: Attempts of a Train stream: the first, then one after NOT_FOUND of the graph_id and one
#: after NOT_FOUND of the dataset_id.
TRAIN_ATTEMPTS = 3
#: What `RemoteTrain.retry` answers: send the request again, or upload the data first.
RETRY, UPLOAD = "retry", "upload"


class RemoteTrain:
    """The plumbing of a Train stream for `Client` and `AsyncClient`, without the I/O: the
    request of each attempt (graph by id when known, data inline or by dataset id), what to do
    when an attempt fails before its first event, and cancelling the latest call."""

    __slots__ = ("_calls", "_ids", "_sent_id", "call", "data")

    def __init__(self, call: TrainCall, graph_ids: GraphIds) -> None:
        self.call = call
        self.data = TrainData(call.arrays)
        self._ids = graph_ids
        self._sent_id: str | None = None
        self._calls: list[Any] = []

    def request(self) -> tpb.TrainRequest:
        """The request of the next attempt, its graph source and data attached."""
        request = self.call.request
        if not self._calls:
            self.data.attach(request)
        self._sent_id = self._ids.attach(request, self.call.meta)
        return request

    def started(self, call: R) -> R:
        """Record the call of an attempt (for `cancel`); returns it."""
        self._calls.append(call)
        return call

    def retry(self, attempt: int, err: Exception) -> str:
        """After attempt ``attempt`` (0-based) failed before its first event with ``err``:
        `RETRY` (the full graph is now attached), `UPLOAD` (upload ``data.arrays`` with
        PutDataset, give its id to `uploaded`, retry), or "" (raise ``err``)."""
        if attempt + 1 >= TRAIN_ATTEMPTS:
            return ""
        if self._ids.resend(self.call.request, self.call.meta, self._sent_id, err):
            return RETRY
        if not self.data.inline and is_dataset_not_found(err):
            return UPLOAD
        return ""

    def uploaded(self, dataset_id: str) -> None:
        """Refer to the dataset just uploaded."""
        self.call.request.dataset_id = dataset_id

    def first(self, event: tpb.TrainEvent) -> Event:
        """The first event of the stream (remembering the graph_id), decoded."""
        self._ids.remember(self.call.meta, event.graph_id)
        return decode_event(event)

    def cancel(self) -> None:
        """Cancel the latest call, if any."""
        if self._calls:
            self._calls[-1].cancel()


def decode(tensors_map: Mapping[str, Any], order: Sequence[str] = ()) -> dict[str, Array]:
    """A map of Tensors as read-only arrays, in ``order`` first (then the rest)."""
    from_tensor = tensor_codec.from_tensor
    if len(order) == len(tensors_map):  # the common case: exactly the names asked for
        got = [tensors_map.get(k) for k in order]  # (indexing a message map would insert)
        if None not in got:
            return {k: from_tensor(t, field=k) for k, t in zip(order, got, strict=True)}
    keys = [k for k in order if k in tensors_map]
    keys += [k for k in tensors_map if k not in keys]
    return {k: from_tensor(tensors_map[k], field=k) for k in keys}


def decode_jacobian(response: pb.JacobianResponse) -> dict[str, dict[str, Array]]:
    """J[of][wrt] from the dense blocks of a JacobianResponse."""
    out: dict[str, dict[str, Array]] = {}
    for block in response.blocks:
        if block.WhichOneof("structure") != "dense":
            raise GradserveError(
                f"Jacobian block d{block.of}/d{block.wrt} uses a representation this SDK "
                "does not know; upgrade gradserve_client"
            )
        array = tensor_codec.from_tensor(block.dense, field=f"{block.of}/{block.wrt}")
        out.setdefault(block.of, {})[block.wrt] = array.reshape(tuple(block.shape))
    return out


class JacobianAssembler:
    """Assembles the row blocks of StreamJacobian into dense J[of][wrt] arrays."""

    def __init__(self) -> None:
        self._dense: dict[tuple[str, str], Array] = {}
        self._missing: dict[tuple[str, str], int] = {}  # rows not yet received
        self.graph_id = ""

    def add(self, block: pb.JacobianRowBlock) -> None:
        """Copy one row block into its Jacobian."""
        self.graph_id = block.graph_id or self.graph_id
        key = (block.of, block.wrt)
        rows = tensor_codec.from_tensor(block.rows, field=f"{block.of}/{block.wrt}")
        dense = self._dense.get(key)
        shape = tuple(block.shape)
        if dense is None:
            dense = self._dense[key] = np.empty(shape, rows.dtype)
            self._missing[key] = math.prod(shape[: len(shape) - (rows.ndim - 1)])
        start, count = block.row_start, block.row_count
        if count:
            dense.reshape(-1, rows[0].size)[start : start + count] = rows.reshape(count, -1)
        self._missing[key] -= count

    def result(self, of: Sequence[str], wrt: Sequence[str]) -> dict[str, dict[str, Array]]:
        """J[of][wrt]; raises `DataLoss` if the stream ended before every row arrived."""
        out: dict[str, dict[str, Array]] = {}
        for o in of:
            for w in wrt:
                dense = self._dense.get((o, w))
                if dense is None or self._missing[(o, w)] > 0:
                    raise DataLoss(f"StreamJacobian ended before all of d{o}/d{w} arrived")
                out.setdefault(o, {})[w] = dense
        return out


def select(
    result: dict[str, dict[str, Array]], of: Sequence[str], wrt: Sequence[str], single: bool
) -> Array | dict[str, dict[str, Array]]:
    """The user's view of Jacobians: an array when of and wrt were single names, else J[of][wrt]
    ordered as asked."""
    if single:
        return result[of[0]][wrt[0]]
    return {o: {w: result[o][w] for w in wrt} for o in of}


def one_or_dict(values: dict[str, Array], order: Sequence[str], single: bool) -> Any:
    """An array when one name was given as a str, else a dict ordered as asked."""
    if single:
        return values[order[0]]
    return {n: values[n] for n in order}


# ----------------------------------------------------------------------------------------------
# Server description


@dataclass(frozen=True, slots=True)
class AttrInfo:
    """One attribute of an operator."""

    name: str
    kind: str  # "int", "float", "ints", "floats", "string" or "tensor"
    required: bool
    default: str


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """One operator of the registry, as `Client.operators` lists it."""

    name: str
    arity: int  # the most operands; -1: variadic
    attrs: tuple[AttrInfo, ...]
    differentiable: bool
    doc: str
    min_arity: int  # the fewest operands (trailing ones may be optional)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What `Client.server_info` returns: the version, opset, limits (0 = none) and features."""

    version: str
    opset: int
    limits: Mapping[str, int]
    features: tuple[str, ...]


def decode_operators(response: pb.ListOperatorsResponse) -> list[OperatorInfo]:
    """The operators of a ListOperatorsResponse."""
    return [
        OperatorInfo(
            name=op.name,
            arity=op.arity,
            attrs=tuple(
                AttrInfo(
                    a.name,
                    pb.AttrKind.Name(a.kind).removeprefix("ATTR_KIND_").lower(),
                    a.required,
                    a.default_value,
                )
                for a in op.attrs
            ),
            differentiable=op.differentiable,
            doc=op.doc,
            min_arity=op.min_arity,
        )
        for op in response.operators
    ]


def decode_server_info(response: pb.GetServerInfoResponse) -> ServerInfo:
    """The ServerInfo of a GetServerInfoResponse."""
    limits = response.limits
    return ServerInfo(
        version=response.version,
        opset=response.opset,
        limits={f.name: getattr(limits, f.name) for f in limits.DESCRIPTOR.fields},
        features=tuple(response.features),
    )


# ----------------------------------------------------------------------------------------------
# Channels


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS settings for `Client` and `AsyncClient`.

    Each of ``ca`` (the CA certificates to trust; None: the system's), ``cert`` and ``key``
    (a client certificate chain and its private key, for mutual TLS) is a file path or the PEM
    bytes. ``server_name`` overrides the name checked against the server's certificate.
    """

    ca: str | os.PathLike[str] | bytes | None = None
    cert: str | os.PathLike[str] | bytes | None = None
    key: str | os.PathLike[str] | bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The ``grpc.ssl_channel_credentials`` of these settings."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: give both cert and key (mutual TLS), or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca),
            private_key=_pem(self.key),
            certificate_chain=_pem(self.cert),
        )


def _pem(value: str | os.PathLike[str] | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def channel_options(
    *,
    retries: int,
    max_message_bytes: int,
    load_balancing: str | None,
    tls: TLS | None,
    extra: Sequence[tuple[str, Any]] = (),
) -> list[tuple[str, Any]]:
    """The channel options: message limits, and a service config with a retry policy for
    UNAVAILABLE (gRPC's own retries, with exponential backoff) and the load-balancing policy."""
    config: dict[str, Any] = {}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE}, {"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    # gRPC caps maxAttempts at 5.
                    "maxAttempts": min(retries + 1, 5),
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    if load_balancing:
        config["loadBalancingConfig"] = [{load_balancing: {}}]
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
    ]
    if config:
        options.append(("grpc.service_config", json.dumps(config)))
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    options.extend(extra)
    return options


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The per-call metadata: the bearer token, if any."""
    return (("authorization", f"Bearer {token}"),) if token else None


class GrpcClientBase:
    """What `Client` and `AsyncClient` share: the constructor (channel options, metadata, stubs,
    graph-id cache). Each opens its own kind of channel (`_open_channel`)."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TLS | None = None,
        timeout: float | None = None,
        retries: int = 4,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        load_balancing: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Any] = (),
    ) -> None:
        opts = channel_options(
            retries=retries,
            max_message_bytes=max_message_bytes,
            load_balancing=load_balancing,
            tls=tls,
            extra=options,
        )
        self._channel = self._open_channel(target, tls, opts, interceptors)
        self.target = target
        self.timeout = timeout
        self._metadata = call_metadata(token)
        self._stub = pb_grpc.GradientStub(self._channel)
        self._evaluate_wire = _wire.evaluate_method(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._graph_ids = GraphIds()

    def _evaluate(self, call: Call) -> tuple[Any, Any]:
        """(method, request) of an Evaluate call: large inputs go through the wire path
        (`_wire`: values copied once each way), others through the generated stub."""
        if _wire.is_large(call.feeds):
            return self._evaluate_wire, _wire.EvaluateRequest(call.feeds, call.of)
        return self._stub.Evaluate, evaluate_request(call)

    def _open_channel(
        self,
        target: str,
        tls: TLS | None,
        options: list[tuple[str, Any]],
        interceptors: Sequence[Any],
    ) -> Any:
        raise NotImplementedError
