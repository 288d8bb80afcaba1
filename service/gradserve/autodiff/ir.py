"""The IR: an unvalidated `GraphDef` and the validated, typed, immutable `Program`.

A `Program` is what every other part of the core works on: nodes in topological order, every
value's shape and dtype inferred, and a content hash that identifies it across processes.
Validation never recurses, so a 100,000-node chain is as easy as a 3-node one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from gradserve_client.opset import DTYPES, AttrValue, TensorType

#: A cancel callback: True once the caller wants the work stopped (a deadline, a client gone).
Cancel = Callable[[], bool] | None

#: How many nodes validation (and decoding, rpc/codec.py; compilation, executor.py; the
#: derivative transforms, transforms.py) handles between two looks at the caller's cancel
#: callback: a 40,000-node graph stops within a few milliseconds of its deadline.
CANCEL_EVERY_NODES = 512


class Cancelled(Exception):
    """The caller's `cancel` callback asked the computation (or validation) to stop."""


def check_cancel(cancel: Cancel, i: int) -> None:
    """Raise Cancelled if ``cancel`` says so; asked only every CANCEL_EVERY_NODES-th node."""
    if cancel is not None and i % CANCEL_EVERY_NODES == 0 and cancel():
        raise Cancelled


def value_name(name: str, op: str) -> str:
    """How a message names a value of a plan; derivative programs name theirs ``%op12``."""
    if op == "input":
        return f'input "{name}"'
    if name.startswith("%"):
        return f'the derivative\'s value "{name}" ({op})'
    return f'node "{name}" ({op})'


def at_node(exc: BaseException, node: NodeDef) -> None:
    """Note on ``exc``, raised by ``node``'s step while a plan ran, which node that was and
    where the client built it (its `source`, as validation errors say): the rpc layer puts the
    note in the status message (rpc/errors.py `where`)."""
    where = value_name(node.name, node.op)
    exc.add_note(f"{where}, built at {node.source}" if node.source else where)


class GraphError(ValueError):
    """A graph or its inputs are invalid. `node` names the node or input, `field` what is wrong."""

    def __init__(self, node: str, field: str, reason: str) -> None:
        super().__init__(f"{node}: {field}: {reason}" if node else f"{field}: {reason}")
        self.node = node
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InputDef:
    """A graph input. A dimension of -1 means any size (a batch dimension). An input with a
    `default` (e.g. a model's weights) may be left unfed: the default is used."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    default: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class NodeDef:
    """One operation: `op` from the registry applied to the values named by `inputs`."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    # Where the client made it (graph.proto Node.source), for errors only: not hashed.
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class GraphDef:
    """A graph as received: nothing about it has been checked yet."""

    inputs: tuple[InputDef, ...]
    nodes: tuple[NodeDef, ...]
    outputs: tuple[str, ...]

    @property
    def digest(self) -> str:
        """The content hash; equal to `Program.build(self).digest` when that succeeds."""
        return _digest(self.inputs, self.nodes, self.outputs)

    @property
    def has_dynamic_shapes(self) -> bool:
        return any(d < 0 for i in self.inputs for d in i.shape)

    def specialize(self, shapes: Mapping[str, tuple[int, ...]]) -> GraphDef:
        """Replace the -1 dimensions of the inputs by the sizes in `shapes`."""
        inputs = []
        for spec in self.inputs:
            actual = shapes.get(spec.name)
            if actual is None and spec.default is not None:
                actual = spec.default.shape
            if actual is not None and any(d < 0 for d in spec.shape):
                if len(actual) != len(spec.shape) or any(
                    d >= 0 and d != a for d, a in zip(spec.shape, actual, strict=True)
                ):
                    raise GraphError(
                        spec.name, "shape", f"got {list(actual)}, declared {list(spec.shape)}"
                    )
                default = spec.default
                if default is not None and default.shape != tuple(actual):
                    default = None  # fed with another shape: this specialization has none
                spec = InputDef(spec.name, spec.dtype, tuple(actual), default)
            inputs.append(spec)
        return GraphDef(tuple(inputs), self.nodes, self.outputs)


