"""Build expression graphs in Python: the SDK's `Graph`, `Var` and numpy-named op functions.

    import gradserve_client as gs
    g = gs.Graph()
    x = g.input("x", shape=(3,))
    W = g.input("W", shape=(2, 3))
    g.output("y", gs.relu(W @ x + 1.0))

Every op function (`ops.py`, generated from the opset) emits one node of the wire `Graph`
(see protos/gradserve/v1/graph.proto) through `emit`; the server validates and runs it.
Shapes and dtypes are inferred here by the op's own type rule (`gradserve_client.opset`), the
one the server applies (operands of one op share a dtype: nothing is promoted), so that a
graph the server would reject fails at build time with a Python traceback that points at the
user's line; a dimension of -1 is unknown (a batch dimension) and a shape of None means
unknown rank, and neither is ever an error here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .opset import (
    DTYPES,
    FLOAT_DTYPES,
    INT_DTYPES,
    OPSET,
    SPECS,
    AttrSpec,
    RuleError,
    TensorType,
)
from .opset import Operand as OperandSpec
from .proto import graph_pb2, tensor_codec
from .proto.attr_codec import Attr as _Attr
from .proto.attr_codec import attr_from_proto, attr_to_proto

if TYPE_CHECKING:
    import onnx

__all__ = ["OPSET", "Graph", "Operand", "Var", "constant"]

Shape: TypeAlias = tuple[int, ...]
#: What an op accepts as an operand: a Var, or a value that becomes a constant node.
Operand: TypeAlias = "Var | npt.ArrayLike"


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
    source: str = ""  # where the user's code built it (see `_call_site`); not its identity


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
        return emit("transpose", (self,))

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Var:
        """`sum` of this value."""
        return emit("sum", (self,), {"axis": axis, "keepdims": keepdims})

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Var:
        """`mean` of this value."""
        return emit("mean", (self,), {"axis": axis, "keepdims": keepdims})

    def reshape(self, shape: Sequence[int]) -> Var:
        """`reshape` of this value."""
        return emit("reshape", (self,), {"shape": shape})

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
        return emit("add", (self, other))

    def __radd__(self, other: Operand) -> Var:
        return emit("add", (other, self))

    def __sub__(self, other: Operand) -> Var:
        return emit("subtract", (self, other))

    def __rsub__(self, other: Operand) -> Var:
        return emit("subtract", (other, self))

    def __mul__(self, other: Operand) -> Var:
        return emit("multiply", (self, other))

    def __rmul__(self, other: Operand) -> Var:
        return emit("multiply", (other, self))

    def __truediv__(self, other: Operand) -> Var:
        return emit("divide", (self, other))

    def __rtruediv__(self, other: Operand) -> Var:
        return emit("divide", (other, self))

    def __pow__(self, other: Operand) -> Var:
        return emit("power", (self, other))

    def __rpow__(self, other: Operand) -> Var:
        return emit("power", (other, self))

    def __matmul__(self, other: Operand) -> Var:
        return emit("matmul", (self, other))

    def __rmatmul__(self, other: Operand) -> Var:
        return emit("matmul", (other, self))

    def __neg__(self) -> Var:
        return emit("negative", (self,))

    def __pos__(self) -> Var:
        return self

    def __abs__(self) -> Var:
        return emit("abs", (self,))

    def __lt__(self, other: Operand) -> Var:
        return emit("less", (self, other))

    def __le__(self, other: Operand) -> Var:
        return emit("less_equal", (self, other))

    def __gt__(self, other: Operand) -> Var:
        return emit("greater", (self, other))

    def __ge__(self, other: Operand) -> Var:
        return emit("greater_equal", (self, other))

    def __getitem__(self, key: Any) -> Var:
        return emit("slice", (self,), {"index": _canonical_index(key)})


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
        self._defaults: dict[str, np.ndarray] = {}

    # -- building

    def input(
        self,
        name: str,
        shape: Sequence[int] = (),
        dtype: str | npt.DTypeLike = "float64",
        default: npt.ArrayLike | None = None,
    ) -> Var:
        """Declare an input and return it as a Var.

        ``shape`` dimensions are sizes >= 0, or -1 for "any size" (e.g. a batch dimension);
        ``dtype`` is one of "float32", "float64" (the default), "int64", "int32", "bool".
        An input with a ``default`` (e.g. a weight) may be left out of every request; it is
        sent with the graph (see `defaults`).
        """
        self._check_new_name(name)
        dims = _ints(shape, "shape")
        if any(d < -1 for d in dims):
            raise ValueError(f"input {name!r}: shape {dims} has a dimension below -1")
        node = _Node(name, "input", (), {}, dims, _dtype_name(dtype), graph=self)
        if default is not None:
            self._defaults[name] = _default_value(name, default, node)
        self._inputs.append(node)
        self._by_name[name] = node
        self._changed()
        return Var(node)

    def constant(self, value: npt.ArrayLike, dtype: str | npt.DTypeLike | None = None) -> Var:
        """A constant node holding ``value`` (cast to ``dtype`` if given)."""
        return Var(self._constant(value, dtype, _call_site(2)))

    def _constant(self, value: npt.ArrayLike, dtype: Any, source: str) -> _Node:
        array = np.asarray(value) if dtype is None else np.asarray(value, dtype=np.dtype(dtype))
        tensor_codec.dtype_from_numpy(array.dtype)  # TypeError for unsupported values
        array = array.astype(array.dtype.newbyteorder("="), copy=False)
        key = (array.dtype.name, array.shape, array.tobytes())
        cached = self._constants.get(key)
        if cached is not None:
            return cached
        frozen = array.copy()
        frozen.flags.writeable = False
        node = self._add_node(
            "constant", (), {"value": frozen}, array.shape, array.dtype.name, source
        )
        self._constants[key] = node
        return node

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
                view = ("slice", (node,), {"index": "..."}, node.shape, node.dtype)
                node = self._add_node(*view, _call_site(2))
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

    @property
    def defaults(self) -> dict[str, np.ndarray]:
        """The default values of the inputs that have one, by name (read-only arrays): e.g. the
        weights of an imported ONNX model, to pass as ``wrt=list(g.defaults)`` or ``params``."""
        return dict(self._defaults)

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
                spec = proto.inputs.add(
                    name=n.name, dtype=tensor_codec.dtype_from_name(n.dtype), shape=n.shape
                )
                if n.name in self._defaults:
                    spec.default.CopyFrom(tensor_codec.to_tensor(self._defaults[n.name]))
            for n in self._nodes:
                msg = proto.nodes.add(
                    name=n.name, op=n.op, inputs=[i.name for i in n.inputs], source=n.source
                )
                for key, value in n.attrs.items():
                    msg.attrs[key].CopyFrom(attr_to_proto(value))
            proto.outputs.extend(self.output_names)
            self._proto = proto
        return self._proto

    @classmethod
    def from_proto(cls, proto: graph_pb2.Graph) -> Graph:
        """Rebuild a Graph from its wire message (nodes may come in any order)."""
        g = cls()
        for spec in proto.inputs:
            default = None
            if spec.HasField("default"):
                default = tensor_codec.from_tensor(spec.default, field=f"{spec.name}.default")
            g.input(spec.name, tuple(spec.shape), tensor_codec.dtype_name(spec.dtype), default)
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
                attrs = {k: attr_from_proto(v) for k, v in msg.attrs.items()}
                try:
                    shape, dtype, _ = _infer(msg.op, ins, attrs)
                except (ValueError, IndexError, TypeError):
                    shape, dtype = None, ins[0].dtype if ins else "float64"
                node = _Node(name, msg.op, ins, attrs, shape, dtype, graph=g, source=msg.source)
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

    @classmethod
    def from_onnx(
        cls,
        source: onnx.ModelProto | bytes | str | os.PathLike[str],
        *,
        static_inputs: Mapping[str, npt.ArrayLike] | None = None,
    ) -> Graph:
        """Import an ONNX model (a path, bytes or an ``onnx.ModelProto``): its graph inputs
        become inputs, its initializers inputs with `defaults`, its outputs keep their names,
        and ``g.var(name)`` reaches any of its values. ``static_inputs`` folds graph inputs
        that are shapes or axes at import, with the values given. Raises
        ``gradserve_client.onnx.OnnxImportError`` (a ValueError) naming the ONNX node, its op
        type and the attribute it cannot convert. See docs/onnx.md."""
        from .onnx import to_graph

        return cls.from_proto(to_graph(source, static_inputs=static_inputs))

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
        source: str,
    ) -> _Node:
        while True:
            self._counter += 1
            name = f"{op}_{self._counter}"
            if name not in self._by_name:
                break
        node = _Node(name, op, inputs, attrs, shape, dtype, True, self, source)
        self._nodes.append(node)
        self._by_name[name] = node
        self._changed()
        return node


# ----------------------------------------------------------------------------------------------
# Call sites

# The SDK's own files: frames in them are skipped to find the user's line that built a node.
_SDK_DIR = os.path.dirname(__file__) + os.sep


def _call_site(start: int) -> str:
    """Where the user's code built a node, "path/to/model.py:12 in loss": the first frame
    that is not in the SDK, from ``start`` frames up (1 is the caller of this function, 2 its
    caller, ...); "" if there is none.

    Each frame looked at costs about half a microsecond (CPython makes a frame object for it;
    `inspect.stack()` would also read every source file), so callers start above the frames
    they know to be the SDK's. A line number takes microseconds to compute, so the text is
    remembered per call site (code object and instruction).
    """
    try:
        frame: FrameType | None = sys._getframe(start)
    except ValueError:  # not that many frames
        return ""
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(_SDK_DIR):
            return _site(code, frame)
        frame = frame.f_back
    return ""


# Call sites by id(code) (hashing a code object hashes its bytecode) and instruction; each entry
# holds its code object, so that the id is not reused while the entry exists.
_SITES: dict[int, tuple[CodeType, dict[int, str]]] = {}
_MAX_CODES = 1024


def _site(code: CodeType, frame: FrameType) -> str:
    entry = _SITES.get(id(code))
    if entry is None:
        if len(_SITES) >= _MAX_CODES:
            _SITES.clear()
        entry = _SITES[id(code)] = (code, {})
    lines = entry[1]
    site = lines.get(frame.f_lasti)
    if site is None:
        site = lines[frame.f_lasti] = f"{code.co_filename}:{frame.f_lineno} in {code.co_qualname}"
    return site


def _where(node: _Node) -> str:
    """``, built at ...`` for a node whose call site is known."""
    return f", built at {node.source}" if node.source else ""


# ----------------------------------------------------------------------------------------------
# Attributes and indexing


def _default_value(name: str, value: npt.ArrayLike, node: _Node) -> np.ndarray:
    """``value`` as the read-only default of input ``node``: its dtype, a shape that fits."""
    array = np.array(value, dtype=np.dtype(node.dtype))
    assert node.shape is not None
    if array.ndim != len(node.shape) or any(
        d >= 0 and d != a for d, a in zip(node.shape, array.shape, strict=True)
    ):
        raise ValueError(
            f"input {name!r}: the default has shape {array.shape}, the input {node.shape}"
        )
    array.flags.writeable = False
    return array


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
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    return name


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


# ----------------------------------------------------------------------------------------------
# Emitting nodes: every op function (see ops.py, generated from the opset) comes here.


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


def _operand(
    graph: Graph, value: Operand, like: str | None, op: str, spec: OperandSpec, source: str
) -> _Node:
    """The node of a Var operand, or a new constant node for a value (made at ``source``).

    A value takes the dtype of the Var it is combined with (``like``) when that is a float
    (so that float32 graphs stay float32) or an integer combined with integers; otherwise the
    codec's defaults apply (float64 for Python floats, int64 for ints). An operand declared
    ``:bool`` (a condition) or ``:int`` (labels, indices) makes a bool or int64 constant.
    """
    if isinstance(value, Var):
        return graph._own_node(value, op)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise TypeError(f"{op}: cannot use {type(value).__name__} as a constant: {exc}") from exc
    if spec.literal == "bool":
        array = array.astype(bool)
    elif spec.literal == "int":
        if array.dtype.kind not in "iu":
            raise TypeError(f"{op}: {spec.name} must be integers, got {array.dtype.name}")
        array = array.astype(np.int64)
    elif (like in FLOAT_DTYPES and array.dtype.kind in "biuf") or (
        like in INT_DTYPES and array.dtype.kind in "bi"
    ):
        array = array.astype(like)
    try:
        return graph._constant(array, None, source)
    except TypeError as exc:
        raise TypeError(f"{op}: {exc}") from exc


def operand_list(xs: Sequence[Operand], op: str) -> tuple[Operand, ...]:
    """The operands of a variadic op, given as a list."""
    if isinstance(xs, Var) or not isinstance(xs, Sequence) or not xs:
        raise TypeError(f"{op}: expected a non-empty list of operands")
    return tuple(xs)


def emit(op: str, args: Sequence[Operand | None], attrs: Mapping[str, Any] | None = None) -> Var:
    """Add the node ``op(*args, **attrs)`` to the graph of its Var operands and return it.

    Trailing operands and attributes that are None are left out; a bool for a flag attribute
    becomes 0/1 and a numpy dtype a dtype name. Checked and typed by the op's own rule.
    """
    source = _call_site(3)  # emit's caller is an op function or a Var operator: the SDK
    spec = SPECS[op]
    if spec.optional:
        args = list(args)
        while args and args[-1] is None and len(args) > spec.min_arity:
            args.pop()
    if len(spec.operands) == 1 and not spec.variadic and not isinstance(args[0], Var):
        raise TypeError(f"{op}: expected a gs.Var, got {type(args[0]).__name__}")
    graph = _graph_of(args, op)
    dtypes = [a.dtype for a in args if isinstance(a, Var)]
    like = next((d for d in dtypes if d in FLOAT_DTYPES), None)
    if like is None:  # a bool Var (e.g. where's condition) sets no dtype for values
        like = next((d for d in dtypes if d != "bool"), dtypes[0])
    operands = spec.operands
    ins = tuple(
        _operand(graph, a, like, op, operands[min(i, len(operands) - 1)], source)
        for i, a in enumerate(args)
    )
    given = {}
    for key, value in (attrs or {}).items():
        if value is not None:
            given[key] = _attr_value(spec.attrs.get(key), key, value)
    shape, dtype, checked = _infer(op, ins, given)
    wire = {k: checked[k] for k in given}
    return Var(graph._add_node(op, ins, wire, shape, dtype, source))


def _attr_value(spec: AttrSpec | None, key: str, value: Any) -> Any:
    """A Python value as the attribute's wire value: bools of flags as 0/1, dtypes by name."""
    if spec is None:
        return value
    if spec.is_flag and isinstance(value, bool | np.bool_):
        return int(value)
    if key == "dtype" and not isinstance(value, str):
        return _dtype_name(value)
    return value


