"""Write docs/operators.md from the opset, so the op reference cannot drift from the code.

Run with `make docs` (or `python scripts/gen_operators_doc.py [--check]`); a unit test fails
when the committed file differs from what the registry generates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import generated
from gradserve_client.opset import SPECS, OpSpec

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "operators.md"

HEADER = """\
# Operators

Generated from the opset (`gradserve_client/opset/`, where each op is defined once) by
`make docs` (`scripts/gen_operators_doc.py`); do not edit by hand. `gradserve ops` and the
`ListOperators` RPC list the same table from a running server.

Conventions (the article "The Matrix Calculus You Need For Deep Learning", and our choices at
kinks; `tests/unit/test_derivative_facts.py` checks each one):
- numerator layout: `jacobian(of=y, wrt=x).shape == y.shape + x.shape`;
- float64 by default, float32 end to end; operands of one op share a dtype (no silent promotion);
- at kinks: relu'(0) = 0, abs'(0) = 0, sign' = 0; `maximum`/`minimum` and the `max`/`min`
  reductions split the gradient evenly between tied elements;
- `where(c, a, b)`: the branch not taken contributes exactly 0, even where its own derivative
  is inf or NaN; every rule with a singular derivative keeps a zero cotangent exactly zero;
- softmax, log_softmax and logsumexp are computed stably; an all -inf row has finite gradients;
- integer and bool values (labels, masks, comparison results) flow through and have no gradient;
- `clip(x, lo, hi)`: at a bound the gradient goes to x (bounds included, as `torch.clamp`), to
  lo where x < lo, to hi where x > hi; where lo > hi the result is hi, and so is the gradient;
- slopes at 0: leaky_relu alpha, elu alpha, selu gamma * alpha; hardsigmoid's slope is 0 at its
  two kinks; `mod`/`fmod` have d/dx2 = -floor(x1 / x2) / -trunc(x1 / x2) between their jumps;
- `pad` in modes reflect, edge and wrap: a padded element's cotangent is added to the element
  it copies; `astype` passes derivatives through float-to-float casts only (a cast to an integer
  has derivative 0); `argmax`/`argmin` return the first index among ties and have no gradient.
- `max_pool`: tied maxima of a window share its (co)tangent evenly, padding never wins;
  `max_pool_indices` gives the first of them (ONNX's Indices);
  `avg_pool` with `ceil_mode` counts as torch does (`tests/unit/test_ops_conv.py`);
- `take`, `take_along_axis`: an index out of range gives NaN in a float result (and no gradient)
  and is an error for an integer or bool table (`tests/unit/test_ops_indexing.py`).

Attributes are typed: `int`, `float`, `ints` (a list of ints), `string`, `tensor`. Axes may be
negative. Operands in brackets are optional; `xs...` means one or more operands.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _operands(spec: OpSpec) -> str:
    names = [o.name for o in spec.operands]
    if spec.variadic:
        return f"{names[0]}..."
    return ", ".join(n if i < spec.min_arity else f"[{n}]" for i, n in enumerate(names))


def _attrs(name: str) -> str:
    specs = SPECS[name].attrs
    if not specs:
        return ""
    parts = []
    for key, spec in specs.items():
        default = "required" if spec.required else f"default {spec.default!r}"
        if not spec.required and spec.default is None:
            default = "optional"
        if spec.choices:
            default += f", one of {'/'.join(map(str, spec.choices))}"
        parts.append(f"`{key}`: {spec.kind}, {default}")
    return "; ".join(parts)


def render() -> str:
    rows = ["| op | operands | attributes | differentiable | what |", "|---|---|---|---|---|"]
    internal = list(rows)
    for name in sorted(SPECS):
        spec = SPECS[name]
        diff = "yes" if spec.differentiable else "no"
        row = f"| `{name}` | {_operands(spec)} | {_attrs(name)} | {diff} | {_cell(spec.doc)} |"
        (internal if spec.internal else rows).append(row)
    return (
        HEADER
        + "\n## Ops\n"
        + "\n".join(rows)
        + "\n\n## Internal ops\nEmitted by derivative rules (so that derivative programs are "
        "programs of the same IR and can be differentiated again); clients may use them too.\n\n"
        + "\n".join(internal)
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(generated.main(__doc__.splitlines()[0], TARGET, render))
