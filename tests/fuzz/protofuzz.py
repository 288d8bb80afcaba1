"""Hypothesis strategies for gradserve's request messages, built from their descriptors.

- ``message(descriptor)``: any message of that type, field by field from the descriptor
  (scalars at their extremes, unknown enum numbers, repeated and map fields, nested messages to
  a depth), with the fields whose meaning is known drawn from a pool that makes them refer to
  each other (names, ops, shapes, dtypes, tensor bytes of a length that fits or nearly).
- ``graphs()`` and ``requests(method)``: structure-aware requests: a graph of registered ops
  wired to earlier values, with attributes of the kinds the op declares, and inputs of the
  declared shapes, then every field of the request open to the same pools; so that most
  requests reach validation and many reach execution.
- ``mutated(data)``: the serialized bytes of a message, with bytes flipped, inserted, cut.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from gradserve_client.opset import SPECS
from gradserve_client.proto import graph_pb2, tensor_codec, tensor_pb2
from hypothesis import strategies as st

FD = d.FieldDescriptor
NAMES = ("x0", "x1", "x2", "n0", "n1", "n2", "n3", "y", "loss", "", "x0 ", "é")
OP_NAMES = tuple(sorted(SPECS))
# Small ONNX models the server converts (an `onnx_model` graph source), mutated or not.
ONNX_MODELS = tuple(
    (Path(__file__).parents[1] / "data" / "onnx" / f"{m}_opset18.onnx").read_bytes()
    for m in ("mlp_torchscript", "mlp_dynamo")
)
DTYPES = (
    tensor_pb2.DTYPE_FLOAT64,
    tensor_pb2.DTYPE_FLOAT32,
    tensor_pb2.DTYPE_INT64,
    tensor_pb2.DTYPE_INT32,
    tensor_pb2.DTYPE_BOOL,
)
_NUMPY = {
    tensor_pb2.DTYPE_FLOAT64: np.float64,
    tensor_pb2.DTYPE_FLOAT32: np.float32,
    tensor_pb2.DTYPE_INT64: np.int64,
    tensor_pb2.DTYPE_INT32: np.int32,
    tensor_pb2.DTYPE_BOOL: np.bool_,
}

# Strategies are built once per type (functools.cache): building them is what costs.
small_ints = st.integers(-3, 6)
names = st.sampled_from(NAMES) | st.text(max_size=6)
dims = st.lists(st.integers(-2, 4), max_size=3)
dtypes = st.sampled_from(DTYPES) | st.integers(-1, 9)
floats = st.floats(width=64) | st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e308, -1e-308])


@st.composite
def arrays(draw: Any, shape: tuple[int, ...] | None = None, dtype: int | None = None) -> Any:
    """A small numpy array (any values: NaN, inf, zero-size included)."""
    dtype = draw(st.sampled_from(DTYPES)) if dtype is None else dtype
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3))) if shape is None else shape
    size = int(np.prod(shape, dtype=np.int64))
    kind = np.dtype(_NUMPY[dtype]).kind
    if kind == "f":
        element = floats if dtype == tensor_pb2.DTYPE_FLOAT64 else st.floats(width=32)
        values = draw(st.lists(element, min_size=size, max_size=size))
    elif kind == "b":
        values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    else:
        values = draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size))
    return np.array(values, dtype=_NUMPY[dtype]).reshape(shape)


@st.composite
def tensors(draw: Any, shape: tuple[int, ...] | None = None, dtype: int | None = None) -> Any:
    """A Tensor: a valid one mostly, else one whose fields disagree."""
    if draw(st.integers(0, 4)):
        return tensor_codec.to_tensor(draw(arrays(shape, dtype)))
    return tensor_pb2.Tensor(
        dtype=draw(dtypes), shape=draw(dims), data=draw(st.binary(max_size=40))
    )


@functools.cache
def _attr(kind: str) -> st.SearchStrategy[graph_pb2.AttrValue]:
    typed = {
        "int": small_ints.map(lambda v: graph_pb2.AttrValue(i=v)),
        "float": floats.map(lambda v: graph_pb2.AttrValue(f=v)),
        "ints": st.lists(small_ints, max_size=3).map(
            lambda v: graph_pb2.AttrValue(ints=graph_pb2.Ints(values=v))
        ),
        "floats": st.lists(floats, max_size=3).map(
            lambda v: graph_pb2.AttrValue(floats=graph_pb2.Floats(values=v))
        ),
        "string": names.map(lambda v: graph_pb2.AttrValue(s=v)),
        "tensor": tensors().map(lambda v: graph_pb2.AttrValue(tensor=v)),
    }
    wrong = st.sampled_from(sorted(typed)).flatmap(lambda k: typed[k])
    if kind not in typed:
        return wrong
    return st.one_of(typed[kind], typed[kind], typed[kind], wrong)  # mostly the right kind


@st.composite
def graphs(draw: Any) -> tuple[graph_pb2.Graph, dict[str, Any]]:
    """A graph of registered ops over earlier values, and input tensors of its input shapes."""
    inputs, feed = [], {}
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(DTYPES[:1] * 4 + DTYPES))
        shape = draw(st.lists(st.integers(0, 3) | st.just(-1), max_size=3))
        declared = graph_pb2.InputSpec(name=f"x{i}", dtype=dtype, shape=shape)
        concrete = tuple(draw(st.integers(0, 3)) if s == -1 else s for s in shape)
        value = draw(tensors(concrete, dtype))
        if draw(st.integers(0, 3)) == 0:  # a default (like an ONNX initializer), fed or not
            declared.default.CopyFrom(value if draw(st.integers(0, 3)) else draw(tensors()))
            if draw(st.booleans()):
                value = None
        if value is not None:
            feed[f"x{i}"] = value
        inputs.append(declared)
    known = [s.name for s in inputs]
    nodes = []
    for j in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(OP_NAMES))
        spec = SPECS[op]
        low = spec.min_arity
        high = low + 2 if spec.max_arity is None else spec.max_arity  # variadic: a few
        arity = draw(st.integers(low, high))
        arity = draw(st.sampled_from([arity, arity, arity, max(0, low - 1), high + 1]))
        pool = st.sampled_from(known) if known else names
        ins = draw(st.lists(pool | names if draw(st.booleans()) else pool, min_size=arity,
                            max_size=arity))  # fmt: skip
        attrs = {}
        for key, a in spec.attrs.items():
            if a.required or draw(st.booleans()):
                attrs[key] = draw(_attr(a.kind))
        if draw(st.integers(0, 9)) == 0:
            attrs[draw(names)] = draw(_attr("?"))
        nodes.append(graph_pb2.Node(name=f"n{j}", op=op, inputs=ins, attrs=attrs))
        known.append(f"n{j}")
    outputs = draw(st.lists(st.sampled_from(known) | names if known else names, max_size=3))
    return graph_pb2.Graph(inputs=inputs, nodes=nodes, outputs=outputs), feed


# ---- any message, from its descriptor ---------------------------------------------------------

_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
# Fields whose values would only make a long but legitimate run (a training of 2^62 steps).
_BOUNDED = {"max_steps": (0, 6), "epochs": (-1, 3)}
# Fields drawn from the pools, by name.
_POOLED: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "op": st.sampled_from(OP_NAMES) | names,
    "loss": names,
    "graph_id": st.sampled_from(["", "nope", "0" * 64]) | st.text(max_size=8),
    "dataset_id": st.sampled_from(["", "ds-0"]) | st.text(max_size=8),
    "dtype": dtypes,
}


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.name in _BOUNDED:
        return st.integers(*_BOUNDED[field.name])
    if field.name in _POOLED and field.type != FD.TYPE_MESSAGE:
        return _POOLED[field.name]
    t = field.type
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return small_ints.filter(lambda v: lo <= v <= hi) | st.integers(lo, hi)
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return floats if t == FD.TYPE_DOUBLE else st.floats(width=32)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_STRING:
        return names if field.name in ("inputs", "outputs", "of", "wrt") else st.text(max_size=8)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=48)
    if t == FD.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values]) | st.integers(-2, 40)
    raise TypeError(field.type)


@functools.cache
def message(desc: d.Descriptor, depth: int = 4) -> st.SearchStrategy[Any]:
    """Any message of type ``desc``: every field optional, each drawn from its type (or pool)."""
    cls = message_factory.GetMessageClass(desc)
    if desc.full_name == "gradserve.v1.Tensor":
        return tensors()
    if desc.full_name == "gradserve.v1.Graph" and depth > 0:
        return graphs().map(lambda g: g[0]) | _fields(cls, desc, depth)
    return _fields(cls, desc, depth)


def _value(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            key, value = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            return st.dictionaries(_value(key, depth), _value(value, depth - 1), max_size=3)
        if depth <= 0:
            return st.just(message_factory.GetMessageClass(field.message_type)())
        return message(field.message_type, depth - 1)
    return _scalar(field)


def _fields(cls: Any, desc: d.Descriptor, depth: int) -> st.SearchStrategy[Any]:
    optional = {}
    for field in desc.fields:
        value = _value(field, depth)
        is_map = field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map:
            value = st.lists(value, max_size=4)
        optional[field.name] = value

    def build(values: dict[str, Any]) -> Any:
        msg = cls()
        for name, value in values.items():
            field = desc.fields_by_name[name]
            target = getattr(msg, name) if field.is_repeated else None
            if isinstance(value, dict):
                for k, v in value.items():
                    if field.message_type.fields_by_name["value"].type == FD.TYPE_MESSAGE:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif isinstance(value, list):
                target.extend(value)
            elif field.type == FD.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=optional).map(build)


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted or cut (a byte-level mutator)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(out)))
        action = draw(st.sampled_from(["flip", "insert", "cut", "varint"]))
        if action == "flip" and where < len(out):
            out[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            out[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "cut":
            del out[where : where + draw(st.integers(1, 16))]
        else:  # a huge length or tag
            out[where:where] = b"\xff" * draw(st.integers(1, 10)) + b"\x01"
    return bytes(out)


# ---- structure-aware requests ------------------------------------------------------------------


@functools.cache
def requests(method: d.MethodDescriptor) -> st.SearchStrategy[Any]:
    """Structure-aware requests of ``method`` (see ``_request``)."""
    return _request(method)


@st.composite
def _request(draw: Any, method: d.MethodDescriptor) -> Any:
    """A request of ``method``: a graph with inputs and the method's own fields that refer to
    its values, then (sometimes) any fields of the type merged over it."""
    cls = message_factory.GetMessageClass(method.input_type)
    fields = method.input_type.fields_by_name
    msg = cls()
    if "graph" in fields:
        graph, feed = draw(graphs())
        values = [i.name for i in graph.inputs] + [n.name for n in graph.nodes]
        value = st.sampled_from(values) | names if values else names
        some = st.lists(value, max_size=2)
        source = draw(st.integers(0, 7))
        if source > 1:
            msg.graph.CopyFrom(graph)
        elif source == 1 and "onnx_model" in fields:
            model = draw(st.sampled_from(ONNX_MODELS))
            msg.onnx_model = draw(st.just(model) | mutated(model) | st.binary(max_size=48))
        else:
            msg.graph_id = draw(_POOLED["graph_id"])
        params = {}
        if "params" in fields:  # Train: some inputs are trained, the others are data
            chosen = draw(st.lists(st.sampled_from(sorted(feed)), unique=True)) if feed else []
            params = {k: feed.pop(k) for k in chosen}
            for k, v in params.items():
                msg.params[k].CopyFrom(v)
            for k, v in feed.items():
                msg.inline_data.tensors[k].CopyFrom(v)
            msg.loss = draw(st.sampled_from(list(graph.outputs) or [""]) | names)
            msg.batch_size = draw(st.integers(-1, 4))
            msg.max_steps = draw(st.integers(0, 4))
            msg.optimizer.CopyFrom(draw(message(fields["optimizer"].message_type)))
        elif "inputs" in fields:
            for k, v in feed.items():
                msg.inputs[k].CopyFrom(v)
        for name in ("of", "wrt", "outputs"):
            if name in fields and fields[name].is_repeated:
                getattr(msg, name).extend(draw(some))
            elif name in fields:  # one name (Hessian's scalar output, say)
                setattr(msg, name, draw(value))
        for name in ("cotangents", "tangents", "vectors"):
            if name in fields:
                keys = draw(some)
                for k in keys:
                    msg_field = getattr(msg, name)
                    msg_field[k].CopyFrom(draw(tensors()))
    if draw(st.integers(0, 3)) == 0:
        msg.MergeFrom(draw(message(method.input_type, depth=2)))
    return msg


@functools.cache
def request_stream(method: d.MethodDescriptor) -> st.SearchStrategy[list[Any]]:
    """The messages of a client stream (PutDataset): chunks that mostly make arrays."""
    return st.lists(message(method.input_type, depth=2), max_size=4)
