"""Build expression graphs in Python: the SDK's `Graph`, `Var` and numpy-named op functions.

    import gradserve_client as gs
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    W = g.input("W", shape=(2, 3))
    g.output("y", gs.relu(W @ x + 1.0))

Every op function emits one node of the wire `Graph` (see protos/gradserve/v1/graph.proto);
the server validates and runs it. Shapes and dtypes are inferred here by the core's type rules
(operands of one op share a dtype: nothing is promoted), so that a graph the server would
reject fails at build time with a Python traceback that points at the user's line; a dimension
of -1 is unknown (a batch dimension) and a shape of None means unknown rank, and neither is
ever an error here.
"""

from __future__ import annotations

import builtins
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from .proto import graph_pb2, tensor_codec

__all__ = [
    "OPSET",
    "Graph",
    "Operand",
    "Var",
    "abs",
    "add",
    "arccos",
    "arccosh",
    "arcsin",
    "arcsinh",
    "arctan",
    "arctan2",
    "arctanh",
    "broadcast_to",
    "concatenate",
    "constant",
    "cos",
    "cosh",
    "cross_entropy",
    "divide",
    "dot",
    "equal",
    "exp",
    "exp2",
    "expand_dims",
    "expm1",
    "greater",
    "greater_equal",
    "hypot",
    "less",
    "less_equal",
    "ln",
    "log",
    "log1p",
    "log2",
    "log10",
    "log_softmax",
    "logaddexp",
    "logsumexp",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "mse",
    "multiply",
    "negative",
    "not_equal",
    "outer",
    "power",
    "prod",
    "reciprocal",
    "relu",
    "reshape",
    "sigmoid",
    "sign",
    "sin",
    "sinh",
    "softmax",
    "softplus",
    "sqrt",
    "square",
    "squeeze",
    "stack",
    "std",
    "subtract",
    "sum",
    "tan",
    "tanh",
    "transpose",
    "var",
    "where",
]

#: The operator-set version that graphs built here declare (Graph.opset on the wire).
OPSET = 1

# This module defines op functions named sum, max, min and abs; keep the builtins at hand.
_sum, _max, _min = builtins.sum, builtins.max, builtins.min

Shape: TypeAlias = tuple[int, ...]
#: What an op accepts as an operand: a Var, or a value that becomes a constant node.
Operand: TypeAlias = "Var | npt.ArrayLike"
# Attribute values as held in Python: int, float, tuple of ints or floats, str, ndarray.
_Attr: TypeAlias = "int | float | str | tuple[int, ...] | tuple[float, ...] | np.ndarray"

_FLOATS = ("float32", "float64")
_DTYPES = ("float32", "float64", "int64", "int32", "bool")


# ----------------------------------------------------------------------------------------------
# Nodes and Vars


@dataclass(eq=False, slots=True)
class _Node:
    """One value of the graph: an input (op "input") or an operation. Refers to its operands
    by object, so that renaming a node (see Graph.output) needs no rewiring."""

    name: str
    op: str
    inputs: tuple[_Node, ...]
    attrs: dict[str, _Attr]
    shape: Shape | None
    dtype: str
    auto_named: bool = False
    graph: Graph | None = field(default=None, repr=False)


class Var:
    """A symbolic value of a `Graph`: an input, or the result of an op.

    Supports ``+ - * / ** @`` (and their reflected forms), unary ``-``, ``abs()``, the
    comparisons ``< <= > >=`` (bool results, no gradient) and basic indexing (``v[0]``,
    ``v[1:3]``, ``v[:, 0]``, ``v[..., None]``). Python and numpy values become constants.
    ``==`` is identity, as for any Python object; use `equal` for the element-wise op.
    """

    __slots__ = ("_node",)
    # Make numpy defer to our reflected operators (np.ones(3) + v -> Var), not broadcast us.
    __array_ufunc__ = None

    def __init__(self, node: _Node) -> None:
        self._node = node

    @property
    def name(self) -> str:
        """The node (or input) name; an output's name once passed to `Graph.output`."""
        return self._node.name

    @property
    def op(self) -> str:
        """The op that computes this value ("input" for a graph input)."""
        return self._node.op

    @property
    def shape(self) -> Shape | None:
        """The inferred shape; -1 marks an unknown dimension, None an unknown rank."""
        return self._node.shape

    @property
    def ndim(self) -> int | None:
        """The number of dimensions, or None if unknown."""
        return None if self._node.shape is None else len(self._node.shape)

    @property
    def dtype(self) -> str:
        """The dtype name: "float32", "float64", "int64", "int32" or "bool"."""
        return self._node.dtype

    @property
    def graph(self) -> Graph:
        """The graph this value belongs to."""
        assert self._node.graph is not None
        return self._node.graph

    @property
    def T(self) -> Var:
        """The transpose (all axes reversed)."""
        return transpose(self)

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Var:
        """`sum` of this value."""
        return sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Var:
        """`mean` of this value."""
        return mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, shape: Sequence[int]) -> Var:
        """`reshape` of this value."""
        return reshape(self, shape)

    def __repr__(self) -> str:
        shape = "?" if self.shape is None else self.shape
        return f"Var({self.name!r}, op={self.op!r}, shape={shape}, dtype={self.dtype!r})"

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of Var {self.name!r} is unknown until the graph runs; "
            "use gs.where(cond, a, b) for element-wise choices"
        )

    def __iter__(self) -> Iterator[Var]:
        raise TypeError(f"Var {self.name!r} is not iterable; index it, e.g. v[0]")

    def __add__(self, other: Operand) -> Var:
        return add(self, other)

    def __radd__(self, other: Operand) -> Var:
        return add(other, self)

    def __sub__(self, other: Operand) -> Var:
        return subtract(self, other)

    def __rsub__(self, other: Operand) -> Var:
        return subtract(other, self)

    def __mul__(self, other: Operand) -> Var:
        return multiply(self, other)

    def __rmul__(self, other: Operand) -> Var:
        return multiply(other, self)

    def __truediv__(self, other: Operand) -> Var:
        return divide(self, other)

    def __rtruediv__(self, other: Operand) -> Var:
        return divide(other, self)

    def __pow__(self, other: Operand) -> Var:
        return power(self, other)

    def __rpow__(self, other: Operand) -> Var:
        return power(other, self)

    def __matmul__(self, other: Operand) -> Var:
        return matmul(self, other)

    def __rmatmul__(self, other: Operand) -> Var:
        return matmul(other, self)

    def __neg__(self) -> Var:
        return negative(self)

    def __pos__(self) -> Var:
        return self

    def __abs__(self) -> Var:
        return abs(self)

    def __lt__(self, other: Operand) -> Var:
        return less(self, other)

    def __le__(self, other: Operand) -> Var:
        return less_equal(self, other)

    def __gt__(self, other: Operand) -> Var:
        return greater(self, other)

    def __ge__(self, other: Operand) -> Var:
        return greater_equal(self, other)

    def __getitem__(self, key: Any) -> Var:
        index = _canonical_index(key)
        node = self._node
        shape = None if node.shape is None else _slice_shape(node.shape, index, key)
        return self.graph._add("slice", (node,), {"index": index}, shape, node.dtype)


