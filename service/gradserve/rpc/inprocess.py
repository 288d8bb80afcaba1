"""The server's in-process entry point: what `gradserve_client.LocalClient` runs instead of RPCs.

Graphs are converted and validated by the server's own graph cache, training runs are checked
and bound by the Train RPC's own code, and errors come out as the server's `RpcError`s, so a
LocalClient reports the codes, messages, field violations and reasons a server would. No
limits apply in process (the caller's own memory is at stake).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from gradserve_client.proto import graph_pb2
from gradserve_client.proto import training_pb2 as tpb

from gradserve import training as tr
from gradserve.autodiff import GraphError, Program
from gradserve.rpc import training
from gradserve.rpc.codec import graph_to_proto
from gradserve.rpc.errors import RpcError, from_graph_error
from gradserve.rpc.graph_cache import CachedGraph, GraphCache

__all__ = ["InProcess"]

_UNLIMITED = sys.maxsize


class InProcess:
    """Graphs validated once into Programs (a bounded cache), training runs, and the
    server's view of their errors."""

    #: What the core and this layer raise for bad graphs and requests (see `rpc_error`).
    ERRORS = (GraphError, RpcError)

    def __init__(self, max_graphs: int) -> None:
        self._max_graphs = max_graphs
        self._cache = GraphCache(max_graphs)

    def clear(self) -> None:
        """Forget every graph and its Programs."""
        self._cache = GraphCache(self._max_graphs)

    def graph(self, proto: graph_pb2.Graph) -> CachedGraph:
        """The validated graph of a Graph message (cached by its bytes)."""
        return self._cache.put_proto(proto, max_nodes=_UNLIMITED, max_elements=_UNLIMITED)

    @staticmethod
    def rpc_error(exc: Exception, input_names: Iterable[str], *, running: bool) -> RpcError:
        """One of `ERRORS` as the RpcError a server would answer: ``code``, ``message``,
        ``reason``, ``metadata`` and, for INVALID_ARGUMENT, ``violations`` (field,
        description). ``running``: raised while running the graph (errors name request
        fields)."""
        if isinstance(exc, RpcError):
            return exc
        return from_graph_error(exc, input_names, running=running)

    @staticmethod
    def program(entry: CachedGraph, shapes: Mapping[str, tuple[int, ...]]) -> Program:
        """The Program of ``entry`` for these input shapes."""
        return entry.program_for(shapes, _UNLIMITED)

    @staticmethod
    def graph_message(program: Program) -> graph_pb2.Graph:
        """A Program (a derivative program, say) as the Graph message a server answers with."""
        return graph_to_proto(program)

    @staticmethod
    def train(
        entry: CachedGraph,
        request: tpb.TrainRequest,
        params: Mapping[str, np.ndarray],
        data: Mapping[str, np.ndarray],
        cancel: Callable[[], bool] | None,
    ) -> Iterator[tuple[str, Any]]:
        """A run's events as the Train RPC would stream them: ("step", `training.StepEvent`),
        ("checkpoint", a Checkpoint message), then ("result", `training.ResultEvent`).

        Raises `ERRORS` for a bad run (before its first step) or a failed step, and the core's
        ``Cancelled`` once ``cancel()`` is true."""
        run = training.prepare(
            entry,
            request,
            params,
            data,
            max_nodes=_UNLIMITED,
            max_elements=_UNLIMITED,
            cancel=cancel,
        )
        for ev in run.events:
            if type(ev) is tr.StepEvent:
                yield "step", ev
            elif type(ev) is tr.CheckpointEvent:
                proto = training.checkpoint_to_proto(ev.checkpoint, run.graph_id, run.batch_size)
                yield "checkpoint", proto
            else:
                yield "result", ev
