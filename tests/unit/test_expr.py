"""The CLI's expression parser: what the whitelist accepts and everything it refuses."""

from __future__ import annotations

import gradserve_client as gs
import numpy as np
import numpy.typing as npt
import pytest
from gradserve_client.expr import (
    FUNCTIONS,
    MAX_LENGTH,
    ExprError,
    _functions,
    parse_expression,
    parse_value,
)
from gradserve_client.opset import ALIASES, SPECS

X = {"x": np.array(0.7), "v": np.array([1.0, 2.0])}


def ops(text: str, values: dict[str, np.ndarray] = X) -> list[str]:
    graph, _ = parse_expression(text, values)
    return [n.op for n in graph.to_proto().nodes]


def value(text: str, values: dict[str, np.ndarray] = X) -> np.ndarray:
    """What the parsed graph computes, run in-process."""
    graph, used = parse_expression(text, values)
    (result,) = gs.LocalClient().evaluate(graph, {n: values[n] for n in used}).values()
    return result


x, v = X["x"], X["v"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ln(sin(x**3)**2)", np.log(np.sin(x**3) ** 2)),
        ("-x + 2*x - x/3", x - x / 3),
        ("x - 1", x - 1),
        ("1 - x", 1 - x),
        ("x / 4", x / 4),
        ("4 / x", 4 / x),
        ("v @ v", 5.0),
        ("sum(v * v, axis=0, keepdims=True)", [5.0]),
        ("softmax(v, axis=-1)", np.exp(v) / np.exp(v).sum()),
        ("where(x > 0, x, -x)", x),
        ("where(x < 0, x, -x)", -x),
        ("[x > 0.5, x >= 0.7, x < 0.7, x <= 0.5, x == 0.7, x != 0.7]", [1, 1, 0, 0, 1, 0]),
        ("maximum(x, 0) + hypot(x, 1) + logaddexp(x, x)", x + np.hypot(x, 1) + x + np.log(2)),
        ("stack([x, x], axis=0)", [x, x]),
        ("concatenate([v, v])", [1.0, 2.0, 1.0, 2.0]),
        ("[ln(x**2), sin(3*x)]", [np.log(x**2), np.sin(3 * x)]),
        ("pi * e * x", np.pi * np.e * x),
        ("2 + 3", 5.0),
        ("2 - 3 * 4 / 8 ** 2", 2 - 3 * 4 / 8**2),
        ("-2 + +x", -2 + x),
        ("[1, 2]", [1.0, 2.0]),
    ],
)
def test_accepts_and_computes(text: str, expected: npt.ArrayLike) -> None:
    np.testing.assert_allclose(value(text), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ln(sin(x**3)**2)", ["constant", "power", "sin", "constant", "power", "log"]),
        ("2 + 3", ["constant", "constant", "add"]),
        ("[1, 2]", ["constant"]),
    ],
)
def test_builds_the_nodes(text: str, expected: list[str]) -> None:
    assert ops(text) == expected


def test_vector_function_is_a_stack_and_uses_only_bound_names() -> None:
    graph, used = parse_expression("[ln(x**2), sin(3*x)]", {"x": np.array(0.7), "z": np.ones(2)})
    assert used == ["x"] and graph.input_names == ["x"]
    assert graph.outputs["f"].shape == (2,)
    assert [n.op for n in graph.to_proto().nodes][-1] == "stack"


def test_output_name_avoids_inputs() -> None:
    graph, _ = parse_expression("f * 2", {"f": np.array(1.0)})
    assert graph.output_names == ["_f"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('__import__("os").system("echo pwned")', "only gradserve operators may be called"),
        ("x.real", "attribute access"),
        ("v[0]", "subscripts"),
        ("(lambda: 1)()", "only gradserve operators may be called"),
        ("lambda: 1", "lambdas"),
        ("'abc'", "literal"),
        ("True", "literal"),
        ("1j", "literal"),
        ("x if x else 1", "conditional"),
        ("x and x", "and/or"),
        ("(x, x)", "tuples"),
        ("{x}", "sets"),
        ("[i for i in v]", "comprehensions"),
        ("x % 2", "operator"),
        ("x // 2", "operator"),
        ("~x", "operator"),
        ("0 < x < 1", "chained"),
        ("x in v", "comparison"),
        ("exec('1')", "unknown function 'exec'"),
        ("open('f')", "unknown function 'open'"),
        ("z + 1", "unknown name 'z'"),
        ("sin", "is a function"),
        ("sin(x, x)", "takes 1 argument"),
        ("sum(v, axis=x)", "integer literal"),
        ("sum(v, dtype=1)", "does not take keyword dtype"),
        ("sin(*v)", "starred"),
        ("sin(x", "syntax error"),
        ("(x := 1)", "assignments"),
        ("f'{x}'", "f-strings"),
        ("[]", "empty list"),
        ("v + [1, 2, 3]", "broadcast"),
    ],
)
def test_refuses(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_expression(text, X)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_refuses_huge_or_deep_expressions() -> None:
    with pytest.raises(ExprError):
        parse_expression("x+" * 6000 + "x", X)
    with pytest.raises(ExprError):
        parse_expression("(" * 5000 + "x" + ")" * 5000, X)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.7", 0.7),
        ("3", 3.0),
        ("[1, 2]", [1.0, 2.0]),
        ("[[1],[2]]", [[1.0], [2.0]]),
        ("-1e3", -1e3),
    ],
)
def test_parse_value(text: str, value: object) -> None:
    array = parse_value(text)
    assert array.dtype == np.float64 and array.tolist() == value


