"""The opset is the one definition of every op: the server implements exactly its ops, and the
SDK's functions, the CLI's whitelist and ListOperators all come from it."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import gradserve_client as gs
import numpy as np
import pytest
from gradserve.autodiff import OPS
from gradserve_client import expr, ops
from gradserve_client.opset import ALIASES, OPSET, SPECS
from gradserve_client.opset.listing import operators_response

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_sdk_ops  # noqa: E402

# Ops without derivative rules of their own, though they are not piecewise constant: using
# them under a derivative is an error that names the op (see docs/operators.md).
NO_RULES = {"prod_others"}


def test_every_definition_has_an_implementation_and_vice_versa() -> None:
    assert set(OPS) == set(SPECS)
    for name, opdef in OPS.items():
        assert opdef.spec is SPECS[name]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rules_match_the_definition(name: str) -> None:
    spec, opdef = SPECS[name], OPS[name]
    if opdef.partials is not None:
        assert spec.elementwise and len(opdef.partials) == len(spec.operands)
        assert opdef.jvp is None and opdef.vjp is None
        assert spec.differentiable == any(p is not None for p in opdef.partials)
    elif spec.differentiable and name not in NO_RULES:
        assert opdef.jvp is not None and opdef.vjp is not None, f"{name} lacks a rule"
    else:
        assert opdef.jvp is None and opdef.vjp is None, f"{name} is not differentiable"
    assert not (spec.elementwise and spec.differentiable and opdef.partials is None)


def test_the_sdk_has_one_typed_function_per_public_op() -> None:
    public = {n for n, s in SPECS.items() if s.sdk and not s.internal}
    assert set(ops.__all__) == public | set(ALIASES)
    assert set(ops.__all__) <= set(gs.__all__)
    for name in public:
        spec, fn = SPECS[name], getattr(gs, name)
        params = list(inspect.signature(fn).parameters)
        assert params == [o.name for o in spec.operands] + list(spec.attrs), name
        assert f"``{name}``" in (fn.__doc__ or "")
        assert inspect.signature(fn).return_annotation == "Var"


def test_sdk_functions_are_generated_from_the_opset() -> None:
    assert (ROOT / "client" / "gradserve_client" / "ops.py").read_text() == gen_sdk_ops.render(), (
        "client/gradserve_client/ops.py is out of date: run `make docs`"
    )


def test_the_cli_whitelist_is_the_opset() -> None:
    public = {n for n, s in SPECS.items() if s.sdk and not s.internal and not s.variadic}
    assert set(expr.FUNCTIONS) == public | set(ALIASES)
    for name, (fn, (lo, hi), keywords) in expr.FUNCTIONS.items():
        spec = SPECS[ALIASES.get(name, name)]
        assert fn is getattr(ops, spec.name)
        assert (lo, hi) == (spec.min_arity, spec.max_arity)
        assert keywords <= set(spec.attrs)


def test_list_operators_is_the_opset() -> None:
    response = operators_response()
    assert response.opset == OPSET == gs.OPSET
    assert [o.name for o in response.operators] == sorted(SPECS)
    by_name = {o.name: o for o in response.operators}
    assert (by_name["concatenate"].arity, by_name["concatenate"].min_arity) == (-1, 1)
    assert (by_name["where"].arity, by_name["where"].min_arity) == (3, 3)
    assert (by_name["constant"].arity, by_name["constant"].min_arity) == (0, 0)
    assert [a.name for a in by_name["var"].attrs] == ["axis", "keepdims", "ddof"]


def test_optional_operands_and_flags() -> None:
    """What `define` parses: optional trailing operands, literal kinds, variadic operands."""
    from gradserve_client.opset.core import define

    try:
        spec = define("_test_op", "x w [b]", lambda types: types[0], "a test op")
        assert (spec.min_arity, spec.max_arity) == (2, 3)
        spec.check_arity(2)
        spec.check_arity(3)
        with pytest.raises(ValueError, match="takes 2 to 3 operands, got 1"):
            spec.check_arity(1)
    finally:
        del SPECS["_test_op"]
    assert [o.literal for o in SPECS["where"].operands] == ["bool", None, None]
    assert SPECS["stack"].variadic and SPECS["stack"].min_arity == 1
    assert SPECS["sum"].attrs["keepdims"].is_flag


def test_new_sdk_functions_run_in_process() -> None:
    """gs.one_hot and the issue 8 ops, built with their generated functions, as numpy computes
    them (LocalClient: the same core as a server)."""
    g = gs.Graph()
    x = g.input("x", (2, 3))
    g.output("clip", gs.clip(x, -0.5, 0.5))
    g.output("gelu", gs.gelu(x, approximate="tanh"))
    g.output("pad", gs.pad(x, [0, 1, 1, 0], mode="edge"))
    g.output("cumsum", gs.cumsum(x, axis=1, reverse=True))
    g.output("hot", gs.one_hot(gs.argmax(x, axis=1), 3, dtype="float32"))
    g.output("cast", gs.astype(gs.tile(gs.flip(x, 0), [2]), np.float32))
    g.output("rep", gs.repeat(gs.mod(x, 0.75), 2, axis=0))
    x0 = np.array([[-1.0, 0.25, 2.0], [0.5, -0.2, 0.1]])
    out = gs.LocalClient().evaluate(g, {"x": x0})
    np.testing.assert_array_equal(out["clip"], np.clip(x0, -0.5, 0.5))
    t = np.tanh(np.sqrt(2 / np.pi) * (x0 + 0.044715 * x0**3))
    np.testing.assert_allclose(out["gelu"], 0.5 * x0 * (1 + t), rtol=1e-15)
    np.testing.assert_array_equal(out["pad"], np.pad(x0, ((0, 1), (1, 0)), mode="edge"))
    np.testing.assert_allclose(out["cumsum"], np.cumsum(x0[:, ::-1], 1)[:, ::-1], rtol=1e-15)
    np.testing.assert_array_equal(out["hot"], np.eye(3, dtype=np.float32)[[2, 0]])
    assert out["cast"].dtype == np.float32
    np.testing.assert_array_equal(out["cast"], np.tile(x0[::-1], 2).astype(np.float32))
    np.testing.assert_array_equal(out["rep"], np.repeat(np.mod(x0, 0.75), 2, axis=0))
