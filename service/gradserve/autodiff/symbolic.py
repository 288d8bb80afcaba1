"""`Sym` and `Emitter`: how derivative rules write new IR nodes.

A rule sees its operands, its result and the incoming (co)tangent as `Sym` values and combines
them with operators (`g * op.cos(x)`) or with `op.<name>(...)`, which emits any registered op.

(Co)tangents may carry a leading batch axis (`Emitter.batch`) when a Jacobian pushes many of
them at once. Primal values never do. The helpers at the bottom (`sum_to`, `reshape`,
`broadcast_to`, `transpose`, `zeros`, `lift`) take a primal shape and add the batch axis, so a
rule written once serves both the plain and the batched pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradserve.autodiff.ir import NodeDef, TensorType
from gradserve.autodiff.registry import OPS


class Emitter:
    """Appends typed nodes to a growing program; names never collide with existing values."""

    def __init__(self, types: dict[str, TensorType], batch: tuple[int, ...] = ()) -> None:
        self.types = types
        self.batch = batch
        self.nodes: list[NodeDef] = []
        self._counter = 0
        self._constants: dict[tuple[str, bytes], Sym] = {}
        # The source of the node whose rule is emitting: a derivative's node names the call site
        # of the primal node it comes from in runtime errors.
        self.source = ""

    def fresh(self, hint: str) -> str:
        while True:
            self._counter += 1
            name = f"%{hint}{self._counter}"
            if name not in self.types:
                return name

    def sym(self, name: str) -> Sym:
        return Sym(self, name, self.types[name])

    def emit(self, op: str, args: Sequence[Sym], attrs: dict[str, Any]) -> Sym:
        opdef = OPS[op]
        name = self.fresh(op)
        node = NodeDef(name, op, tuple(a.name for a in args), attrs)
        attrs = opdef.check_attrs(node)
        self.types[name] = opdef.infer_node(name, [a.type for a in args], attrs)
        self.nodes.append(NodeDef(name, op, node.inputs, attrs, self.source))
        return Sym(self, name, self.types[name])

    def const(self, value: Any, dtype: str) -> Sym:
        array = np.asarray(value, dtype=dtype)
        key = (f"{dtype}{array.shape}", array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.emit("constant", (), {"value": array})
        return self._constants[key]


class Sym:
    """A value of the program being built."""

    __slots__ = ("em", "name", "type")

    def __init__(self, em: Emitter, name: str, type: TensorType) -> None:
        self.em = em
        self.name = name
        self.type = type

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def ndim(self) -> int:
        return len(self.type.shape)

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def lift(self, value: Any) -> Sym:
        return value if isinstance(value, Sym) else self.em.const(value, self.dtype)

    def _binary(self, name: str, other: Any, reverse: bool = False) -> Sym:
        other = self.lift(other)
        args = (other, self) if reverse else (self, other)
        return self.em.emit(name, args, {})

    def __add__(self, other: Any) -> Sym:
        return self._binary("add", other)

    def __radd__(self, other: Any) -> Sym:
        return self._binary("add", other, reverse=True)

    def __sub__(self, other: Any) -> Sym:
        return self._binary("subtract", other)

    def __rsub__(self, other: Any) -> Sym:
        return self._binary("subtract", other, reverse=True)

    def __mul__(self, other: Any) -> Sym:
        return self._binary("multiply", other)

    def __rmul__(self, other: Any) -> Sym:
        return self._binary("multiply", other, reverse=True)

    def __truediv__(self, other: Any) -> Sym:
        return self._binary("divide", other)

    def __rtruediv__(self, other: Any) -> Sym:
        return self._binary("divide", other, reverse=True)

    def __pow__(self, other: Any) -> Sym:
        return self._binary("power", other)

    def __matmul__(self, other: Any) -> Sym:
        return self._binary("matmul", other)

    def __neg__(self) -> Sym:
        return self.em.emit("negative", (self,), {})

    def __gt__(self, other: Any) -> Sym:
        return self._binary("greater", other)

    def __ge__(self, other: Any) -> Sym:
        return self._binary("greater_equal", other)

    def __lt__(self, other: Any) -> Sym:
        return self._binary("less", other)

    def __le__(self, other: Any) -> Sym:
        return self._binary("less_equal", other)

    def __repr__(self) -> str:
        return f"Sym({self.name}: {self.type})"


class _OpNamespace:
    """`op.cos(x)`, `op.sum(g, axis=(-1,))`, `op.concatenate([a, b], axis=-1)`: emit by name."""

    def __getattr__(self, name: str):
        if name not in OPS:
            raise AttributeError(name)

        def call(*args: Any, **attrs: Any) -> Sym:
            if OPS[name].spec.variadic:
                (args,) = args
            syms = [a for a in args if isinstance(a, Sym)]
            # Literals take the dtype of a non-bool operand: where(c, g, 0) needs 0 as g's dtype.
            like = next((a for a in syms if a.dtype != "bool"), syms[0])
            operands = [like.lift(a) for a in args]
            attrs = {k: v for k, v in attrs.items() if v is not None}
            return like.em.emit(name, operands, attrs)

        return call


op = _OpNamespace()


# ---- batch-aware helpers for (co)tangents ------------------------------------------------------


def batched(g: Sym, shape: Sequence[int]) -> tuple[int, ...]:
    return g.em.batch + tuple(shape)


def sum_to(g: Sym, shape: Sequence[int]) -> Sym:
    """Sum a (co)tangent down to a primal shape (the batch axis stays)."""
    shape = tuple(shape)
    if g.shape == batched(g, shape):
        return g
    return op.sum_to(g, shape=shape, batch_ndim=len(g.em.batch))


def lift(t: Sym, ndim: int) -> Sym:
    """Insert unit axes after the batch axis so that `t` broadcasts like a rank-`ndim` value."""
    nb = len(t.em.batch)
    pad = ndim - (t.ndim - nb)
    if pad <= 0 or nb == 0:  # without a batch axis numpy's broadcasting already aligns
        return t
    return op.reshape(t, shape=t.shape[:nb] + (1,) * pad + t.shape[nb:])


def reshape(g: Sym, shape: Sequence[int]) -> Sym:
    target = batched(g, shape)
    return g if g.shape == target else op.reshape(g, shape=target)


def broadcast_to(g: Sym, shape: Sequence[int]) -> Sym:
    target = batched(g, shape)
    return g if g.shape == target else op.broadcast_to(lift(g, len(shape)), shape=target)


def transpose(g: Sym, axes: Sequence[int]) -> Sym:
    nb = len(g.em.batch)
    return op.transpose(g, axes=tuple(range(nb)) + tuple(a + nb for a in axes))


def zeros(like: Sym, shape: Sequence[int], dtype: str | None = None) -> Sym:
    return like.em.emit("zeros", (), {"shape": batched(like, shape), "dtype": dtype or like.dtype})
