"""Write docs/operators.md from the op registry, so the op reference cannot drift from the code.

Run with `make docs` (or `python scripts/gen_operators_doc.py [--check]`); a unit test fails
when the committed file differs from what the registry generates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradserve.autodiff import OPS

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "operators.md"

HEADER = """\
# Operators

Generated from the op registry by `make docs` (`scripts/gen_operators_doc.py`); do not edit by
hand. `gradserve ops` and the `ListOperators` RPC list the same table from a running server.

Conventions (the article "The Matrix Calculus You Need For Deep Learning", and our choices at
kinks; `tests/unit/test_derivative_facts.py` checks each one):
- numerator layout: `jacobian(of=y, wrt=x).shape == y.shape + x.shape`;
- float64 by default, float32 end to end; operands of one op share a dtype (no silent promotion);
- at kinks: relu'(0) = 0, abs'(0) = 0, sign' = 0; `maximum`/`minimum` and the `max`/`min`
  reductions split the gradient evenly between tied elements;
- `where(c, a, b)`: the branch not taken contributes exactly 0, even where its own derivative
  is inf or NaN; every rule with a singular derivative keeps a zero cotangent exactly zero;
- softmax, log_softmax and logsumexp are computed stably; an all -inf row has finite gradients;
- integer and bool values (labels, masks, comparison results) flow through and have no gradient.

Attributes are typed: `int`, `float`, `ints` (a list of ints), `string`, `tensor`. Axes may be
negative. "variadic" ops take one or more operands.
"""


def _attrs(name: str) -> str:
    specs = OPS[name].attrs
    if not specs:
        return ""
    parts = []
    for key, spec in specs.items():
        default = "required" if spec.required else f"default {spec.default!r}"
        if not spec.required and spec.default is None:
            default = "optional"
        parts.append(f"`{key}`: {spec.kind}, {default}")
    return "; ".join(parts)


def render() -> str:
    rows = ["| op | operands | attributes | differentiable | what |", "|---|---|---|---|---|"]
    internal = list(rows)
    for name in sorted(OPS):
        opdef = OPS[name]
        arity = "variadic" if opdef.arity is None else str(opdef.arity)
        diff = "yes" if opdef.differentiable else "no"
        row = f"| `{name}` | {arity} | {_attrs(name)} | {diff} | {opdef.doc} |"
        (internal if opdef.internal else rows).append(row)
    return (
        HEADER
        + "\n## Ops\n"
        + "\n".join(rows)
        + "\n\n## Internal ops\nEmitted by derivative rules (so that derivative programs are "
        "programs of the same IR and can be differentiated again); clients may use them too.\n\n"
        + "\n".join(internal)
        + "\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