# ----------------------------------------------------------------------------------------------
# The graph


class Graph:
    """An expression graph under construction: inputs, op nodes and named outputs.

    ``Graph.to_proto()`` gives the wire message (gradserve.v1.Graph); ``save``/``load`` store
    it as binary protobuf (the ``.gsg`` extension is suggested).
    """

    def __init__(self) -> None:
        self._inputs: list[_Node] = []
        self._nodes: list[_Node] = []
        self._outputs: list[_Node] = []
        self._by_name: dict[str, _Node] = {}
        self._counter = 0
        self._constants: dict[tuple[str, Shape, bytes], _Node] = {}
        self._proto: graph_pb2.Graph | None = None

    # -- building

    def input(
        self, name: str, shape: Sequence[int] = (), dtype: str | npt.DTypeLike = "float64"
    ) -> Var:
        """Declare an input and return it as a Var.

        ``shape`` dimensions are sizes >= 0, or -1 for "any size" (e.g. a batch dimension);
        ``dtype`` is one of "float32", "float64" (the default), "int64", "int32", "bool".
        """
        self._check_new_name(name)
        dims = _ints(shape, "shape")
        if any(d < -1 for d in dims):
            raise ValueError(f"input {name!r}: shape {dims} has a dimension below -1")
        node = _Node(name, "input", (), {}, dims, _dtype_name(dtype), graph=self)
        self._inputs.append(node)
        self._by_name[name] = node
        self._changed()
        return Var(node)

    def constant(self, value: npt.ArrayLike, dtype: str | npt.DTypeLike | None = None) -> Var:
        """A constant node holding ``value`` (cast to ``dtype`` if given)."""
        array = np.asarray(value) if dtype is None else np.asarray(value, dtype=np.dtype(dtype))
        tensor_codec.dtype_from_numpy(array.dtype)  # TypeError for unsupported values
        array = array.astype(array.dtype.newbyteorder("="), copy=False)
        key = (array.dtype.name, array.shape, array.tobytes())
        cached = self._constants.get(key)
        if cached is not None:
            return Var(cached)
        frozen = array.copy()
        frozen.flags.writeable = False
        node = self._add_node("constant", (), {"value": frozen}, array.shape, array.dtype.name)
        self._constants[key] = node
        return Var(node)

    def output(self, name: str, value: Var) -> Var:
        """Make ``value`` an output of the graph under ``name``; return the output's Var.

        The wire format lists outputs by node name, so when ``value`` is an op with an
        automatic name that is not yet an output, its node is simply renamed to ``name``.
        Otherwise (an input, a node the user named, or a value that is already an output
        under another name) a ``slice`` node with index "..." — an identity view, free at run
        time and transparent to derivatives — is added under ``name``.
        """
        node = self._own_node(value, "output")
        if any(o.name == name for o in self._outputs):
            raise ValueError(f"graph already has an output named {name!r}")
        if node.name != name:
            self._check_new_name(name)
            if not node.auto_named or node in self._outputs:
                node = self._add_node("slice", (node,), {"index": "..."}, node.shape, node.dtype)
            del self._by_name[node.name]
            node.name, node.auto_named = name, False
            self._by_name[name] = node
        self._outputs.append(node)
        self._changed()
        return Var(node)

    # -- inspecting

    @property
    def input_names(self) -> list[str]:
        """The names of the inputs, in declaration order."""
        return [n.name for n in self._inputs]

    @property
    def output_names(self) -> list[str]:
        """The names of the outputs, in declaration order."""
        return [n.name for n in self._outputs]

    @property
    def inputs(self) -> dict[str, Var]:
        """The inputs by name."""
        return {n.name: Var(n) for n in self._inputs}

    @property
    def outputs(self) -> dict[str, Var]:
        """The outputs by name."""
        return {n.name: Var(n) for n in self._outputs}

    def var(self, name: str) -> Var:
        """The input or node called ``name`` (e.g. of a loaded graph)."""
        try:
            return Var(self._by_name[name])
        except KeyError:
            raise KeyError(f"graph has no input or node named {name!r}") from None

    def __len__(self) -> int:
        """The number of op nodes (constants included, inputs excluded)."""
        return len(self._nodes)

    def __repr__(self) -> str:
        def spec(n: _Node) -> str:
            dims = "?" if n.shape is None else ",".join(str(d) for d in n.shape)
            return f"{n.name}: {n.dtype}[{dims}]"

        lines = [
            f"Graph(inputs=[{', '.join(spec(n) for n in self._inputs)}], "
            f"outputs={self.output_names}, nodes={len(self._nodes)})"
        ]
        for n in self._nodes:
            attrs = ", ".join(f"{k}={_attr_repr(v)}" for k, v in sorted(n.attrs.items()))
            args = ", ".join([*(i.name for i in n.inputs), *([attrs] if attrs else [])])
            lines.append(f"  {spec(n)} = {n.op}({args})")
        return "\n".join(lines)

    # -- the wire format

    def to_proto(self) -> graph_pb2.Graph:
        """The wire message. Cached until the graph changes: do not mutate the result."""
        if self._proto is None:
            proto = graph_pb2.Graph(opset=OPSET)
            for n in self._inputs:
                proto.inputs.add(
                    name=n.name, dtype=tensor_codec.dtype_from_name(n.dtype), shape=n.shape
                )
            for n in self._nodes:
                msg = proto.nodes.add(name=n.name, op=n.op, inputs=[i.name for i in n.inputs])
                for key, value in n.attrs.items():
                    msg.attrs[key].CopyFrom(_attr_to_proto(value))
            proto.outputs.extend(self.output_names)
            self._proto = proto
        return self._proto

    @classmethod
    def from_proto(cls, proto: graph_pb2.Graph) -> Graph:
        """Rebuild a Graph from its wire message (nodes may come in any order)."""
        g = cls()
        for spec in proto.inputs:
            g.input(spec.name, tuple(spec.shape), tensor_codec.dtype_name(spec.dtype))
        pending = {n.name: n for n in proto.nodes}
        if len(pending) != len(proto.nodes):
            raise ValueError("graph has duplicate node names")
        while pending:
            progressed = False
            for name, msg in list(pending.items()):
                if any(i in pending for i in msg.inputs):
                    continue
                missing = [i for i in msg.inputs if i not in g._by_name]
                if missing:
                    raise ValueError(f"node {name!r}: unknown input {missing[0]!r}")
                g._check_new_name(name)
                ins = tuple(g._by_name[i] for i in msg.inputs)
                attrs = {k: _attr_from_proto(v) for k, v in msg.attrs.items()}
                try:
                    shape, dtype = _infer(msg.op, ins, attrs)
                except (ValueError, IndexError, TypeError):
                    shape, dtype = None, ins[0].dtype if ins else "float64"
                node = _Node(name, msg.op, ins, attrs, shape, dtype, graph=g)
                g._nodes.append(node)
                g._by_name[name] = node
                del pending[name]
                progressed = True
            if not progressed:
                raise ValueError(f"graph has a cycle through {sorted(pending)}")
        for name in proto.outputs:
            if name not in g._by_name:
                raise ValueError(f"output {name!r} is not an input or node of the graph")
            g._outputs.append(g._by_name[name])
        g._counter = len(g._nodes)
        return g

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the graph as binary protobuf (deterministic bytes; suggested suffix .gsg)."""
        with open(path, "wb") as f:
            f.write(self.to_proto().SerializeToString(deterministic=True))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Graph:
        """Read a graph written by `save`."""
        with open(path, "rb") as f:
            return cls.from_proto(graph_pb2.Graph.FromString(f.read()))

    # -- internals

    def _changed(self) -> None:
        self._proto = None

    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a name must be a non-empty string, not {name!r}")
        if name in self._by_name:
            raise ValueError(f"graph already has an input or node named {name!r}")

    def _own_node(self, value: object, what: str) -> _Node:
        if not isinstance(value, Var):
            raise TypeError(f"{what}: expected a gs.Var, got {type(value).__name__}")
        if value._node.graph is not self:
            raise ValueError(
                f"{what}: Var {value.name!r} belongs to another Graph; "
                "values from different graphs cannot be combined"
            )
        return value._node

    def _add_node(
        self,
        op: str,
        inputs: tuple[_Node, ...],
        attrs: dict[str, _Attr],
        shape: Shape | None,
        dtype: str,
    ) -> _Node:
        while True:
            self._counter += 1
            name = f"{op}_{self._counter}"
            if name not in self._by_name:
                break
        node = _Node(name, op, inputs, attrs, shape, dtype, auto_named=True, graph=self)
        self._nodes.append(node)
        self._by_name[name] = node
        self._changed()
        return node

    def _add(
        self,
        op: str,
        inputs: tuple[_Node, ...],
        attrs: dict[str, _Attr],
        shape: Shape | None,
        dtype: str,
    ) -> Var:
        return Var(self._add_node(op, inputs, attrs, shape, dtype))


# ----------------------------------------------------------------------------------------------
# Attributes and indexing


def _ints(value: int | Iterable[int], what: str) -> tuple[int, ...]:
    items = (value,) if isinstance(value, int | np.integer) else tuple(value)
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{what}: expected integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


def _dtype_name(dtype: str | npt.DTypeLike) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; supported: {', '.join(_DTYPES)}")
    return name


def _attr_to_proto(value: _Attr) -> graph_pb2.AttrValue:
    if isinstance(value, np.ndarray):
        return graph_pb2.AttrValue(tensor=tensor_codec.to_tensor(value))
    if isinstance(value, str):
        return graph_pb2.AttrValue(s=value)
    if isinstance(value, bool):
        return graph_pb2.AttrValue(i=int(value))
    if isinstance(value, int):
        return graph_pb2.AttrValue(i=value)
    if isinstance(value, float):
        return graph_pb2.AttrValue(f=value)
    if builtins.all(isinstance(v, int) for v in value):
        return graph_pb2.AttrValue(ints=graph_pb2.Ints(values=value))  # type: ignore[arg-type]
    return graph_pb2.AttrValue(floats=graph_pb2.Floats(values=value))


def _attr_from_proto(msg: graph_pb2.AttrValue) -> _Attr:
    kind = msg.WhichOneof("value")
    if kind == "i":
        return msg.i
    if kind == "f":
        return msg.f
    if kind == "ints":
        return tuple(msg.ints.values)
    if kind == "floats":
        return tuple(msg.floats.values)
    if kind == "s":
        return msg.s
    if kind == "tensor":
        return tensor_codec.from_tensor(msg.tensor)
    raise ValueError("attribute has no value")


def _attr_repr(value: _Attr) -> str:
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=6) if value.size <= 6 else f"<{value.shape}>"
    return repr(value)


def _canonical_index(key: Any) -> str:
    """numpy basic indexing as a canonical string: "1:3,:,0,None,...", "::2", "-1"."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for part in parts:
        if part is None:
            out.append("None")
        elif part is Ellipsis:
            out.append("...")
        elif isinstance(part, slice):
            bounds = [part.start, part.stop, part.step]
            for b in bounds:
                if b is not None and (isinstance(b, bool) or not isinstance(b, int | np.integer)):
                    raise TypeError(f"slice bounds must be integers or None, not {b!r}")
            if part.step is not None and int(part.step) == 0:
                raise ValueError("slice step cannot be zero")
            text = ":".join("" if b is None else str(int(b)) for b in bounds[:2])
            out.append(text if part.step is None else f"{text}:{int(part.step)}")
        elif isinstance(part, int | np.integer) and not isinstance(part, bool | np.bool_):
            out.append(str(int(part)))
        else:
            raise TypeError(
                f"unsupported index {part!r}: only basic indexing (integers, slices, None, "
                "...) is supported"
            )
    if out.count("...") > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    return ",".join(out)


