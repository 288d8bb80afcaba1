"""einsum: forward against np.einsum (explicit, implicit, ellipsis, diagonals, one to four
operands), JVP and VJP against central differences in both modes, second derivatives, float32,
errors."""

import numpy as np
import pytest
from gradcheck import check_derivatives, check_graph_error, check_second_derivatives, op_program
from gradserve.autodiff import GraphError, evaluate, vjp_values
from gradserve.autodiff.ops.einsum import contract, parse_subscripts

RNG = np.random.default_rng(0)

CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),  # implicit output
    ("ij->i", [(2, 3)]),  # summed within the operand: its gradient is broadcast
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("i,i->", [(3,), (3,)]),
    ("i,j->ij", [(3,), (2,)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 2), (1, 2, 4, 2)]),  # attention scores
    ("...ij,jk->...ik", [(2, 2, 3), (3, 2)]),
    ("...j,...j", [(3, 2), (2,)]),  # ellipsis of different lengths
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]),
    ("ab,bc,cd,da->", [(2, 3), (3, 2), (2, 2), (2, 2)]),
    # A letter repeated within an operand: a diagonal, the trace, a diagonal in a product.
    ("ii->i", [(3, 3)]),
    ("ii->", [(3, 3)]),
    ("ii", [(3, 3)]),  # implicit: the trace, as numpy
    ("bii->bi", [(2, 3, 3)]),
    ("...ii->...i", [(2, 2, 3, 3)]),
    ("iji->j", [(2, 3, 2)]),
    ("iii->i", [(2, 2, 2)]),
    ("ij,jj->i", [(2, 3), (3, 3)]),
    ("iij,jk->ik", [(2, 2, 3), (3, 2)]),
]


@pytest.mark.parametrize("subscripts,shapes", CASES, ids=[c[0] for c in CASES])
def test_forward_and_derivatives(subscripts, shapes):
    feeds = {f"x{i}": RNG.standard_normal(s) for i, s in enumerate(shapes)}
    p = op_program("einsum", shapes, {"subscripts": subscripts})
    y = evaluate(p, feeds)["y"]
    np.testing.assert_allclose(y, np.einsum(subscripts, *feeds.values()), atol=1e-12)
    check_derivatives(p, feeds)


@pytest.mark.parametrize(
    "subscripts,shapes", [CASES[0], CASES[2], CASES[11], ("ij,jj->i", [(2, 3), (3, 3)])]
)
def test_second_derivatives(subscripts, shapes):
    feeds = {f"x{i}": RNG.standard_normal(s) for i, s in enumerate(shapes)}
    # The Hessian of sum(einsum): zero for einsum(x, y) in x alone, so square the result.
    from gradcheck import program

    names = list(feeds)
    p = program(
        {n: feeds[n].shape for n in names},
        [("e", "einsum", names, {"subscripts": subscripts}), ("y", "square", ["e"])],
        ["y"],
    )
    check_second_derivatives(p, feeds, wrt="x0")


def test_empty_axis():
    p = op_program("einsum", [(2, 0, 3), (3,)], {"subscripts": "ijk,k->ij"})
    feeds = {"x0": np.zeros((2, 0, 3)), "x1": np.ones(3)}
    assert evaluate(p, feeds)["y"].shape == (2, 0)
    _, grads = vjp_values(p, feeds, {"y": np.zeros((2, 0))}, ["x1"])
    np.testing.assert_array_equal(grads["x1"], np.zeros(3))


def test_contract_matches_einsum_on_larger_operands():
    a, b = RNG.standard_normal((8, 4, 16, 32)), RNG.standard_normal((8, 4, 32, 16))
    np.testing.assert_allclose(
        contract(("bhqd", "bhdk"), "bhqk", a, b), np.einsum("bhqd,bhdk->bhqk", a, b), atol=1e-12
    )
    ints = RNG.integers(-5, 5, (3, 4)), RNG.integers(-5, 5, (4, 2))
    np.testing.assert_array_equal(contract(("ij", "jk"), "ik", *ints), ints[0] @ ints[1])


def test_float32_and_integers():
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    p = op_program("einsum", [(3, 4), (3, 4)], {"subscripts": "ij,ij->j"}, dtype="float32")
    y = evaluate(p, {"x0": a, "x1": a})["y"]
    assert y.dtype == np.float32
    _, grads = vjp_values(p, {"x0": a, "x1": a}, {"y": np.ones(4, np.float32)}, ["x0"])
    assert grads["x0"].dtype == np.float32
    np.testing.assert_allclose(grads["x0"], a, rtol=1e-6)
    q = op_program("einsum", [(2, 3), (3,)], {"subscripts": "ij,j->i"}, dtype="int64")
    x, v = np.arange(6).reshape(2, 3), np.array([1, 2, 3])
    np.testing.assert_array_equal(evaluate(q, {"x0": x, "x1": v})["y"], x @ v)


def test_parse_expands_ellipsis_and_implicit_output():
    terms, out = parse_subscripts("...ij,j...", (3, 2))
    assert out == terms[0][0] + "i" and terms[1][0] == "j"


@pytest.mark.parametrize(
    "subscripts,shapes,field",
    [
        ("ij,jk->ik", [(2, 3), (4, 4)], "inputs[1]"),  # letter sizes disagree
        ("ii->i", [(3, 2)], "inputs[0]"),  # a diagonal of axes of different sizes
        ("ij->k", [(2, 3)], "attrs.subscripts"),
        ("ij->ii", [(2, 3)], "attrs.subscripts"),
        ("ij,jk", [(2, 3)], "attrs.subscripts"),  # two terms, one operand
        ("ijk", [(2, 3)], "attrs.subscripts"),  # rank
        ("i1", [(2, 3)], "attrs.subscripts"),
        ("i....", [(2, 3)], "attrs.subscripts"),
    ],
)
def test_errors_name_the_node_and_field(subscripts, shapes, field):
    check_graph_error("einsum", shapes, {"subscripts": subscripts}, field)


def test_subscripts_are_required():
    with pytest.raises(GraphError) as info:
        op_program("einsum", [(2,)])
    assert info.value.field == "attrs.subscripts"


def test_sdk_einsum_has_numpys_signature():
    import gradserve_client as gs

    g = gs.Graph()
    a, b = g.input("a", (2, 3)), g.input("b", (3, 3))
    g.output("y", gs.einsum("ij,jj->i", a, b))
    g.output("t", gs.einsum("ii", b))
    feeds = {"a": RNG.standard_normal((2, 3)), "b": RNG.standard_normal((3, 3))}
    got = gs.LocalClient().evaluate(g, feeds)
    np.testing.assert_allclose(got["y"], np.einsum("ij,jj->i", feeds["a"], feeds["b"]))
    np.testing.assert_allclose(got["t"], np.trace(feeds["b"]))
    with pytest.raises(TypeError, match="subscripts come first"):
        gs.einsum([a, b], "ij,jk->ik")
    with pytest.raises(TypeError, match="non-empty"):
        gs.einsum("ij")