class Program:
    """A validated graph: topologically ordered, typed, immutable and hashable by content.

    Build one with `Program.build(graphdef)`; the constructor trusts its arguments.
    """

    __slots__ = ("_hash", "digest", "inputs", "nodes", "outputs", "types")

    def __init__(
        self,
        inputs: tuple[InputDef, ...],
        nodes: tuple[NodeDef, ...],
        outputs: tuple[str, ...],
        types: Mapping[str, TensorType],
    ) -> None:
        self.inputs = inputs
        self.nodes = nodes
        self.outputs = outputs
        self.types: Mapping[str, TensorType] = MappingProxyType(dict(types))
        self.digest = _digest(inputs, nodes, outputs)
        self._hash = hash(self.digest)

    @classmethod
    def build(
        cls,
        graph: GraphDef,
        *,
        max_nodes: int | None = None,
        cancel: Cancel = None,
    ) -> Program:
        """Validate `graph` and return it as a Program, or raise `GraphError` naming the culprit
        (and where the client built it, if its node has a `source`). Raises Cancelled when
        ``cancel`` (asked every CANCEL_EVERY_NODES nodes) says so."""
        try:
            return cls._build(graph, max_nodes, cancel)
        except GraphError as exc:
            raise _with_source(exc, graph.nodes) from None

    @classmethod
    def _build(cls, graph: GraphDef, max_nodes: int | None, cancel: Cancel) -> Program:
        from gradserve.autodiff.registry import OPS

        if max_nodes is not None and len(graph.nodes) > max_nodes:
            raise GraphError("", "nodes", f"{len(graph.nodes)} nodes exceed the limit {max_nodes}")
        types: dict[str, TensorType] = {}
        for spec in graph.inputs:
            _check_name(spec.name, "input")
            if spec.name in types:
                raise GraphError(spec.name, "name", "duplicate input name")
            if spec.dtype not in DTYPES:
                raise GraphError(spec.name, "dtype", f"unknown dtype {spec.dtype!r}")
            if any(d < 0 for d in spec.shape):
                raise GraphError(
                    spec.name, "shape", "has a -1 dimension: bind a concrete size first"
                )
            types[spec.name] = TensorType(tuple(spec.shape), spec.dtype)
            if spec.default is not None:
                _check_default(spec)
        by_name: dict[str, NodeDef] = {}
        for node in graph.nodes:
            _check_name(node.name, "node")
            if node.name in types or node.name in by_name:
                raise GraphError(node.name, "name", "duplicate name")
            if node.op not in OPS:
                raise GraphError(node.name, "op", f"unknown op {node.op!r}")
            by_name[node.name] = node
        for node in graph.nodes:
            for i, src in enumerate(node.inputs):
                if src not in types and src not in by_name:
                    raise GraphError(node.name, f"inputs[{i}]", f"unknown value {src!r}")
        order = _topological_order(graph.nodes, by_name)
        nodes = []
        for i, node in enumerate(order):
            check_cancel(cancel, i)
            opdef = OPS[node.op]
            attrs = opdef.check_attrs(node)
            in_types = [types[src] for src in node.inputs]
            types[node.name] = opdef.infer_node(node.name, in_types, attrs)
            attrs = MappingProxyType(attrs)
            nodes.append(NodeDef(node.name, node.op, tuple(node.inputs), attrs, node.source))
        if not graph.outputs:
            raise GraphError("", "outputs", "the graph has no outputs")
        for i, out in enumerate(graph.outputs):
            if out not in types:
                raise GraphError(out, f"outputs[{i}]", f"unknown value {out!r}")
        if len(set(graph.outputs)) != len(graph.outputs):
            raise GraphError("", "outputs", "an output is listed twice")
        return cls(tuple(graph.inputs), tuple(nodes), tuple(graph.outputs), types)

    def input(self, name: str) -> InputDef:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise GraphError(name, "name", "not an input of the graph")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and other.digest == self.digest

    def __repr__(self) -> str:
        lines = [f"Program {self.digest[:12]}"]
        lines += [f"  input {i.name}: {self.types[i.name]}" for i in self.inputs]
        for n in self.nodes:
            attrs = "".join(f" {k}={_short(v)}" for k, v in sorted(n.attrs.items()))
            lines.append(f"  {n.name}: {self.types[n.name]} = {n.op}({', '.join(n.inputs)}){attrs}")
        lines.append(f"  outputs {', '.join(self.outputs)}")
        return "\n".join(lines)


