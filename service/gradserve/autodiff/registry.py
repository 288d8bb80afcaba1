"""The server's half of each op: its numpy forward and derivative rules, attached by name to
the op's definition in the opset (`gradserve_client.opset`: operands, attributes, type rule,
doc line), which the SDK shares.

Ops are implemented in `gradserve.autodiff.ops`, one short entry each, in the style of HIPS
autograd's VJP table. Derivative rules are functions of `Sym` values that emit IR nodes, so a
derivative is itself a Program (see `transforms.py`). An op gives one of:
- `partials=` (element-wise ops): one `partial(g, ans, *xs, **attrs) -> Sym` per operand,
  which maps an incoming tangent or cotangent `g` (the same thing for a diagonal Jacobian) to
  its share; the framework lifts tangents to the output's rank and sums cotangents back to the
  operand's shape (autograd's `unbroadcast`);
- `linear=` with `vjp=`: for an op linear in its operands, the JVP is the op itself applied to
  the tangents; `linear(batch, *xs, **attrs)` gives the attributes that apply the op to values
  with the leading batch axes `batch` (JAX's `deflinear`);
- `bilinear=` with `vjp=`: for an op bilinear in its two operands the JVP is f(tx, y) +
  f(x, ty); `bilinear(t, ans, x, y, i)` computes f with operand i replaced by its (batched)
  tangent t;
- `jvp(tangents, ans, *xs, **attrs) -> Sym` (tangents hold None for symbolic zeros) and
  `vjp(g, ans, *xs, **attrs) -> tuple[Sym | None, ...]` (one per operand, None where no
  gradient flows).
Every rule is batch-polymorphic: (co)tangents may carry leading batch axes (`Emitter.batch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gradserve_client.opset import OPSET, SPECS, AttrSpec, OpSpec, RuleError, TensorType

from gradserve.autodiff.ir import GraphError, NodeDef

Partial = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class OpDef:
    """An op's definition (`spec`) with the server's implementation of it."""

    spec: OpSpec
    forward: Callable[..., np.ndarray]  # forward(*arrays, **attrs)
    partials: tuple[Partial | None, ...] | None = None  # element-wise ops
    jvp: Callable[..., Any] | None = None
    vjp: Callable[..., Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def attrs(self) -> Mapping[str, AttrSpec]:
        return self.spec.attrs

    @property
    def doc(self) -> str:
        return self.spec.doc

    @property
    def differentiable(self) -> bool:
        return self.spec.differentiable

    @property
    def internal(self) -> bool:
        return self.spec.internal

    @property
    def elementwise(self) -> bool:
        return self.partials is not None

    def check_attrs(self, node: NodeDef) -> dict[str, Any]:
        """The node's arity checked, its attributes coerced to their kinds with defaults."""
        try:
            self.spec.check_arity(len(node.inputs))
            return self.spec.check_attrs(node.attrs)
        except RuleError as exc:
            raise GraphError(node.name, exc.field, exc.reason) from None

    def infer_node(self, node: str, in_types: Sequence[TensorType], attrs: Mapping) -> TensorType:
        try:
            return self.spec.infer(in_types, **attrs)
        except RuleError as exc:
            raise GraphError(node, exc.field, exc.reason) from None

    def bind(self, attrs: Mapping[str, Any]) -> Callable[..., np.ndarray]:
        """The forward with its attributes bound: what the executor calls."""
        return functools.partial(self.forward, **attrs) if attrs else self.forward


OPS: dict[str, OpDef] = {}


def implement(
    name: str,
    forward: Callable[..., np.ndarray],
    *,
    partials: tuple[Partial | None, ...] | None = None,
    linear: Callable[..., dict[str, Any]] | None = None,
    bilinear: Callable[..., Any] | None = None,
    jvp: Callable[..., Any] | None = None,
    vjp: Callable[..., Any] | None = None,
) -> OpDef:
    """Attach the numpy forward and the derivative rules to the opset's op `name`."""
    assert name in SPECS and name not in OPS, name
    if linear is not None:
        jvp = _linear_jvp(name, linear)
    if bilinear is not None:
        jvp = _bilinear_jvp(bilinear)
    opdef = OpDef(SPECS[name], forward, partials, jvp, vjp)
    OPS[name] = opdef
    return opdef


def _linear_jvp(name: str, batched_attrs: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """The JVP of an op linear in its operands: the op applied to the tangents (a missing
    tangent is a zero)."""
    from gradserve.autodiff.symbolic import zeros

    def jvp(ts, ans, *xs, **attrs):
        parts = [t if t is not None else zeros(x, x.shape) for t, x in zip(ts, xs, strict=True)]
        return ans.em.emit(name, parts, batched_attrs(ans.em.batch, *xs, **attrs))

    return jvp


def _bilinear_jvp(product: Callable[..., Any]) -> Callable[..., Any]:
    """The JVP of an op bilinear in its two operands: f(ta, b) + f(a, tb)."""

    def jvp(ts, ans, a, b):
        terms = [product(t, ans, a, b, i) for i, t in enumerate(ts) if t is not None]
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    return jvp


__all__ = ["OPS", "OPSET", "OpDef", "RuleError", "implement"]
