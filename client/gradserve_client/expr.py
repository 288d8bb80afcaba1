"""Safe math expressions for the CLI: ``"ln(sin(x**3)**2)"`` -> a `Graph`.

The text is parsed with Python's `ast` and walked against a whitelist: numbers, the names bound
to values, the constants ``pi`` and ``e``, calls of gradserve's op functions by their numpy
names (``ln`` is ``log``), the operators ``+ - * / ** @``, unary ``-`` and ``+``, one-step
comparisons, and bracketed lists (``[ln(x**2), sin(3*x)]`` is a vector function, stacked).
Nothing is ever evaluated by Python: every node becomes a graph node, and anything else
(attributes, subscripts, lambdas, strings, unknown names...) is refused with an `ExprError`.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import graph as G
from . import ops
from .opset import ALIASES, SPECS, OpSpec

__all__ = ["FUNCTIONS", "ExprError", "parse_expression", "parse_value"]

MAX_LENGTH = 10_000


def _keywords(spec: OpSpec) -> frozenset[str]:
    """Keyword arguments take integer literals (or lists of them, or bools): the int attributes."""
    return frozenset(k for k, a in spec.attrs.items() if a.kind in ("int", "ints"))


def _functions() -> dict[str, tuple[Callable[..., G.Var], tuple[int, int], frozenset[str]]]:
    out = {}
    for spec in SPECS.values():
        if spec.sdk and not spec.internal and not spec.variadic:
            keywords = _keywords(spec)
            arity = (spec.min_arity, len(spec.operands))
            out[spec.name] = (getattr(ops, spec.name), arity, keywords)
    for alias, target in ALIASES.items():
        out[alias] = out[target]
    return out


#: The callable names: the op functions of the opset, (min, max) operands, keyword arguments.
FUNCTIONS = _functions()
_LIST_FUNCTIONS = {
    name: getattr(ops, name) for name, spec in SPECS.items() if spec.variadic and spec.sdk
}
CONSTANTS = {"pi": math.pi, "e": math.e}

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], G.Var]] = {
    ast.Add: ops.add,
    ast.Sub: ops.subtract,
    ast.Mult: ops.multiply,
    ast.Div: ops.divide,
    ast.Pow: ops.power,
    ast.MatMult: ops.matmul,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], G.Var]] = {
    ast.Lt: ops.less,
    ast.LtE: ops.less_equal,
    ast.Gt: ops.greater,
    ast.GtE: ops.greater_equal,
    ast.Eq: ops.equal,
    ast.NotEq: ops.not_equal,
}
_WHAT = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.Starred: "starred arguments",
    ast.NamedExpr: "assignments",
    ast.IfExp: "conditional expressions (use where(c, a, b))",
    ast.BoolOp: "and/or (use where and comparisons)",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Tuple: "tuples (use [a, b] for a vector)",
    ast.JoinedStr: "f-strings",
    ast.ListComp: "comprehensions",
    ast.GeneratorExp: "generators",
}


class ExprError(ValueError):
    """An expression or value that is not allowed or does not parse; the message is one line."""


def parse_value(text: str) -> np.ndarray:
    """A ``--at`` value: a number or a (nested) list of numbers, as float64. Parsed with
    ``ast.literal_eval`` (or JSON, for NaN and Infinity), never evaluated."""
    try:
        value: Any = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except ValueError:
            raise ExprError(f"not a number or a list of numbers: {text!r}") from None
    if isinstance(value, tuple):
        value = list(value)
    try:
        array = np.asarray(value)
    except ValueError:
        raise ExprError(f"a ragged list is not an array: {text!r}") from None
    if array.dtype.kind not in "biuf":
        raise ExprError(f"not a number or a list of numbers: {text!r}")
    return array.astype(np.float64)


def parse_expression(
    text: str, values: Mapping[str, np.ndarray], output: str = "f"
) -> tuple[G.Graph, list[str]]:
    """The graph computing ``text`` as its output ``output``, with one float64 input per
    name of ``values`` that the expression uses (shaped like the value); and those names, in
    the order of ``values``. Raises `ExprError` (one line) for anything not allowed."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error in expression at column {exc.offset}: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError):
        raise ExprError("the expression cannot be parsed (too deeply nested?)") from None
    builder = _Builder(values)
    try:
        result = builder.visit(tree.body)
        graph = builder.graph
        if not isinstance(result, G.Var):
            result = graph.constant(np.asarray(result, np.float64))
        name = output
        while name in values:
            name = "_" + name
        graph.output(name, result)
    except ExprError:
        raise
    except RecursionError:
        raise ExprError("the expression is too deeply nested") from None
    except (TypeError, ValueError, IndexError) as exc:  # shape and type errors of the builder
        raise ExprError(str(exc).splitlines()[0]) from None
    used = [n for n in values if n in builder.inputs]
    return graph, used


