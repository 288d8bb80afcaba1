"""The opset: every op's name, operands, attributes, type rule and doc line, defined once.

This package is wire contract, like `gradserve_client.proto`, and stands on the same floor:
the SDK builds and checks graphs with it, the server validates them with it, and it imports
nothing of either. From it come the SDK's op functions (`gradserve_client/ops.py`, generated),
the CLI's whitelist, `ListOperators`, `docs/operators.md` and `OPSET`, the version a graph
declares.

Type rules see `TensorType`s whose shapes may be partly unknown in the SDK (a -1 size, or a
None shape for an unknown rank) and are concrete in the server. A rule never fails on an
unknown: it checks what is known, with the helpers of `core` (`broadcast_shapes`, `unify`,
`same_size`, `size`, `normalize_axes`, `same_dtype`), and raises `RuleError(field, reason)`
(`DTypeError` for dtypes) naming "inputs[i]" or "attrs.<name>".

How to add an op
1. Definition: in the module of its family here (`elementwise.py`, `reductions.py`,
   `structure.py`, `linalg.py`, `nn.py`, `internal.py`), call
   `define(name, "x1 x2", infer, "one doc line", attrs={"axis": AttrSpec("int", 0)})`, or
   `unary(name, doc)` / `binary(name, doc)` for an element-wise op. Operands are named in a
   string: `"condition:bool x1 x2"` (what a literal becomes in the SDK), `"xs ..."`
   (variadic), `"x w [b]"` (optional trailing operands). A new op bumps nothing: `OPSET`
   changes only when an existing op changes meaning.
2. Implementation: in `service/gradserve/autodiff/ops/<family>.py`, `implement(name, forward,
   ...)` with its derivative rules: `partials=` (element-wise, one per operand), or
   `linear=` / `bilinear=` (the JVP is derived), or `jvp=` and `vjp=`. See
   `gradserve.autodiff.registry`.
3. Run `make docs` (regenerates `gradserve_client/ops.py` and `docs/operators.md`; drift tests
   fail until you do), and write the op's tests (forward against numpy, JVP and VJP against
   central differences, as `tests/unit/test_elementwise.py` does).
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
