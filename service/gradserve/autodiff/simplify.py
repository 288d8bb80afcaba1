"""Simplification of Programs: common subexpressions merged, `a + -b` made `a - b`, products by
a constant one dropped, and the nodes no output needs removed; and `bind`, inputs made
constants (a Jacobian's seeds, so that what depends on them alone folds at compile time).

Derivative rules are written one operand at a time, so a derivative program repeats work: the
two partials of `x * x` are the same product, a subtraction's second partial is a negation
added to the first. Every rewrite here gives the same bits as the node it replaces (IEEE
`a - b` is `a + (-b)`, `x * 1` is `x`), so a simplified program computes exactly what the
original does, in fewer numpy calls. One loop over the topologically ordered nodes, no
recursion.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from gradserve.autodiff.ir import InputDef, NodeDef, Program, TensorType


def needed_by(nodes: Sequence[NodeDef], targets: Iterable[str]) -> set[str]:
    """The values that `targets` are computed from (themselves included)."""
    needed = set(targets)
    for node in reversed(nodes):
        if node.name in needed:
            needed.update(node.inputs)
    return needed


def _attr_key(value: object) -> Hashable:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float):  # -0.0 == 0.0, but they may give other bits
        return ("float", repr(value))
    if isinstance(value, list | tuple):
        return tuple(_attr_key(v) for v in value)
    return value


def _is_one(node: NodeDef | None) -> bool:
    if node is None or node.op != "constant":
        return False
    value = node.attrs["value"]
    return value.size == 1 and value.item() == 1


def simplified(
    inputs: tuple[InputDef, ...],
    nodes_in: Sequence[NodeDef],
    outputs_in: tuple[str, ...],
    types: Mapping[str, TensorType],
) -> Program:
    """The Program of these parts with the same outputs, computed by fewer nodes (see the
    module docstring); `nodes_in` topologically ordered, `types` may hold more names than
    they use. Outputs keep their own nodes, so two outputs never become one array."""
    outputs = set(outputs_in)
    rename: dict[str, str] = {}  # a removed value -> the value that replaces it
    seen: dict[Hashable, str] = {}  # (op, inputs, attrs) -> the first node computing it
    by_name: dict[str, NodeDef] = {}
    nodes: list[NodeDef] = []
    for node in nodes_in:
        args = tuple(map(rename.get, node.inputs, node.inputs))
        if args != node.inputs:
            node = NodeDef(node.name, node.op, args, node.attrs, node.source)
        if node.op == "add":  # a + (-b) and (-a) + b, from the partials of subtract
            for kept, minus in ((0, 1), (1, 0)):
                negated = by_name.get(args[minus])
                if negated is not None and negated.op == "negative":
                    subtrahend = negated.inputs[0]
                    node = NodeDef(node.name, "subtract", (args[kept], subtrahend), {}, node.source)
                    break
        if node.op == "multiply" and node.name not in outputs:
            for kept, one in ((0, 1), (1, 0)):
                if _is_one(by_name.get(args[one])) and types[args[kept]] == types[node.name]:
                    rename[node.name] = args[kept]
                    break
            if node.name in rename:
                continue
        attrs = node.attrs
        key = (
            node.op,
            node.inputs,
            tuple(sorted((k, _attr_key(attrs[k])) for k in attrs)) if attrs else (),
        )
        first = seen.get(key)
        if first is not None and node.name not in outputs:
            rename[node.name] = first
            continue
        seen.setdefault(key, node.name)
        by_name[node.name] = node
        nodes.append(node)
    needed = needed_by(nodes, outputs_in) | {spec.name for spec in inputs}
    kept = tuple(n for n in nodes if n.name in needed)
    return Program(inputs, kept, outputs_in, {k: types[k] for k in needed})


def bind(program: Program, values: Mapping[str, np.ndarray]) -> Program:
    """`program` with the inputs in `values` replaced by constants of those values (each of
    its input's type)."""
    constants = tuple(
        NodeDef(spec.name, "constant", (), {"value": values[spec.name]})
        for spec in program.inputs
        if spec.name in values
    )
    inputs = tuple(spec for spec in program.inputs if spec.name not in values)
    return Program(inputs, (*constants, *program.nodes), program.outputs, program.types)
