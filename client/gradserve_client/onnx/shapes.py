"""Import-time shape arithmetic over symbolic dimensions.

A TorchScript export of ``x.view(x.size(0), -1)`` with a dynamic batch computes its target shape
at run time: Shape -> Gather -> Unsqueeze -> Concat -> Reshape. Here such values are tuples of
sizes and symbols (the ONNX dim_params), and `reshape_target` turns the final shape into one
that gradserve's reshape takes: concrete sizes and at most one -1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ._model import Node, Shape, Value

Elems = tuple["int | str", ...]

#: The ops that may compute on shapes with symbolic dimensions at import.
SHAPE_ARITHMETIC = frozenset(
    (
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Concat",
        "Slice",
        "Cast",
        "Identity",
        "Mul",
        "Add",
        "Sub",
        "Div",
    )
)


def _elems(n: Node, i: int) -> Elems:
    value = n.input(i)
    elems = value.shape_elems
    if elems is None:
        raise n.fail("needs a static shape: this operand is not known at import", f"input {i}")
    return elems


def _result(elems: Sequence[int | str], scalar: bool) -> Value:
    shape = () if scalar else (len(elems),)
    if all(isinstance(e, int) for e in elems):
        array = np.array(elems, dtype=np.int64).reshape(shape)
        return Value.of(array)
    return Value("int64", shape, elems=tuple(elems))


def shape_arithmetic(n: Node) -> Value:
    """The node's output, computed on shape elements (some symbolic) at import."""
    op = n.op_type
    x = n.input(0)
    if op in ("Cast", "Identity"):
        return Value("int64", x.shape, elems=_elems(n, 0))
    if op == "Concat":
        joined = [e for i in range(len(n.inputs)) if n.has(i) for e in _elems(n, i)]
        return _result(joined, False)
    if op == "Gather":
        index = n.static(1, "indices")
        elems = _elems(n, 0)
        picked = [elems[int(k)] for k in np.asarray(index).reshape(-1)]
        return _result(picked, np.ndim(index) == 0)
    if op == "Unsqueeze":
        return _result(_elems(n, 0), False)
    if op == "Squeeze":
        return _result(_elems(n, 0), True)
    if op == "Slice":
        (start,), (end,) = n.static_ints(1, "starts"), n.static_ints(2, "ends")
        step = n.static_ints(4, "steps")[0] if n.has(4) else 1
        return _result(_elems(n, 0)[slice(start, end, step)], False)
    a, b = _elems(n, 0), _elems(n, 1)
    if len(a) == 1 and len(b) > 1:
        a = a * len(b)
    if len(b) == 1 and len(a) > 1:
        b = b * len(a)
    out = [_binary(op, p, q) for p, q in zip(a, b, strict=True)]
    scalar = x.rank == 0 and n.input(1).rank == 0
    return _result(out, scalar)


def _binary(op: str, p: int | str, q: int | str) -> int | str:
    if isinstance(p, int) and isinstance(q, int):
        return {"Mul": p * q, "Add": p + q, "Sub": p - q, "Div": p // q if q else 0}[op]
    if op == "Mul" and (p == 1 or q == 1):
        return q if p == 1 else p
    symbol = {"Mul": "*", "Add": "+", "Sub": "-", "Div": "/"}[op]
    return f"({p}{symbol}{q})"


def reshape_target(
    n: Node, x_shape: Shape, target: Sequence[int | str], allowzero: bool
) -> tuple[int, ...]:
    """ONNX Reshape's ``target`` (0 copies an input dimension unless allowzero; -1 is
    inferred; symbols are run-time sizes) as sizes and at most one -1."""
    dims = list(target)
    if not allowzero:
        for i, d in enumerate(dims):
            if d == 0:
                if x_shape is None or i >= len(x_shape) or x_shape[i] is None:
                    raise n.fail(
                        "a 0 in the shape copies an input dimension that is unknown", "input 1"
                    )
                dims[i] = x_shape[i]  # type: ignore[assignment]
    unknown = [i for i, d in enumerate(dims) if not isinstance(d, int) or d == -1]
    if len(unknown) <= 1:
        return tuple(d if isinstance(d, int) else -1 for d in dims)
    # view(x.size(0), -1): the symbols of the target are the input's, so -1 is a size.
    symbols = [d for d in dims if isinstance(d, str)]
    if dims.count(-1) == 1 and x_shape is not None and None not in x_shape:
        left = Counter(d for d in x_shape if isinstance(d, str))
        left.subtract(symbols)
        if all(v == 0 for v in left.values()):
            known_in = math.prod(d for d in x_shape if isinstance(d, int))
            known_out = math.prod(d for d in dims if isinstance(d, int) and d != -1)
            if known_out and known_in % known_out == 0:
                dims[dims.index(-1)] = known_in // known_out
                return reshape_target(n, x_shape, dims, True)
    raise n.fail(
        f"needs a static shape: the target {[str(d) for d in target]} has more than one size "
        "that is known only at run time",
        "input 1",
    )
