import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_operators_doc  # noqa: E402
from gradserve.autodiff import OPS  # noqa: E402


def test_operators_doc_matches_registry():
    assert (ROOT / "docs" / "operators.md").read_text() == gen_operators_doc.render(), (
        "docs/operators.md is out of date: run `make docs`"
    )


# The element-wise and structure ops of issue 8 (names and attributes agreed with the ONNX
# importer).
OPSET_OPS_OF_ISSUE_8 = """erf gelu clip leaky_relu elu selu hardsigmoid softsign mod fmod
pad flip tile repeat cumsum astype argmax argmin one_hot""".split()


def test_every_design_op_is_registered_and_documented():
    design_ops = """negative abs sign exp exp2 expm1 log log2 log10 log1p sqrt square reciprocal
    sin cos tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh sigmoid relu softplus
    add subtract multiply divide power maximum minimum arctan2 hypot logaddexp
    sum mean max min prod var std logsumexp
    reshape transpose broadcast_to expand_dims squeeze concatenate stack slice
    matmul dot outer softmax log_softmax cross_entropy mse where constant
    less less_equal greater greater_equal equal not_equal""".split()
    design_ops += OPSET_OPS_OF_ISSUE_8
    text = (ROOT / "docs" / "operators.md").read_text()
    for name in design_ops:
        assert name in OPS, name
        assert f"| `{name}` |" in text, name
