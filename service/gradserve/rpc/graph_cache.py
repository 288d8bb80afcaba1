"""The graph cache: a bounded, thread-safe LRU of graph_id -> graph, with its Programs.

A graph with only concrete input shapes is validated once into a Program, and its graph_id is
``Program.digest``. A graph whose inputs declare -1 dimensions is kept as a GraphDef (its
graph_id is the content hash of that GraphDef) and gets one Program per concrete input-shape
signature, built on first use. Derivative programs are cached by the core, keyed by Program.

Full-graph requests are looked up by a hash of their serialized bytes first, so a client that
keeps sending the same graph pays for hashing, not for decoding and validation.

The cache is bounded in entries and in bytes (`CachedGraph.nbytes`: the constants' bytes and a
rough size per node of the graph and of each Program), checked as graphs are added; the newest
graph is kept even alone over the byte budget, since its request uses it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gradserve_client.proto import graph_pb2

from gradserve.autodiff import OPSET, GraphDef, GraphError, Program
from gradserve.autodiff.cache import NODE_BYTES, constant_bytes
from gradserve.autodiff.ir import Cancel
from gradserve.rpc.codec import graph_from_onnx, graph_from_proto
from gradserve.rpc.errors import (
    GRAPH_NOT_FOUND,
    INVALID_GRAPH,
    InvalidArgument,
    NotFound,
    from_graph_error,
)

# Programs kept per dynamic-shape graph (one per distinct input-shape signature).
PROGRAMS_PER_GRAPH = 32

Hook = Callable[[], None]


@dataclass(eq=False)
class CachedGraph:
    """One graph: its definition and its Program(s)."""

    graph_id: str
    graph: GraphDef
    program: Program | None  # set when the graph has no -1 dimensions
    wire_key: str = ""
    _programs: OrderedDict[tuple, Program] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._constant_bytes = constant_bytes(self.graph.nodes)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.graph.inputs)

    @property
    def nbytes(self) -> int:
        """About what this entry holds: the constants (shared by its Programs) and NODE_BYTES per
        node of the graph and of each Program."""
        programs = len(self._programs) + (self.program is not None)
        return self._constant_bytes + NODE_BYTES * len(self.graph.nodes) * (1 + programs)

    def program_for(
        self, shapes: Mapping[str, tuple[int, ...]], max_nodes: int, cancel: Cancel = None
    ) -> Program:
        """The Program for these input shapes (the one Program of a static graph)."""
        if self.program is not None:
            return self.program
        key = tuple(shapes.get(i.name) for i in self.graph.inputs if -1 in i.shape)
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                return program
        try:
            concrete = self.graph.specialize(shapes)
        except GraphError as exc:  # a fed shape that does not fit the declared one
            raise InvalidArgument(f'inputs["{exc.node}"].shape', exc.reason) from None
        for spec in concrete.inputs:
            if -1 in spec.shape:
                raise InvalidArgument(
                    f'inputs["{spec.name}"]',
                    "missing a value for this input (its shape has a -1 dimension)",
                )
        try:
            program = Program.build(concrete, max_nodes=max_nodes, cancel=cancel)
        except GraphError as exc:
            raise from_graph_error(exc, self.input_names) from None
        with self._lock:
            self._programs[key] = program
            while len(self._programs) > PROGRAMS_PER_GRAPH:
                self._programs.popitem(last=False)
        return program


class GraphCache:
    """A bounded LRU of graphs, by graph_id, safe to share between worker threads."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._by_id: OrderedDict[str, CachedGraph] = OrderedDict()
        self._by_wire: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.on_hit: list[Hook] = []
        self.on_miss: list[Hook] = []

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, graph_id: str) -> bool:
        return graph_id in self._by_id

    def _hit(self) -> None:
        self.hits += 1
        for hook in self.on_hit:
            hook()

    def _miss(self) -> None:
        self.misses += 1
        for hook in self.on_miss:
            hook()

    def get(self, graph_id: str) -> CachedGraph:
        """The graph with this id; NOT_FOUND (reason GRAPH_NOT_FOUND) if it is not cached.

        A hit takes no lock: the lookup and the move to the end are one dict operation each,
        atomic under the GIL (as in the program cache), and every RPC makes one."""
        entry = self._by_id.get(graph_id)
        if entry is None:
            self._miss()
            raise NotFound(
                f"unknown graph_id {graph_id!r} (the server restarted or evicted it): "
                "send the full graph",
                reason=GRAPH_NOT_FOUND,
                metadata={"graph_id": graph_id},
            )
        try:  # noqa: SIM105 (contextlib.suppress costs more than the move)
            self._by_id.move_to_end(graph_id)
        except KeyError:  # evicted by another thread just now: still this call's graph
            pass
        self._hit()
        return entry

    def put_proto(
        self, pb: graph_pb2.Graph, *, max_nodes: int, max_elements: int, cancel: Cancel = None
    ) -> CachedGraph:
        """The cached graph for a full Graph message: decoded, validated and added on a miss;
        the core's Cancelled if ``cancel`` says so meanwhile."""
        wire_key = hashlib.sha256(pb.SerializeToString(deterministic=True)).hexdigest()
        entry = self._by_bytes(wire_key)
        if entry is not None:
            return entry
        self._miss()
        if pb.opset not in (0, OPSET):
            raise InvalidArgument(
                "graph.opset",
                f"opset {pb.opset} is not supported; this server implements opset {OPSET}",
                reason=INVALID_GRAPH,
            )
        graph = graph_from_proto(pb, max_nodes=max_nodes, max_elements=max_elements, cancel=cancel)
        if graph.has_dynamic_shapes:
            program = None
            graph_id = graph.digest
        else:
            try:
                program = Program.build(graph, max_nodes=max_nodes, cancel=cancel)
            except GraphError as exc:
                raise from_graph_error(exc, (i.name for i in graph.inputs)) from None
            graph_id = program.digest
        return self._insert(CachedGraph(graph_id, graph, program, wire_key))

    def put_onnx(
        self, model: bytes, *, max_nodes: int, max_elements: int, cancel: Cancel = None
    ) -> CachedGraph:
        """The cached graph of a serialized ONNX model: converted and added on a miss, so a
        client that sends the same model again pays for hashing it, not for converting it."""
        onnx_key = "onnx:" + hashlib.sha256(model).hexdigest()
        entry = self._by_bytes(onnx_key)
        if entry is not None:
            return entry
        pb = graph_from_onnx(model)
        entry = self.put_proto(pb, max_nodes=max_nodes, max_elements=max_elements, cancel=cancel)
        with self._lock:
            if entry.graph_id in self._by_id:
                self._by_wire[onnx_key] = entry.graph_id
        return entry

    def _by_bytes(self, key: str) -> CachedGraph | None:
        """The graph whose message (or ONNX model) hashes to ``key``, counted as a hit."""
        with self._lock:
            graph_id = self._by_wire.get(key)
            entry = self._by_id.get(graph_id) if graph_id else None
            if entry is not None:
                self._by_id.move_to_end(entry.graph_id)
        if entry is not None:
            self._hit()
        return entry

    def _insert(self, entry: CachedGraph) -> CachedGraph:
        with self._lock:
            existing = self._by_id.get(entry.graph_id)
            if existing is not None:  # the same graph, sent with different bytes
                self._by_wire[entry.wire_key] = existing.graph_id
                self._by_id.move_to_end(existing.graph_id)
                return existing
            self._by_id[entry.graph_id] = entry
            self._by_wire[entry.wire_key] = entry.graph_id
            while len(self._by_id) > 1 and (len(self._by_id) > self.capacity or self._over_bytes()):
                _, evicted = self._by_id.popitem(last=False)
                for key in [k for k, v in self._by_wire.items() if v == evicted.graph_id]:
                    del self._by_wire[key]
        return entry

    def _over_bytes(self) -> bool:
        return self.max_bytes is not None and self.nbytes > self.max_bytes

    @property
    def nbytes(self) -> int:
        """About the bytes the cached graphs hold (see `CachedGraph.nbytes`)."""
        return sum(entry.nbytes for entry in list(self._by_id.values()))
