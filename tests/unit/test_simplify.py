"""simplify.py: derivative programs without repeated work, bit for bit the same results; and
`bind`, inputs made constants (the seeds of a coloured Jacobian pass, folded at compile time)."""

from __future__ import annotations

import numpy as np
from gradserve.autodiff import GraphDef, InputDef, NodeDef, Program, compile_program, jvp, vjp
from gradserve.autodiff.jacobian import _pass_program, _seeded_pass, _seeds, colour_plan
from gradserve.autodiff.simplify import bind, simplified
from hypothesis import given
from test_properties import SETTINGS, Case, programs

from bench.sparse import brusselator


def simplify(p: Program) -> Program:
    return simplified(p.inputs, p.nodes, p.outputs, p.types)


def build(inputs: dict[str, tuple[int, ...]], nodes: list[tuple], outputs: tuple) -> Program:
    return Program.build(
        GraphDef(
            tuple(InputDef(n, "float64", s) for n, s in inputs.items()),
            tuple(NodeDef(n[0], n[1], n[2], n[3] if len(n) > 3 else {}) for n in nodes),
            outputs,
        )
    )


def ops(program: Program) -> list[str]:
    return [node.op for node in program.nodes]


def run(program: Program, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return compile_program(program).run(feeds)


def doubled(case: Case) -> Program:
    """The case's program with every node computed twice (the copies named `name~`), and its
    output the sum of the two results."""
    p = case.program
    inputs = set(p.input_names)

    def twin(name: str) -> str:
        return name if name in inputs else f"{name}~"

    nodes = list(p.nodes)
    for node in p.nodes:
        nodes.append(NodeDef(twin(node.name), node.op, tuple(map(twin, node.inputs)), node.attrs))
    nodes.append(NodeDef("both", "add", (case.out, twin(case.out))))
    return Program.build(GraphDef(p.inputs, tuple(nodes), ("both",)))


@SETTINGS
@given(programs())
def test_repeated_work_is_merged_and_gives_the_same_bits(case):
    p = doubled(case)
    s = simplify(p)
    assert len(s.nodes) <= len(case.program.nodes) + 1  # every copy merged into its original
    assert not any(node.name.endswith("~") for node in s.nodes)
    np.testing.assert_array_equal(run(s, case.feeds)[0], run(p, case.feeds)[0])


def test_the_jvp_of_a_square_multiplies_the_tangent_once():
    # The partials of x * x, one per operand, are the same product t * x.
    p = build({"x": (5,)}, [("y", "multiply", ("x", "x"))], ("y",))
    d = jvp(p, ("x",), ("y",))
    products = [n for n in d.program.nodes if n.op == "multiply" and d.seeds[0] in n.inputs]
    assert len(products) == 1
    x, t = np.linspace(-1, 1, 5), np.linspace(2, 3, 5)
    _, tangent = run(d.program, {"x": x, d.seeds[0]: t})
    np.testing.assert_array_equal(tangent, 2 * x * t)  # t x + t x is exactly 2 t x


def test_a_difference_of_tangents_is_a_subtract_not_a_negation_added():
    p = build({"a": (4,), "b": (4,)}, [("y", "subtract", ("a", "b"))], ("y",))
    d = jvp(p, ("a", "b"), ("y",))
    assert "negative" not in ops(d.program)
    ta, tb = np.array([1.0, -0.0, 2.5, np.inf]), np.array([0.5, 0.0, -1.0, 1.0])
    feeds = {"a": np.zeros(4), "b": np.zeros(4), d.seeds[0]: ta, d.seeds[1]: tb}
    _, tangent = run(d.program, feeds)
    np.testing.assert_array_equal(tangent, ta - tb)
    assert np.signbit(tangent[1])  # -0 - 0 is -0, as -0 + -(0) is


def test_a_product_by_a_constant_one_is_dropped_and_a_broadcasting_one_kept():
    p = build(
        {"x": (3,)},
        [
            ("one", "constant", (), {"value": np.array(1.0)}),
            ("a", "multiply", ("x", "one")),
            ("b", "sin", ("a",)),
            ("wide", "constant", (), {"value": np.ones((2, 3))}),
            ("c", "multiply", ("b", "wide")),  # broadcasts to (2, 3): not an identity
        ],
        ("c",),
    )
    s = simplify(p)
    assert ops(s) == ["sin", "constant", "multiply"]
    x = np.array([0.1, -2.0, np.nan])
    np.testing.assert_array_equal(run(s, {"x": x})[0], run(p, {"x": x})[0])


def test_equal_outputs_stay_two_arrays():
    p = build({"x": (3,)}, [("a", "sin", ("x",)), ("b", "sin", ("x",))], ("a", "b"))
    s = simplify(p)
    assert len(s.nodes) == 2
    a, b = run(s, {"x": np.ones(3)})
    a[0] = 5.0
    assert b[0] == np.sin(1.0)


def test_bound_inputs_compute_what_feeding_them_does():
    p = build(
        {"x": (3,), "w": (3,)},
        [("a", "multiply", ("x", "w")), ("y", "sin", ("a",))],
        ("y",),
    )
    w = np.array([0.5, -1.0, 2.0])
    bound = bind(p, {"w": w})
    assert bound.input_names == ("x",)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(run(bound, {"x": x})[0], run(p, {"x": x, "w": w})[0])


def test_a_coloured_pass_folds_what_depends_on_its_seeds_alone():
    p = brusselator(8)
    plan = colour_plan(p, "f", "x")
    d = _pass_program(p, "f", "x", plan.forward, plan.count)
    seeds = _seeds(d, plan, 0, plan.count)
    x = np.random.default_rng(3).uniform(0, 1, (2, 8, 8))
    fed = compile_program(d.program)
    seeded = _seeded_pass(p, "f", "x", plan, 0, plan.count)
    # The laplacian's rolls of the tangents and their scalings are computed at compile time.
    assert len(seeded._steps) < len(fed._steps) - 20
    for got, expected in zip(
        seeded.run({"x": x}), fed.run({"x": x, d.seeds[0]: seeds}), strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def test_vjp_programs_are_simplified_too():
    # d/dx of sum(x * x): the cotangent times x, once, then doubled.
    p = build({"x": (4,)}, [("s", "multiply", ("x", "x")), ("y", "sum", ("s",))], ("y",))
    d = vjp(p, ("y",), ("x",))
    assert ops(d.program).count("multiply") == 2  # x * x, and g * x once (not twice)
    x = np.array([1.0, -2.0, 0.5, 3.0])
    _, grad = run(d.program, {"x": x, d.seeds[0]: np.ones(())})
    np.testing.assert_array_equal(grad, 2 * x)
