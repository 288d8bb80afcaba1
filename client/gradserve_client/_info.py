"""What a server says about itself: its operators (`OperatorInfo`) and its version, limits and
features (`ServerInfo`), decoded from ListOperators and GetServerInfo."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .proto import gradient_service_pb2 as pb


@dataclass(frozen=True, slots=True)
class AttrInfo:
    """One attribute of an operator."""

    name: str
    kind: str  # "int", "float", "ints", "floats", "string" or "tensor"
    required: bool
    default: str


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """One operator of the registry, as `Client.operators` lists it."""

    name: str
    arity: int  # the most operands; -1: variadic
    attrs: tuple[AttrInfo, ...]
    differentiable: bool
    doc: str
    min_arity: int  # the fewest operands (trailing ones may be optional)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What `Client.server_info` returns: the version, opset, limits (0 = none), features,
    the BLAS threads of each server process (0 = unknown) and the process that answered
    ("host:pid"; "" = unknown)."""

    version: str
    opset: int
    limits: Mapping[str, int]
    features: tuple[str, ...]
    blas_threads: int = 0
    process: str = ""


def decode_operators(response: pb.ListOperatorsResponse) -> list[OperatorInfo]:
    """The operators of a ListOperatorsResponse."""
    return [
        OperatorInfo(
            name=op.name,
            arity=op.arity,
            attrs=tuple(
                AttrInfo(
                    a.name,
                    pb.AttrKind.Name(a.kind).removeprefix("ATTR_KIND_").lower(),
                    a.required,
                    a.default_value,
                )
                for a in op.attrs
            ),
            differentiable=op.differentiable,
            doc=op.doc,
            min_arity=op.min_arity,
        )
        for op in response.operators
    ]


def decode_server_info(response: pb.GetServerInfoResponse) -> ServerInfo:
    """The ServerInfo of a GetServerInfoResponse."""
    limits = response.limits
    return ServerInfo(
        version=response.version,
        opset=response.opset,
        limits={f.name: getattr(limits, f.name) for f in limits.DESCRIPTOR.fields},
        features=tuple(response.features),
        blas_threads=response.blas_threads,
        process=response.process,
    )
