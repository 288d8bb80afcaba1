"""Graphs as the clients send them: `GraphMeta` (a graph version's wire message, content key,
dtypes and outputs, computed once) and `GraphIds` (which graphs the server already holds, so
that a request carries the short ``graph_id`` instead of the whole graph)."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from .errors import NotFound
from .graph import Graph
from .proto import graph_pb2, tensor_codec

#: A graph as the clients accept it: a `Graph`, or its wire message.
GraphLike: TypeAlias = "Graph | graph_pb2.Graph"
_FLOAT_KINDS = "f"


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