def _slice_shape(shape: Shape, index: str, key: Any) -> Shape:
    parts = index.split(",") if index else []
    consumed = _sum(1 for p in parts if p not in ("None", "..."))
    if consumed > len(shape):
        raise IndexError(f"too many indices for shape {shape}: {key!r}")
    if "..." not in parts:
        parts.append("...")
    out: list[int] = []
    dim = 0
    for p in parts:
        if p == "None":
            out.append(1)
        elif p == "...":
            n = len(shape) - consumed
            out.extend(shape[dim : dim + n])
            dim += n
        elif ":" in p:
            size = shape[dim]
            bits = [int(b) if b else None for b in p.split(":")]
            out.append(-1 if size < 0 else len(range(*slice(*bits).indices(size))))
            dim += 1
        else:
            i, size = int(p), shape[dim]
            if size >= 0 and not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for axis {dim} with size {size}")
            dim += 1
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Shape and dtype inference: the core's type rules (service/gradserve/autodiff/ops/*.py),
# applied at build time. A -1 dimension or an unknown rank (shape None) is never an error here;
# the server checks those once the sizes are bound.

_NUMERIC = ("float32", "float64", "int64", "int32")
# Element-wise ops that take integers too; every other element-wise op needs floats.
_NUMERIC_OPS = {
    "negative",
    "abs",
    "sign",
    "square",
    "add",
    "subtract",
    "multiply",
    "maximum",
    "minimum",
}
_COMPARISONS = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"}
_REDUCTIONS = {"sum", "mean", "max", "min", "prod", "var", "std", "logsumexp"}


