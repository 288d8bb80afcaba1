"""The opset: every op's name, operands, attributes, type rule and doc line, defined once.

This package is wire contract, like `gradserve_client.proto`, and stands on the same floor:
the SDK builds and checks graphs with it, the server validates them with it, and it imports
nothing of either (only the protos, for `listing`). From it come the SDK's op functions
(`gradserve_client/ops.py`, generated), the CLI's whitelist, `ListOperators`,
`docs/operators.md` and `OPSET`, the version a graph declares.

Type rules see `TensorType`s whose shapes may be partly unknown in the SDK (a -1 size, or a
None shape for an unknown rank) and are concrete in the server. A rule never fails on an
unknown: it checks what is known, with the helpers of `core` (`broadcast_shapes`, `unify`,
`same_size`, `size`, `normalize_axes`, `same_dtype`), and raises `RuleError(field, reason)`
(`DTypeError` for dtypes) naming "inputs[i]" or "attrs.<name>".

How to add an op
1. Definition (here, shared by SDK and server): in the module of its family
   (`elementwise.py`, `reductions.py`, `structure.py`, `linalg.py`, `nn.py`, `internal.py`),
   `define(name, "x1 x2", infer, "one doc line", attrs={"axis": AttrSpec("int", 0)})`, or
   `unary(name, doc)` / `binary(name, doc)` for an element-wise op (its rule is
   `elementwise_type`). Operands are named in a string: `"condition:bool x1 x2"` (what a
   literal becomes in the SDK), `"xs ..."` (variadic), `"x w [b]"` (optional trailing
   operands). Attributes: `AttrSpec(kind, default, required=, choices=, doc=)`; `choices=(0,
   1)` makes an int a flag (a bool in the SDK). `infer(types, **attrs)` returns a
   `TensorType` and raises `RuleError("attrs.axis", why)` / `DTypeError("inputs[1]", why)`;
   write it with the unknown-aware helpers of `core`. `internal=True` keeps an op out of the
   SDK's functions; `differentiable=False` for ops with no gradient. A new op bumps nothing:
   `OPSET` changes only when an existing op changes meaning.
2. Implementation (server only): in `service/gradserve/autodiff/ops/<family>.py`,
   `implement(name, numpy_forward, ...)` with its rules: `partials=` (element-wise: one
   `partial(g, ans, *xs, **attrs)` per operand), or `linear=` (the JVP is the op itself; give
   the attributes that apply it to batched values) or `bilinear=`, with `vjp=`; or `jvp=` and
   `vjp=`. `tests/unit/test_opset.py` fails until every definition has an implementation.
3. `make docs`: regenerates `gradserve_client/ops.py` (the SDK's typed function) and
   `docs/operators.md`; drift tests fail until you do. The CLI and ListOperators need nothing.
4. Tests: forward against numpy, JVP and VJP against central differences in both modes on
   several shapes (`tests/unit/gradcheck.py`; see `test_elementwise.py`,
   `test_ops_structure.py`), second derivatives for element-wise ops; a case in
   `tests/unit/test_graph_inference_agrees.py` (required for every SDK op), and one in
   `tests/integration/test_server_ops.py`'s SPECIAL if its operands are not one or two floats.
"""

from . import elementwise, internal, linalg, nn, reductions, structure  # noqa: F401 (define ops)
from .core import (
    ALIASES,
    DTYPES,
    FLOAT_DTYPES,
    INT_DTYPES,
    NUMERIC,
    OPSET,
    SPECS,
    AttrSpec,
    AttrValue,
    DTypeError,
    IndexRuleError,
    Operand,
    OpSpec,
    RuleError,
    Shape,
    TensorType,
)

__all__ = [
    "ALIASES",
    "DTYPES",
    "FLOAT_DTYPES",
    "INT_DTYPES",
    "NUMERIC",
    "OPSET",
    "SPECS",
    "AttrSpec",
    "AttrValue",
    "DTypeError",
    "IndexRuleError",
    "OpSpec",
    "Operand",
    "RuleError",
    "Shape",
    "TensorType",
]
