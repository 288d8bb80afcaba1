"""ONNX's own backend node test cases, run through the converter and gradserve's core.

The cases are generated in memory by the onnx package (onnx.backend.test.case.node): a
one-node model, its inputs and the expected outputs, written by the ONNX project. Every case
of every op type in CLAIMED runs, with the case's tolerances; the ones whose tensors are not
of gradserve's dtypes (float16, uint8, ...) are counted apart. Shape and axes operands that a
case feeds as graph inputs are folded at import with `static_inputs` (STATIC_OPERANDS). The
cases that fail are listed in docs/onnx.md with the reason, and a test checks that list.
"""

from __future__ import annotations

import importlib
import re
import warnings
from functools import cache
from pathlib import Path

import gradserve_client as gs
import numpy as np
from gradserve_client.onnx import STATIC_OPERANDS, to_graph

ROOT = Path(__file__).resolve().parents[2]

#: The ONNX op types the conformance run claims: those whose gradserve ops exist here.
CLAIMED = (
    "Abs", "Acos", "Acosh", "Add", "Asin", "Asinh", "Atan", "Atanh", "Concat", "Cos", "Cosh",
    "Div", "Dropout", "Equal", "Exp", "Expand", "EyeLike", "Flatten", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "Identity", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "MatMul", "Max", "Mean", "Min", "Mul", "Neg", "Pow",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "Shape", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "Transpose", "Unsqueeze", "Where",
    "ArgMax", "ArgMin", "Cast", "CastLike", "Clip", "CumSum", "Elu", "Erf", "Gelu",
    "HardSigmoid", "LeakyRelu", "Mod", "Pad", "Selu", "Softsign", "Tile",
    "AveragePool", "BatchNormalization", "Conv", "Einsum", "Gather", "GatherElements",
    "LayerNormalization", "MaxPool", "Constant", "ConstantOfShape", "Range",
    "And", "HardSwish", "InstanceNormalization", "Mish", "Not", "Or", "PRelu", "Xor",
)  # fmt: skip

DTYPES = {"float32", "float64", "int64", "int32", "bool"}
PASS, OTHER_DTYPE = "pass", "other dtype"


@cache
def cases() -> list:
    """The single-node test cases of the CLAIMED op types. Generating a module's cases runs
    its reference code, so only the modules that make a node of a claimed op are imported."""
    import onnx.backend.test.case.node as node_cases

    folder = Path(node_cases.__file__).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(folder.glob("[a-z]*.py")):
            made = set(re.findall(r'make_node\(\s*"(\w+)"', path.read_text()))
            if made & set(CLAIMED):
                importlib.import_module(f"{node_cases.__name__}.{path.stem}")
    found = {}
    for case in node_cases._NodeTestCases:
        nodes = case.model.graph.node
        if len(nodes) == 1 and nodes[0].op_type in CLAIMED:  # not the _expanded variants
            found[case.name] = case
    return list(found.values())


def run_case(case, client: gs.LocalClient) -> str:
    """PASS, OTHER_DTYPE, or why the case fails."""
    (node,) = case.model.graph.node
    names = [i.name for i in case.model.graph.input]
    for inputs, expected in case.data_sets:
        feeds = dict(zip(names, inputs, strict=False))
        if any(np.asarray(a).dtype.name not in DTYPES for a in [*inputs, *expected]):
            return OTHER_DTYPE
        static = {
            node.input[i]: feeds[node.input[i]]
            for i in STATIC_OPERANDS.get(node.op_type, ())
            if i < len(node.input) and node.input[i] in feeds
        }
        try:
            graph = to_graph(case.model, static_inputs=static)
            fed = {k: v for k, v in feeds.items() if k not in static}
            got = client.evaluate(graph, fed)
        except (ValueError, gs.GradserveError) as exc:
            return f"{type(exc).__name__}: {exc}"
        for out, want in zip(case.model.graph.output, expected, strict=True):
            value = got[out.name]
            if value.dtype != want.dtype or value.shape != want.shape:
                want_type = f"{want.dtype}{list(want.shape)}"
                return f"{out.name}: got {value.dtype}{list(value.shape)}, want {want_type}"
            if not np.allclose(value, want, rtol=case.rtol, atol=case.atol, equal_nan=True):
                return f"{out.name}: values differ beyond rtol={case.rtol}, atol={case.atol}"
    return PASS


@cache
def results() -> dict[str, str]:
    client = gs.LocalClient()
    return {case.name: run_case(case, client) for case in cases()}


def documented_failures() -> set[str]:
    """The case names listed under "Conformance cases that fail" in docs/onnx.md."""
    text = (ROOT / "docs" / "onnx.md").read_text()
    section = text.split("### Conformance cases that fail", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(test_\w+)`", section, flags=re.M))


def test_every_claimed_op_has_cases() -> None:
    covered = {case.model.graph.node[0].op_type for case in cases()}
    assert covered == set(CLAIMED)


def test_at_least_95_percent_of_the_cases_pass() -> None:
    counted = [r for r in results().values() if r != OTHER_DTYPE]
    passed = counted.count(PASS)
    assert len(counted) > 300
    assert passed / len(counted) >= 0.95, f"{passed} of {len(counted)} pass"


def test_the_failing_cases_are_exactly_those_docs_onnx_md_lists() -> None:
    failing = {name for name, r in results().items() if r not in (PASS, OTHER_DTYPE)}
    documented = documented_failures()
    details = {name: results()[name] for name in failing - documented}
    assert not failing - documented, f"failing, not in docs/onnx.md: {details}"
    assert not documented - failing, f"listed in docs/onnx.md, but pass: {documented - failing}"


def test_the_documented_pass_rate_is_the_measured_one() -> None:
    counted = [r for r in results().values() if r != OTHER_DTYPE]
    figure = f"{counted.count(PASS)} of {len(counted)}"
    assert figure in (ROOT / "docs" / "onnx.md").read_text(), figure
