"""Node attributes to and from their wire form (`AttrValue`): one conversion for the SDK's
graphs, the ONNX converter and the server's derivative programs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import numpy as np

from . import graph_pb2, tensor_codec

#: An attribute as held in Python: int, float, tuple of ints or floats, str, ndarray.
Attr: TypeAlias = "int | float | str | tuple[int, ...] | tuple[float, ...] | np.ndarray"


def attr_to_proto(value: Attr | bool | Iterable[int | float]) -> graph_pb2.AttrValue:
    """The AttrValue of a Python or numpy value (a bool is an int; a sequence of ints is
    `ints`, of any other numbers `floats`)."""
    if isinstance(value, np.ndarray):
        return graph_pb2.AttrValue(tensor=tensor_codec.to_tensor(value))
    if isinstance(value, str):
        return graph_pb2.AttrValue(s=value)
    if isinstance(value, bool | int | np.integer):
        return graph_pb2.AttrValue(i=int(value))
    if isinstance(value, float | np.floating):
        return graph_pb2.AttrValue(f=float(value))
    values = list(value)
    if all(isinstance(v, int | np.integer) for v in values):
        return graph_pb2.AttrValue(ints=graph_pb2.Ints(values=[int(v) for v in values]))
    return graph_pb2.AttrValue(floats=graph_pb2.Floats(values=[float(v) for v in values]))


def attr_from_proto(msg: graph_pb2.AttrValue) -> Attr:
    """The Python value of an AttrValue (lists as tuples)."""
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