def _broadcast(*shapes: Shape | None) -> Shape | None:
    if builtins.any(s is None for s in shapes):
        return None
    known: list[Shape] = [s for s in shapes if s is not None]
    ndim = _max(len(s) for s in known)
    out = []
    for axis in range(-ndim, 0):
        dims = {s[axis] for s in known if len(s) >= -axis} - {1}
        sized = dims - {-1}
        if len(sized) > 1:
            raise ValueError(f"shapes {', '.join(map(str, known))} cannot be broadcast together")
        out.append(sized.pop() if sized else (-1 if -1 in dims else 1))
    return tuple(out)


def _unify(a: Shape, b: Shape, what: str) -> Shape:
    """The one shape that ``a`` and ``b`` must both have (-1 matches any size)."""
    if len(a) != len(b):
        raise ValueError(what)
    out = []
    for d, e in zip(a, b, strict=True):
        if d >= 0 and e >= 0 and d != e:
            raise ValueError(what)
        out.append(e if d < 0 else d)
    return tuple(out)


def _same_dtype(ins: Sequence[_Node], allowed: Sequence[str], first: int = 0) -> str:
    """The dtype that the operands ``ins[first:]`` share; no promotion, as in the core."""
    dtype = ins[first].dtype
    for i, n in enumerate(ins[first:], first):
        if n.dtype not in allowed:
            raise TypeError(f"operand {i} ({n.name!r}) needs {'/'.join(allowed)}, got {n.dtype}")
        if n.dtype != dtype:
            raise TypeError(
                f"operands {first} ({ins[first].name!r}) and {i} ({n.name!r}) have different "
                f"dtypes, {dtype} and {n.dtype}; operands of one op must share a dtype (no "
                "implicit promotion)"
            )
    return dtype


def _norm_axes(axes: Iterable[int], ndim: int) -> list[int]:
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {tuple(axes)}")
    return out


def _size(shape: Shape) -> int:
    return -1 if builtins.any(d < 0 for d in shape) else math.prod(shape)


def _infer(op: str, ins: tuple[_Node, ...], attrs: dict[str, Any]) -> tuple[Shape | None, str]:
    """The (shape, dtype) of an op's result, as the core infers it.

    Raises TypeError (dtypes), ValueError (shapes, attributes) or IndexError (indexing) where
    the core would reject the node; the message starts with the op's name.
    """
    try:
        return _rule(op, ins, attrs)
    except (TypeError, ValueError, IndexError) as exc:
        raise type(exc)(f"{op}: {exc}") from None