def test_parse_value_nan_and_refusals() -> None:
    assert np.isnan(parse_value("NaN"))
    for bad in ("__import__('os')", "'a'", "[1, [2]]", "x", "{1: 2}", "[1, 'a']"):
        with pytest.raises(ExprError):
            parse_value(bad)


LONG = "(" + "x + " * 20 + "x).real"  # 87 characters: quoted as its first 57 and "..."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x.real", "not allowed in an expression: attribute access in 'x.real'"),
        (LONG, f"not allowed in an expression: attribute access in {LONG[:57] + '...'!r}"),
        ("sum(v, dtype=1)", "sum does not take keyword dtype; it accepts: axis, keepdims"),
        ("sin(x, **v)", "sin does not take keyword **; it accepts: none"),
        ("stack([x], dtype=1)", "stack does not take keyword dtype; it accepts: axis"),
        ("stack(x)", "stack takes one bracketed list, as in stack([a, b])"),
        ("stack([x], [x])", "stack takes one bracketed list, as in stack([a, b])"),
        ("[]", "an empty list [] is not a value"),
        ("sum(v, axis=x)", "sum(axis=...) must be an integer literal (or a list of them)"),
        ("sum(v, axis=[0, x])", "sum(axis=...) must be an integer literal (or a list of them)"),
        ("sum(v, axis=-1.0)", "sum(axis=...) must be an integer literal (or a list of them)"),
    ],
)
def test_refusal_messages_in_full(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_expression(text, X)
    assert str(info.value) == message


def test_sources_of_60_characters_are_quoted_whole() -> None:
    text = "(" + "x + " * 13 + "x).real"  # 60 characters
    assert len(text) == 60
    with pytest.raises(ExprError) as info:
        parse_expression(text, X)
    assert str(info.value).endswith(repr(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[x, 1]", [x, 1.0]),  # a number among Vars becomes a constant node
        ("stack([v, v], axis=1)", [[1.0, 1.0], [2.0, 2.0]]),
        ("sum(stack([v, v]), axis=[0, 1])", 6.0),
        ("sum(stack([v, v]), axis=-1)", [3.0, 3.0]),
    ],
)
def test_keywords_and_constants_reach_the_graph(text: str, expected: npt.ArrayLike) -> None:
    np.testing.assert_allclose(value(text), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x", "not a number or a list of numbers: 'x'"),
        ("[1, [2]]", "a ragged list is not an array: '[1, [2]]'"),
        ("'a'", "not a number or a list of numbers: \"'a'\""),
    ],
)
def test_parse_value_messages(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_value(text)
    assert str(info.value) == message


def test_parse_value_takes_python_tuples_with_spaces() -> None:
    # literal_eval, not JSON: a tuple (which JSON cannot read), after stripping the spaces
    assert parse_value(" (1, 2) ").tolist() == [1.0, 2.0]


def test_a_source_of_61_characters_is_shortened() -> None:
    text = "(" + "x + " * 13 + "xx).real"  # 61 characters
    assert len(text) == 61
    with pytest.raises(ExprError) as info:
        parse_expression(text, X)
    assert str(info.value).endswith(repr(text[:57] + "..."))


def test_the_length_limit_and_its_messages() -> None:
    at_limit = "[" + "x," * (MAX_LENGTH // 2 - 2) + "xx]"
    assert len(at_limit) == MAX_LENGTH
    with pytest.raises(ExprError) as info:  # parsed (not refused by length): xx is unbound
        parse_expression(at_limit, X)
    assert str(info.value) == "unknown name 'xx': bind it with --at xx=VALUE"
    with pytest.raises(ExprError) as info:
        parse_expression(at_limit + " ", X)
    assert str(info.value) == f"the expression is longer than {MAX_LENGTH} characters"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+" * 3000 + "x", "the expression cannot be parsed (too deeply nested?)"),  # the parser
        ("-" * 1500 + "x", "the expression is too deeply nested"),  # the builder's recursion
        ("await x", "not allowed in an expression: Await in 'await x'"),  # not in _WHAT
        ("conv(x)", "conv takes 2 to 3 argument(s), got 1"),
        ("sin(x, x)", "sin takes 1 argument(s), got 2"),
    ],
)
def test_more_refusal_messages_in_full(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_expression(text, X)
    assert str(info.value) == message


def test_the_function_table_is_the_opsets_public_non_variadic_ops() -> None:
    """FUNCTIONS is built at import; `_functions()` is what builds it."""
    table = _functions()
    assert table == FUNCTIONS
    public = {s.name for s in SPECS.values() if s.sdk and not s.internal and not s.variadic}
    assert set(table) == public | {a for a, t in ALIASES.items() if t in public}
    assert table["ln"] == table["log"] == (gs.log, (1, 1), frozenset())
    assert table["sum"] == (gs.sum, (1, 1), frozenset({"axis", "keepdims"}))
    assert table["conv"][1] == (2, 3)
    assert "stack" not in table and "safe_multiply" not in table and "constant" not in table
