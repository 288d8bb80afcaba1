"""The steps every RPC's request goes through, as functions of explicit arguments.

`resolve` finds the request's graph (the cache), `prepare` adds its decoded inputs and Program,
`names` and `of_wrt` check the names a request lists, `jacobian_mode` reads its mode, and
`cancel_callback` binds the core's cancel callback to the call's deadline and cancellation.
The servicer, the derivative RPCs and Train all use them; none of them knows the servicer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np
from gradserve_client.proto import gradient_service_pb2 as pb

from gradserve.autodiff import Program, memory
from gradserve.autodiff.ir import Cancel
from gradserve.config import Settings
from gradserve.rpc.codec import decode_tensors
from gradserve.rpc.errors import InvalidArgument
from gradserve.rpc.graph_cache import CachedGraph, GraphCache

_MODES = {
    pb.JACOBIAN_MODE_UNSPECIFIED: "auto",
    pb.JACOBIAN_MODE_AUTO: "auto",
    pb.JACOBIAN_MODE_FORWARD: "forward",
    pb.JACOBIAN_MODE_REVERSE: "reverse",
}

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


def resolve(
    request: Any, cache: GraphCache, settings: Settings, cancel: Cancel = None
) -> CachedGraph:
    """The graph of a request with a ``graph_source`` (graph, graph_id or onnx_model); a full
    graph is decoded and validated under ``cancel`` (the call's deadline)."""
    # Every plan this request runs is checked against the budget first. grpc runs each RPC
    # in a context of its own (its stream's messages too), so this holds for this one only.
    memory.set_limit(settings.max_request_bytes)
    source = request.WhichOneof("graph_source")
    if source == "graph":
        return cache.put_proto(
            request.graph,
            max_nodes=settings.max_graph_nodes,
            max_elements=settings.max_tensor_elements,
            cancel=cancel,
        )
    if source == "graph_id" and request.graph_id:
        return cache.get(request.graph_id)
    if source == "onnx_model":
        return cache.put_onnx(
            request.onnx_model,
            max_nodes=settings.max_graph_nodes,
            max_elements=settings.max_tensor_elements,
            cancel=cancel,
        )
    raise InvalidArgument("graph", "set graph (the full graph), graph_id or onnx_model")


class Call:
    """A request's graph entry, Program, and decoded inputs."""

    __slots__ = ("entry", "inputs", "program")

    def __init__(self, entry: CachedGraph, program: Program, inputs: dict[str, np.ndarray]):
        self.entry = entry
        self.program = program
        self.inputs = inputs

    @property
    def graph_id(self) -> str:
        return self.entry.graph_id


def prepare(request: Any, cache: GraphCache, settings: Settings, cancel: Cancel = None) -> Call:
    """The request's graph, its decoded ``inputs`` and the Program for their shapes; graph
    decoding and validation stop (the core's Cancelled) once ``cancel()`` is true."""
    entry = resolve(request, cache, settings, cancel)
    inputs = decode_tensors(request.inputs, "inputs", settings.max_tensor_elements)
    program = entry.program
    if program is None:  # a graph with -1 dimensions: the Program for these shapes
        shapes = {k: v.shape for k, v in inputs.items()}
        program = entry.program_for(shapes, settings.max_graph_nodes, cancel)
    return Call(entry, program, inputs)


def float_inputs(program: Program) -> list[str]:
    """The inputs a derivative is taken by when the request lists none."""
    return [i.name for i in program.inputs if program.types[i.name].is_float]


def names(
    program: Program, listed: Sequence[str], field: str, default: Sequence[str]
) -> tuple[str, ...]:
    """The names a request ``field`` lists (``default`` if none), each a value of the graph and
    listed once."""
    chosen = tuple(listed) or tuple(default)
    for name in chosen:
        if name not in program.types:
            raise InvalidArgument(f'{field}["{name}"]', "not a value of the graph")
    if len(set(chosen)) != len(chosen):
        raise InvalidArgument(field, "a name is listed twice")
    return chosen


def of_wrt(program: Program, request: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A derivative request's ``of`` (default: the outputs) and ``wrt`` (default: the float
    inputs; each must be an input)."""
    return names(program, request.of, "of", program.outputs), wrt_names(program, request.wrt)


def wrt_names(program: Program, asked: Sequence[str]) -> tuple[str, ...]:
    """The inputs a derivative is by: ``asked`` (default: the float inputs), each an input.
    That they are floats the core checks (``check_targets``), naming ``wrt["k"]`` too."""
    wrt = names(program, asked, "wrt", float_inputs(program))
    inputs = set(program.input_names)
    for name in wrt:
        if name not in inputs:
            raise InvalidArgument(f'wrt["{name}"]', "not an input of the graph")
    if not wrt:
        raise InvalidArgument("wrt", "the graph has no float inputs to differentiate by")
    return wrt


def jacobian_mode(request: Any) -> str:
    """The core's name of the request's JacobianMode."""
    mode = _MODES.get(request.mode)
    if mode is None:
        raise InvalidArgument("mode", f"unknown JacobianMode {request.mode}")
    return mode