def _rule(op: str, ins: tuple[_Node, ...], attrs: dict[str, Any]) -> tuple[Shape | None, str]:
    shapes = [n.shape for n in ins]
    if op == "constant":
        value = attrs["value"]
        return value.shape, value.dtype.name
    if op in _UNARY or op in _BINARY:
        return _broadcast(*shapes), _same_dtype(ins, _NUMERIC if op in _NUMERIC_OPS else _FLOATS)
    if op in _COMPARISONS:
        _same_dtype(ins, _DTYPES)
        return _broadcast(*shapes), "bool"
    if op == "where":
        if ins[0].dtype != "bool":
            raise TypeError(
                f"the condition, operand 0 ({ins[0].name!r}), must be bool, got {ins[0].dtype}"
            )
        return _broadcast(*shapes), _same_dtype(ins, _DTYPES, first=1)
    if op in _REDUCTIONS:
        return _reduction_type(op, ins[0], attrs)
    if op in ("softmax", "log_softmax"):
        dtype = _same_dtype(ins, _FLOATS)
        x = shapes[0]
        if x is not None:
            if not x:
                raise ValueError(f"operand 0 ({ins[0].name!r}) is 0-d; it needs an axis")
            _norm_axes([attrs.get("axis", -1)], len(x))
        return x, dtype
    if op == "cross_entropy":
        return _cross_entropy_type(ins, attrs)
    if op == "mse":
        dtype = _same_dtype(ins, _FLOATS)
        shape = _broadcast(*shapes)
        return (shape if attrs.get("reduction", "mean") == "none" else ()), dtype
    if op == "slice":
        x = shapes[0]
        return (None if x is None else _slice_shape(x, attrs["index"], attrs["index"])), ins[
            0
        ].dtype
    if op in _STRUCTURE:
        dtype = _same_dtype(ins, _DTYPES)
        return _STRUCTURE[op](shapes, attrs), dtype
    if op in ("matmul", "dot", "outer"):
        dtype = _same_dtype(ins, _NUMERIC)
        return _linalg_shape(op, shapes[0], shapes[1]), dtype
    raise ValueError(f"unknown op {op!r}")


def _reduction_type(op: str, x: _Node, attrs: dict[str, Any]) -> tuple[Shape | None, str]:
    dtype = _same_dtype([x], _DTYPES if op in ("sum", "prod", "max", "min") else _FLOATS)
    if op in ("sum", "prod") and dtype == "bool":
        dtype = "int64"
    ddof = attrs.get("ddof", 0)
    if ddof < 0:
        raise ValueError(f"ddof must be >= 0, got {ddof}")
    if x.shape is None:
        return None, dtype
    ndim = len(x.shape)
    axes = _norm_axes(attrs["axis"], ndim) if "axis" in attrs else list(range(ndim))
    n = _size(tuple(x.shape[a] for a in axes))
    if op in ("max", "min") and n == 0:
        raise ValueError(f"cannot reduce {x.shape} over empty axes")
    if op in ("var", "std") and 0 <= n <= ddof:
        raise ValueError(f"{n} elements with ddof {ddof} leave no degrees of freedom")
    keep = bool(attrs.get("keepdims", 0))
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
    return shape, dtype


def _cross_entropy_type(ins: tuple[_Node, ...], attrs: dict[str, Any]) -> tuple[Shape | None, str]:
    logits, labels = ins
    dtype = _same_dtype([logits], _FLOATS)
    if labels.dtype not in ("int64", "int32"):
        raise TypeError(
            f"labels, operand 1 ({labels.name!r}), need int64/int32, got {labels.dtype}"
        )
    x, y = logits.shape, labels.shape
    if x is not None and (not x or x[-1] == 0):
        raise ValueError(f"logits {x} need a non-empty class axis (the last)")
    if x is not None and y is not None:
        y = _unify(
            y, x[:-1], f"labels of shape {y} must be the logits' shape {x} without the class axis"
        )
    elif y is None and x is not None:
        y = x[:-1]
    return (y if attrs.get("reduction", "mean") == "none" else ()), dtype