def _short(value: AttrValue) -> str:
    if isinstance(value, np.ndarray):
        return repr(value.item()) if value.size == 1 else f"<{value.dtype}{list(value.shape)}>"
    return repr(value)


def _with_source(exc: GraphError, nodes: Iterable[NodeDef]) -> GraphError:
    """``exc``, its reason followed by where the client built its node (if it says)."""
    source = next((n.source for n in nodes if n.name == exc.node), "")
    if not source:
        return exc
    return GraphError(exc.node, exc.field, f"{exc.reason} (built at {source})")


def _check_default(spec: InputDef) -> None:
    default = spec.default
    if not isinstance(default, np.ndarray) or default.dtype.name != spec.dtype:
        got = default.dtype.name if isinstance(default, np.ndarray) else type(default).__name__
        raise GraphError(spec.name, "default.dtype", f"got {got}, the input is {spec.dtype}")
    if default.shape != tuple(spec.shape):
        raise GraphError(
            spec.name,
            "default.shape",
            f"got {list(default.shape)}, the input is declared {list(spec.shape)}",
        )


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise GraphError(str(name), "name", f"{what} names must be non-empty strings")


def _topological_order(nodes: Sequence[NodeDef], by_name: Mapping[str, NodeDef]) -> list[NodeDef]:
    """Kahn's algorithm, stable in the given order; reports a node on a cycle."""
    users: dict[str, list[str]] = {}
    for n in nodes:
        for s in dict.fromkeys(n.inputs):
            if s in by_name:
                users.setdefault(s, []).append(n.name)
    # Count each distinct producer once, matching the de-duplicated `users` lists.
    pending = {n.name: len({s for s in n.inputs if s in by_name}) for n in nodes}
    ready = [n.name for n in reversed(nodes) if pending[n.name] == 0]
    order: list[NodeDef] = []
    while ready:
        name = ready.pop()
        order.append(by_name[name])
        for user in reversed(users.get(name, ())):
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
    if len(order) != len(nodes):
        stuck = next(n.name for n in nodes if pending[n.name] > 0)
        raise GraphError(stuck, "inputs", "the graph has a cycle through this node")
    return order


def _digest(inputs: Iterable[InputDef], nodes: Iterable[NodeDef], outputs: Iterable[str]) -> str:
    """A content hash, independent of node order: nodes are hashed sorted by name.

    Each record is the repr of a tuple of strings, ints and floats (unambiguous, one call per
    node); tensor attributes add their raw bytes, prefixed by their length.
    """
    h = hashlib.sha256()
    for spec in inputs:
        h.update(repr(("in", spec.name, spec.dtype, tuple(spec.shape))).encode())
        if spec.default is not None:
            data = np.ascontiguousarray(spec.default).tobytes()
            h.update(repr(("default", spec.default.dtype.str, spec.default.shape)).encode())
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    for node in sorted(nodes, key=lambda n: n.name):
        arrays = []
        attrs = []
        for key in sorted(node.attrs):
            value = node.attrs[key]
            if isinstance(value, np.ndarray):
                attrs.append((key, value.dtype.str, value.shape))
                arrays.append(np.ascontiguousarray(value).tobytes())
            else:
                attrs.append((key, value))
        h.update(repr(("node", node.name, node.op, tuple(node.inputs), attrs)).encode())
        for data in arrays:
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    h.update(repr(("out", tuple(outputs))).encode())
    return h.hexdigest()