class _Builder:
    def __init__(self, values: Mapping[str, np.ndarray]) -> None:
        self.graph = G.Graph()
        self.values = values
        self.inputs: dict[str, G.Var] = {}

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            what = _WHAT.get(type(node), type(node).__name__)
            raise ExprError(f"not allowed in an expression: {what} in {_source(node)}")
        return method(node)

    def _var(self, value: Any) -> G.Var:
        return value if isinstance(value, G.Var) else self.graph.constant(np.float64(value))

    def _any_var(self, args: list[Any]) -> list[Any]:
        """Make the first operand a constant node if no operand is a Var."""
        if args and not any(isinstance(a, G.Var) for a in args):
            args[0] = self.graph.constant(np.asarray(args[0], np.float64))
        return args

    def _Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExprError(f"not allowed in an expression: the literal {_source(node)}")
        return float(node.value)

    def _Name(self, node: ast.Name) -> Any:
        name = node.id
        if name in self.values:
            var = self.inputs.get(name)
            if var is None:
                value = self.values[name]
                var = self.graph.input(name, shape=value.shape, dtype="float64")
                self.inputs[name] = var
            return var
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in FUNCTIONS or name in _LIST_FUNCTIONS:
            raise ExprError(f"{name} is a function: call it, e.g. {name}(x)")
        raise ExprError(f"unknown name {name!r}: bind it with --at {name}=VALUE")

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExprError(f"not allowed in an expression: the operator in {_source(node)}")
        return op(*self._any_var([self.visit(node.left), self.visit(node.right)]))

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.USub):
            return ops.negative(operand) if isinstance(operand, G.Var) else -operand
        raise ExprError(f"not allowed in an expression: the operator in {_source(node)}")

    def _Compare(self, node: ast.Compare) -> Any:
        if len(node.ops) != 1:
            raise ExprError(f"chained comparisons are not allowed: {_source(node)}")
        op = _COMPARE.get(type(node.ops[0]))
        if op is None:
            raise ExprError(f"not allowed in an expression: the comparison {_source(node)}")
        return op(*self._any_var([self.visit(node.left), self.visit(node.comparators[0])]))

    def _List(self, node: ast.List) -> Any:
        items = [self.visit(e) for e in node.elts]
        if not items:
            raise ExprError("an empty list [] is not a value")
        if not any(isinstance(i, G.Var) for i in items):
            return np.asarray(items, np.float64)
        return ops.stack([self._var(i) for i in items])

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise ExprError(
                f"not allowed in an expression: only gradserve operators may be called, "
                f"as in sin(x); got {_source(node.func)}"
            )
        name = node.func.id
        if name in _LIST_FUNCTIONS:
            return self._list_call(name, node)
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise ExprError(f"unknown function {name!r}; see `gradserve ops` for the operators")
        fn, (lo, hi), keywords = spec
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise ExprError(f"not allowed in an expression: starred arguments in {_source(node)}")
        if not lo <= len(node.args) <= hi:
            arity = lo if lo == hi else f"{lo} to {hi}"
            raise ExprError(f"{name} takes {arity} argument(s), got {len(node.args)}")
        args = self._any_var([self.visit(a) for a in node.args])
        return fn(*args, **self._keywords(name, node, keywords))

    def _list_call(self, name: str, node: ast.Call) -> Any:
        if len(node.args) != 1 or not isinstance(node.args[0], ast.List):
            raise ExprError(f"{name} takes one bracketed list, as in {name}([a, b])")
        items = [self._var(self.visit(e)) for e in node.args[0].elts]
        return _LIST_FUNCTIONS[name](items, **self._keywords(name, node, _keywords(SPECS[name])))

    def _keywords(self, name: str, node: ast.Call, allowed: frozenset[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in allowed:
                accepted = ", ".join(sorted(allowed)) or "none"
                raise ExprError(
                    f"{name} does not take keyword {kw.arg or '**'}; it accepts: {accepted}"
                )
            out[kw.arg] = _literal_int(kw.value, f"{name}({kw.arg}=...)")
        return out


def _literal_int(node: ast.AST, what: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = node.operand
        if isinstance(inner, ast.Constant) and type(inner.value) is int:
            return -inner.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal_int(e, what) for e in node.elts]
    raise ExprError(f"{what} must be an integer literal (or a list of them)")


def _source(node: ast.AST) -> str:
    text = ast.unparse(node)
    return repr(text if len(text) <= 60 else text[:57] + "...")