def _reshape_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    target, x = tuple(attrs["shape"]), shapes[0]
    if target.count(-1) > 1 or builtins.any(d < -1 for d in target):
        raise ValueError(f"invalid target shape {target}")
    if x is None or _size(x) < 0:
        return target
    known = math.prod(d for d in target if d != -1)
    size = _size(x)
    if -1 in target:
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape {x} to {target}")
        return tuple(size // known if d == -1 else d for d in target)
    if known != size:
        raise ValueError(f"cannot reshape {x} ({size} elements) to {target}")
    return target


def _transpose_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    x = shapes[0]
    if x is None:
        return None
    axes = attrs.get("axes")
    if axes is None:
        return x[::-1]
    if len(axes) != len(x):
        raise ValueError(f"axes {tuple(axes)} are not a permutation of {len(x)} dimensions")
    return tuple(x[a] for a in _norm_axes(axes, len(x)))


def _broadcast_to_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    x, target = shapes[0], tuple(attrs["shape"])
    if builtins.any(d < 0 for d in target):
        raise ValueError(f"target shape {target} has a negative dimension")
    if x is not None:
        out = _broadcast(x, target)
        assert out is not None
        if len(out) != len(target) or builtins.any(
            d >= 0 and d != t for d, t in zip(out, target, strict=True)
        ):
            raise ValueError(f"cannot broadcast {x} to {target}")
    return target


def _expand_dims_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    x = shapes[0]
    if x is None:
        return None
    ndim = len(x) + len(attrs["axis"])
    axes = set(_norm_axes(attrs["axis"], ndim))
    rest = iter(x)
    return tuple(1 if i in axes else next(rest) for i in range(ndim))


def _squeeze_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    x = shapes[0]
    if x is None:
        return None
    if "axis" not in attrs:
        return None if -1 in x else tuple(d for d in x if d != 1)
    axes = _norm_axes(attrs["axis"], len(x))
    for a in axes:
        if x[a] not in (1, -1):
            raise ValueError(f"cannot squeeze axis {a} of size {x[a]}")
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _concatenate_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    first = shapes[0]
    if first is not None and not first:
        raise ValueError("cannot concatenate 0-d values (use stack)")
    if builtins.any(s is None for s in shapes):
        return None
    known: list[Shape] = [s for s in shapes if s is not None]
    (axis,) = _norm_axes([attrs.get("axis", 0)], len(known[0]))
    rest = [(*s[:axis], *s[axis + 1 :]) for s in known]
    for i, s in enumerate(known[1:], 1):
        what = f"operand {i} has shape {s}, which does not match {known[0]} except on axis {axis}"
        if len(s) != len(known[0]):
            raise ValueError(what)
        rest[0] = _unify(rest[0], rest[i], what)
    sizes = [s[axis] for s in known]
    total = -1 if -1 in sizes else _sum(sizes)
    return (*rest[0][:axis], total, *rest[0][axis:])


def _stack_shape(shapes: list[Shape | None], attrs: dict[str, Any]) -> Shape | None:
    if builtins.any(s is None for s in shapes):
        return None
    known: list[Shape] = [s for s in shapes if s is not None]
    base = known[0]
    for i, s in enumerate(known[1:], 1):
        base = _unify(base, s, f"operand {i} has shape {s}, not {known[0]}; stack needs one shape")
    (axis,) = _norm_axes([attrs.get("axis", 0)], len(base) + 1)
    return (*base[:axis], len(known), *base[axis:])


_STRUCTURE = {
    "reshape": _reshape_shape,
    "transpose": _transpose_shape,
    "broadcast_to": _broadcast_to_shape,
    "expand_dims": _expand_dims_shape,
    "squeeze": _squeeze_shape,
    "concatenate": _concatenate_shape,
    "stack": _stack_shape,
}


def _linalg_shape(op: str, a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None or b is None:
        return None
    if op == "outer":
        return (_size(a), _size(b))
    if len(a) == 0 or len(b) == 0:
        if op == "matmul":
            raise ValueError(f"operands need at least one dimension, got {a} and {b}")
        return _broadcast(a, b)  # dot with a 0-d operand multiplies
    k = b[-2] if len(b) >= 2 else b[0]
    if a[-1] >= 0 and k >= 0 and a[-1] != k:
        raise ValueError(f"shapes {a} and {b} are not aligned ({a[-1]} != {k})")
    if op == "dot":
        return a[:-1] + (b[:-2] + b[-1:] if len(b) >= 2 else ())
    batch = _broadcast(a[:-2], b[:-2])
    assert batch is not None
    return batch + a[-2:-1] + (b[-1:] if len(b) >= 2 else ())


# ----------------------------------------------------------------------------------------------
# Emitting nodes


def _graph_of(args: Iterable[object], op: str) -> Graph:
    graphs = {id(a._node.graph): a._node.graph for a in args if isinstance(a, Var)}
    if not graphs:
        raise TypeError(f"{op}: needs at least one gs.Var operand (use Graph.constant for values)")
    if len(graphs) > 1:
        names = [a.name for a in args if isinstance(a, Var)]
        raise ValueError(
            f"{op}: operands {names} belong to different Graphs; "
            "values from different graphs cannot be combined"
        )
    graph = next(iter(graphs.values()))
    assert graph is not None
    return graph


def _operand(graph: Graph, value: Operand, like: str | None, op: str) -> _Node:
    """The node of a Var operand, or a new constant node for a value.

    A value takes the dtype of the Var it is combined with (``like``) when that is a float
    (so that float32 graphs stay float32) or an integer combined with integers; otherwise the
    codec's defaults apply (float64 for Python floats, int64 for ints).
    """
    if isinstance(value, Var):
        return graph._own_node(value, op)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise TypeError(f"{op}: cannot use {type(value).__name__} as a constant: {exc}") from exc
    to_float = like in _FLOATS and array.dtype.kind in "biuf"
    to_int = like in ("int64", "int32") and array.dtype.kind in "bi"
    if to_float or to_int:
        array = array.astype(like)
    try:
        return graph.constant(array)._node
    except TypeError as exc:
        raise TypeError(f"{op}: {exc}") from exc


def _emit(op: str, args: Sequence[Operand], attrs: dict[str, _Attr] | None = None) -> Var:
    graph = _graph_of(args, op)
    dtypes = [a.dtype for a in args if isinstance(a, Var)]
    like = next((d for d in dtypes if d in _FLOATS), None)
    if like is None:  # a bool Var (e.g. where's condition) sets no dtype for values
        like = next((d for d in dtypes if d != "bool"), dtypes[0])
    ins = tuple(_operand(graph, a, like, op) for a in args)
    attrs = attrs or {}
    shape, dtype = _infer(op, ins, attrs)
    return graph._add(op, ins, attrs, shape, dtype)


def _unary(op: str, doc: str) -> Callable[[Var], Var]:
    def fn(x: Var) -> Var:
        if not isinstance(x, Var):
            raise TypeError(f"{op}: expected a gs.Var, got {type(x).__name__}")
        return _emit(op, (x,))

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = f"Element-wise {doc} (op ``{op}``)."
    return fn


def _binary(op: str, doc: str) -> Callable[[Operand, Operand], Var]:
    def fn(x1: Operand, x2: Operand) -> Var:
        return _emit(op, (x1, x2))

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = f"Element-wise {doc}, with numpy broadcasting (op ``{op}``)."
    return fn


def _reduction(op: str, doc: str) -> _Reduction:
    def fn(x: Var, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Var:
        attrs: dict[str, _Attr] = {"keepdims": int(bool(keepdims))}
        if axis is not None:
            attrs["axis"] = _ints(axis, f"{op}: axis")
        return _emit(op, (_var(x, op),), attrs)

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = (
        f"The {doc} over ``axis`` (an int, a tuple, or None for all axes), keeping reduced "
        f"axes as size 1 if ``keepdims`` (op ``{op}``; attrs ``axis`` ints, ``keepdims`` 0/1)."
    )
    return fn


class _Reduction(Protocol):
    def __call__(
        self, x: Var, axis: int | Sequence[int] | None = None, keepdims: bool = False
    ) -> Var: ...


def _var(x: object, op: str) -> Var:
    if not isinstance(x, Var):
        raise TypeError(f"{op}: expected a gs.Var, got {type(x).__name__}")
    return x


_UNARY_DOCS = {
    "negative": "negation, -x",
    "abs": "absolute value",
    "sign": "sign (-1, 0 or 1)",
    "exp": "exponential",
    "exp2": "2 ** x",
    "expm1": "exp(x) - 1, accurate near 0",
    "log": "natural logarithm",
    "log2": "base-2 logarithm",
    "log10": "base-10 logarithm",
    "log1p": "log(1 + x), accurate near 0",
    "sqrt": "square root",
    "square": "square, x * x",
    "reciprocal": "reciprocal, 1 / x",
    "sin": "sine",
    "cos": "cosine",
    "tan": "tangent",
    "arcsin": "inverse sine",
    "arccos": "inverse cosine",
    "arctan": "inverse tangent",
    "sinh": "hyperbolic sine",
    "cosh": "hyperbolic cosine",
    "tanh": "hyperbolic tangent",
    "arcsinh": "inverse hyperbolic sine",
    "arccosh": "inverse hyperbolic cosine",
    "arctanh": "inverse hyperbolic tangent",
    "sigmoid": "logistic sigmoid, 1 / (1 + exp(-x))",
    "relu": "rectified linear unit, max(x, 0)",
    "softplus": "softplus, log(1 + exp(x))",
}
_BINARY_DOCS = {
    "add": "sum x1 + x2",
    "subtract": "difference x1 - x2",
    "multiply": "product x1 * x2",
    "divide": "true division x1 / x2",
    "power": "power x1 ** x2",
    "maximum": "maximum",
    "minimum": "minimum",
    "arctan2": "arctan(x1 / x2) by quadrant",
    "hypot": "hypotenuse sqrt(x1**2 + x2**2)",
    "logaddexp": "log(exp(x1) + exp(x2))",
    "equal": "comparison x1 == x2 (bool, no gradient)",
    "not_equal": "comparison x1 != x2 (bool, no gradient)",
    "less": "comparison x1 < x2 (bool, no gradient)",
    "less_equal": "comparison x1 <= x2 (bool, no gradient)",
    "greater": "comparison x1 > x2 (bool, no gradient)",
    "greater_equal": "comparison x1 >= x2 (bool, no gradient)",
}
_UNARY = set(_UNARY_DOCS)
_BINARY = set(_BINARY_DOCS) - _COMPARISONS

negative = _unary("negative", _UNARY_DOCS["negative"])
abs = _unary("abs", _UNARY_DOCS["abs"])
sign = _unary("sign", _UNARY_DOCS["sign"])
exp = _unary("exp", _UNARY_DOCS["exp"])
exp2 = _unary("exp2", _UNARY_DOCS["exp2"])
expm1 = _unary("expm1", _UNARY_DOCS["expm1"])
log = _unary("log", _UNARY_DOCS["log"])
ln = log
log2 = _unary("log2", _UNARY_DOCS["log2"])
log10 = _unary("log10", _UNARY_DOCS["log10"])
log1p = _unary("log1p", _UNARY_DOCS["log1p"])
sqrt = _unary("sqrt", _UNARY_DOCS["sqrt"])
square = _unary("square", _UNARY_DOCS["square"])
reciprocal = _unary("reciprocal", _UNARY_DOCS["reciprocal"])
sin = _unary("sin", _UNARY_DOCS["sin"])
cos = _unary("cos", _UNARY_DOCS["cos"])
tan = _unary("tan", _UNARY_DOCS["tan"])
arcsin = _unary("arcsin", _UNARY_DOCS["arcsin"])
arccos = _unary("arccos", _UNARY_DOCS["arccos"])
arctan = _unary("arctan", _UNARY_DOCS["arctan"])
sinh = _unary("sinh", _UNARY_DOCS["sinh"])
cosh = _unary("cosh", _UNARY_DOCS["cosh"])
tanh = _unary("tanh", _UNARY_DOCS["tanh"])
arcsinh = _unary("arcsinh", _UNARY_DOCS["arcsinh"])
arccosh = _unary("arccosh", _UNARY_DOCS["arccosh"])
arctanh = _unary("arctanh", _UNARY_DOCS["arctanh"])
sigmoid = _unary("sigmoid", _UNARY_DOCS["sigmoid"])
relu = _unary("relu", _UNARY_DOCS["relu"])
softplus = _unary("softplus", _UNARY_DOCS["softplus"])

add = _binary("add", _BINARY_DOCS["add"])
subtract = _binary("subtract", _BINARY_DOCS["subtract"])
multiply = _binary("multiply", _BINARY_DOCS["multiply"])
divide = _binary("divide", _BINARY_DOCS["divide"])
power = _binary("power", _BINARY_DOCS["power"])
maximum = _binary("maximum", _BINARY_DOCS["maximum"])
minimum = _binary("minimum", _BINARY_DOCS["minimum"])
arctan2 = _binary("arctan2", _BINARY_DOCS["arctan2"])
hypot = _binary("hypot", _BINARY_DOCS["hypot"])
logaddexp = _binary("logaddexp", _BINARY_DOCS["logaddexp"])
equal = _binary("equal", _BINARY_DOCS["equal"])
not_equal = _binary("not_equal", _BINARY_DOCS["not_equal"])
less = _binary("less", _BINARY_DOCS["less"])
less_equal = _binary("less_equal", _BINARY_DOCS["less_equal"])
greater = _binary("greater", _BINARY_DOCS["greater"])
greater_equal = _binary("greater_equal", _BINARY_DOCS["greater_equal"])

sum = _reduction("sum", "sum")
mean = _reduction("mean", "arithmetic mean")
max = _reduction("max", "maximum")
min = _reduction("min", "minimum")
prod = _reduction("prod", "product")
logsumexp = _reduction("logsumexp", "log of the sum of exponentials, computed stably")


def var(
    x: Var, axis: int | Sequence[int] | None = None, keepdims: bool = False, ddof: int = 0
) -> Var:
    """The variance over ``axis``, dividing by N - ``ddof`` (op ``var``; attrs ``axis``,
    ``keepdims``, ``ddof``)."""
    return _moment("var", x, axis, keepdims, ddof)


def std(
    x: Var, axis: int | Sequence[int] | None = None, keepdims: bool = False, ddof: int = 0
) -> Var:
    """The standard deviation over ``axis``, dividing by N - ``ddof`` (op ``std``; attrs
    ``axis``, ``keepdims``, ``ddof``)."""
    return _moment("std", x, axis, keepdims, ddof)


def _moment(op: str, x: Var, axis: int | Sequence[int] | None, keepdims: bool, ddof: int) -> Var:
    attrs: dict[str, _Attr] = {"keepdims": int(bool(keepdims)), "ddof": _ints(ddof, "ddof")[0]}
    if axis is not None:
        attrs["axis"] = _ints(axis, f"{op}: axis")
    return _emit(op, (_var(x, op),), attrs)


def reshape(x: Var, shape: Sequence[int]) -> Var:
    """``x`` with a new shape of the same size; one dimension may be -1 (op ``reshape``;
    attr ``shape`` ints)."""
    return _emit("reshape", (_var(x, "reshape"),), {"shape": _ints(shape, "reshape: shape")})


def transpose(x: Var, axes: Sequence[int] | None = None) -> Var:
    """``x`` with its axes permuted by ``axes``, or reversed if None (op ``transpose``; attr
    ``axes`` ints, omitted for reversal)."""
    attrs: dict[str, _Attr] = {} if axes is None else {"axes": _ints(axes, "transpose: axes")}
    return _emit("transpose", (_var(x, "transpose"),), attrs)


def broadcast_to(x: Var, shape: Sequence[int]) -> Var:
    """``x`` broadcast to ``shape`` (op ``broadcast_to``; attr ``shape`` ints)."""
    return _emit("broadcast_to", (_var(x, "broadcast_to"),), {"shape": _ints(shape, "shape")})


def expand_dims(x: Var, axis: int | Sequence[int]) -> Var:
    """``x`` with new size-1 axes at ``axis`` (op ``expand_dims``; attr ``axis`` ints)."""
    return _emit("expand_dims", (_var(x, "expand_dims"),), {"axis": _ints(axis, "axis")})


def squeeze(x: Var, axis: int | Sequence[int] | None = None) -> Var:
    """``x`` without the size-1 axes ``axis`` (all of them if None) (op ``squeeze``; attr
    ``axis`` ints, omitted for all)."""
    attrs: dict[str, _Attr] = {} if axis is None else {"axis": _ints(axis, "squeeze: axis")}
    return _emit("squeeze", (_var(x, "squeeze"),), attrs)


def concatenate(xs: Sequence[Operand], axis: int = 0) -> Var:
    """The operands joined along an existing axis (op ``concatenate``, variadic; attr ``axis``
    int)."""
    return _emit("concatenate", _nonempty(xs, "concatenate"), {"axis": _ints(axis, "axis")[0]})


def stack(xs: Sequence[Operand], axis: int = 0) -> Var:
    """The operands (of one shape) joined along a new axis (op ``stack``, variadic; attr
    ``axis`` int)."""
    return _emit("stack", _nonempty(xs, "stack"), {"axis": _ints(axis, "axis")[0]})


def _nonempty(xs: Sequence[Operand], op: str) -> tuple[Operand, ...]:
    if isinstance(xs, Var) or not isinstance(xs, Sequence) or not xs:
        raise TypeError(f"{op}: expected a non-empty list of operands")
    return tuple(xs)


def matmul(x1: Operand, x2: Operand) -> Var:
    """The matrix product, as ``x1 @ x2`` in numpy (op ``matmul``)."""
    return _emit("matmul", (x1, x2))


def dot(x1: Operand, x2: Operand) -> Var:
    """The dot product, as ``numpy.dot`` (op ``dot``)."""
    return _emit("dot", (x1, x2))


def outer(x1: Operand, x2: Operand) -> Var:
    """The outer product of the flattened operands, as ``numpy.outer`` (op ``outer``)."""
    return _emit("outer", (x1, x2))


def softmax(x: Var, axis: int = -1) -> Var:
    """The softmax along ``axis`` (op ``softmax``; attr ``axis`` int)."""
    return _emit("softmax", (_var(x, "softmax"),), {"axis": _ints(axis, "axis")[0]})


def log_softmax(x: Var, axis: int = -1) -> Var:
    """The log of the softmax along ``axis``, computed stably (op ``log_softmax``; attr
    ``axis`` int)."""
    return _emit("log_softmax", (_var(x, "log_softmax"),), {"axis": _ints(axis, "axis")[0]})


_REDUCTION_MODES = ("mean", "sum", "none")


def _reduction_mode(reduction: str, op: str) -> str:
    if reduction not in _REDUCTION_MODES:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTION_MODES}, not {reduction!r}")
    return reduction


def cross_entropy(logits: Var, labels: Operand, reduction: str = "mean") -> Var:
    """The cross-entropy of ``logits`` (..., classes) against integer class ``labels`` (...),
    averaged, summed, or per example (``reduction`` "mean", "sum" or "none"; op
    ``cross_entropy``, attr ``reduction`` string)."""
    logits = _var(logits, "cross_entropy")
    graph = logits.graph
    if not isinstance(labels, Var):
        array = np.asarray(labels)
        if array.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: labels must be integers, got {array.dtype.name}")
        labels = graph.constant(array.astype(np.int64))
    attrs: dict[str, _Attr] = {"reduction": _reduction_mode(reduction, "cross_entropy")}
    return _emit("cross_entropy", (logits, labels), attrs)


def mse(pred: Operand, target: Operand, reduction: str = "mean") -> Var:
    """The mean squared error of ``pred`` against ``target``: the mean, the sum, or the
    element-wise squared differences (``reduction`` "mean", "sum" or "none"; op ``mse``, attr
    ``reduction`` string)."""
    return _emit("mse", (pred, target), {"reduction": _reduction_mode(reduction, "mse")})


def where(condition: Operand, x1: Operand, x2: Operand) -> Var:
    """``x1`` where ``condition`` is true, else ``x2``, with broadcasting (op ``where``)."""
    graph = _graph_of((condition, x1, x2), "where")
    if not isinstance(condition, Var):
        condition = graph.constant(np.asarray(condition, dtype=bool))
    return _emit("where", (condition, x1, x2))


def constant(
    value: npt.ArrayLike, dtype: str | npt.DTypeLike | None = None, *, graph: Graph
) -> Var:
    """A constant node of ``graph`` holding ``value`` (op ``constant``; attr ``value`` tensor).

    Operators and op functions make constants by themselves; this is for a constant on its
    own, e.g. an output that does not depend on the inputs.
    """
    return graph.constant(value, dtype)
