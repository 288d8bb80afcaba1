"""The opset as the wire describes it: the ListOperators response, which the server sends and
`LocalClient` decodes in-process."""

from __future__ import annotations

from typing import Any

from ..proto import gradient_service_pb2 as pb
from .core import OPSET, SPECS, AttrSpec, OpSpec

_ATTR_KINDS = {
    "int": pb.ATTR_KIND_INT,
    "float": pb.ATTR_KIND_FLOAT,
    "ints": pb.ATTR_KIND_INTS,
    "floats": pb.ATTR_KIND_FLOATS,
    "string": pb.ATTR_KIND_STRING,
    "tensor": pb.ATTR_KIND_TENSOR,
}


def default_text(value: Any) -> str:
    """An attribute default as text: "" for none, lists as [1, 2]."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _attr_info(name: str, spec: AttrSpec) -> pb.AttrInfo:
    return pb.AttrInfo(
        name=name,
        kind=_ATTR_KINDS[spec.kind],
        required=spec.required,
        default_value="" if spec.required else default_text(spec.default),
    )


def operator_info(spec: OpSpec) -> pb.OperatorInfo:
    return pb.OperatorInfo(
        name=spec.name,
        arity=-1 if spec.max_arity is None else spec.max_arity,
        min_arity=spec.min_arity,
        attrs=[_attr_info(k, a) for k, a in spec.attrs.items()],
        differentiable=spec.differentiable,
        doc=spec.doc,
    )


def operators_response() -> pb.ListOperatorsResponse:
    """Every op of the opset, sorted by name."""
    return pb.ListOperatorsResponse(
        operators=[operator_info(SPECS[name]) for name in sorted(SPECS)], opset=OPSET
    )