_INPUT = re.compile(r"inputs\[(\d+)\]")


def _infer(
    op: str, ins: Sequence[_Node], attrs: Mapping[str, Any]
) -> tuple[Shape | None, str, dict[str, Any]]:
    """The (shape, dtype) of an op's result by the op's own type rule, and its attributes
    checked (defaults filled in).

    Raises TypeError (dtypes), ValueError (shapes, attributes) or IndexError (indexing) where
    the server would reject the node; the message starts with the op's name and says which
    operand or attribute is wrong.
    """
    spec = SPECS.get(op)
    if spec is None:
        raise ValueError(f"unknown op {op!r}")
    try:
        spec.check_arity(len(ins))
        checked = spec.check_attrs(attrs)
        out = spec.infer([TensorType(n.shape, n.dtype) for n in ins], **checked)
    except RuleError as exc:

        def operand(match: re.Match[str]) -> str:
            i = int(match.group(1))
            return f"operand {i} ({ins[i].name!r}{_where(ins[i])})"

        message = _INPUT.sub(operand, f"{op}: {exc.field}: {exc.reason}")
        error = (
            TypeError
            if isinstance(exc, TypeError)
            else IndexError
            if isinstance(exc, IndexError)
            else ValueError
        )
        raise error(message) from None
    return out.shape, out.dtype, checked


def constant(
    value: npt.ArrayLike, dtype: str | npt.DTypeLike | None = None, *, graph: Graph
) -> Var:
    """A constant node of ``graph`` holding ``value`` (op ``constant``; attr ``value`` tensor).

    Operators and op functions make constants by themselves; this is for a constant on its
    own, e.g. an output that does not depend on the inputs.
    """
    return graph.constant(value, dtype)
