"""The executor's buffer reuse: an element-wise ufunc step writes into a dying operand's buffer
only when nothing else can see that memory (inputs, constants, outputs, live views)."""

import numpy as np
from gradcheck import program
from gradserve.autodiff import value_and_grad
from gradserve.autodiff.executor import compile_program

X = np.random.default_rng(0).standard_normal((3, 4))


def donors(p):
    """{step's result name: name of the slot whose buffer it reuses}."""
    names = [i.name for i in p.inputs] + [n.name for n in p.nodes]
    ex = compile_program(p)
    return {names[out]: names[donor] for _, _, out, _, donor in ex._steps if donor >= 0}


def run(p, **feeds):
    return dict(zip(p.outputs, compile_program(p).run(feeds), strict=True))


def test_a_chain_of_ufuncs_reuses_its_own_buffers_and_keeps_the_input():
    p = program(
        {"x": (3, 4)},
        [("a", "exp", ["x"]), ("b", "sin", ["a"]), ("c", "multiply", ["b", "b"])],
        ["c"],
    )
    x = X.copy()
    assert donors(p) == {"b": "a", "c": "b"}
    out = run(p, x=x)["c"]
    np.testing.assert_array_equal(out, np.sin(np.exp(X)) ** 2)
    np.testing.assert_array_equal(x, X)  # the input (dying at step 1) was not written


def test_no_reuse_while_a_view_of_the_buffer_is_live():
    p = program(
        {"x": (3, 4)},
        [
            ("a", "exp", ["x"]),
            ("v", "reshape", ["a"], {"shape": [4, 3]}),
            ("b", "sin", ["a"]),  # a dies here, but v (a view of it) lives on
            ("w", "reshape", ["v"], {"shape": [3, 4]}),
            ("c", "add", ["b", "w"]),  # w dies here together with its root: b may be reused
        ],
        ["c"],
    )
    assert "b" not in donors(p)
    np.testing.assert_allclose(run(p, x=X)["c"], np.sin(np.exp(X)) + np.exp(X))


def test_no_reuse_through_ops_that_might_alias_their_operands():
    p = program(
        {"x": (3, 4)},
        [
            ("a", "exp", ["x"]),
            ("t", "transpose", ["a"]),
            ("s", "where", ["m", "a", "a"]),  # an op not known to return fresh memory
            ("m", "greater", ["x", "x"]),
            ("b", "sin", ["a"]),
            ("c", "add", ["b", "s"]),
            ("d", "add", ["c", "t2"]),
            ("t2", "transpose", ["t"]),
        ],
        ["d"],
    )
    # Program.build orders nodes topologically: m before s, t2 before d.
    assert "b" not in donors(p)
    expected = np.sin(np.exp(X)) + np.exp(X) + np.exp(X)
    np.testing.assert_allclose(run(p, x=X)["d"], expected)


def test_outputs_and_constants_are_never_written():
    p = program(
        {"x": (3, 4)},
        [
            ("one", "constant", [], {"value": np.ones((3, 4))}),
            ("k", "exp", ["one"]),  # folded at compile time
            ("a", "exp", ["x"]),
            ("b", "add", ["a", "k"]),  # a is an output: not reused
            ("c", "sin", ["b"]),  # b dies here: reused
        ],
        ["a", "c"],
    )
    assert donors(p) == {"c": "b"}
    for _ in range(2):  # a second run sees the same constants
        out = run(p, x=X)
        np.testing.assert_array_equal(out["a"], np.exp(X))
        np.testing.assert_allclose(out["c"], np.sin(np.exp(X) + np.e))


def test_no_reuse_when_shape_or_dtype_differ():
    p = program(
        {"x": (3, 4), "y": (4,)},
        [
            ("a", "exp", ["y"]),
            ("b", "add", ["a", "x"]),  # a (4,) cannot hold the (3, 4) result
            ("m", "greater", ["b", "x"]),  # bool result: b's float buffer is not used
            ("n", "equal", ["m", "m"]),  # but m's bool buffer is
        ],
        ["n"],
    )
    assert donors(p) == {"n": "m"}
    np.testing.assert_array_equal(run(p, x=X, y=X[0])["n"], np.ones((3, 4), bool))


def test_a_gradient_reuses_buffers_and_matches_numpy():
    rng = np.random.default_rng(1)
    p = program(
        {"X": (8, 5), "W": (5, 6), "b": (6,), "V": (6, 1)},
        [
            ("z", "matmul", ["X", "W"]),
            ("zb", "add", ["z", "b"]),
            ("h", "tanh", ["zb"]),
            ("o", "matmul", ["h", "V"]),
            ("loss", "sum", ["o"]),
        ],
        ["loss"],
    )
    feeds = {k: rng.standard_normal(s) for k, s in (("X", (8, 5)), ("W", (5, 6)), ("b", (6,)),
                                                    ("V", (6, 1)))}  # fmt: skip
    before = {k: v.copy() for k, v in feeds.items()}
    vg = value_and_grad(p, "loss", ("W", "b", "V"))
    for _ in range(2):
        loss, g = vg(feeds)
        h = np.tanh(feeds["X"] @ feeds["W"] + feeds["b"])
        gz = feeds["V"].T * (1 - h**2)
        np.testing.assert_allclose(loss, h.sum(axis=0) @ feeds["V"][:, 0])
        np.testing.assert_allclose(g["W"], feeds["X"].T @ gz)
        np.testing.assert_allclose(g["b"], gz.sum(0))
        np.testing.assert_allclose(g["V"], h.sum(0)[:, None])
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], before[k])


def test_whole_views_are_reused_but_broadcasts_and_slices_are_not():
    p = program(
        {"x": (3, 4), "y": (1, 4)},
        [
            ("a", "exp", ["x"]),
            ("r", "reshape", ["a"], {"shape": [12]}),
            ("c", "sin", ["r"]),  # r is all of a's buffer: reused
            ("t", "transpose", ["c2"]),
            ("c2", "reshape", ["c"], {"shape": [3, 4]}),
            ("u", "cos", ["t"]),  # a transposed view of the whole buffer: reused
            ("e", "exp", ["y"]),
            ("b", "broadcast_to", ["e"], {"shape": [4, 4]}),
            ("f", "sin", ["b"]),  # read-only broadcast: not reused
            ("s", "slice", ["u"], {"index": "1:3"}),
            ("g", "cos", ["s"]),  # part of a buffer: not reused
        ],
        ["f", "g"],
    )
    assert donors(p) == {"c": "r", "u": "t"}
    out = run(p, x=X, y=X[:1])
    np.testing.assert_allclose(out["f"], np.broadcast_to(np.sin(np.exp(X[:1])), (4, 4)))
    np.testing.assert_allclose(out["g"], np.cos(np.cos(np.sin(np.exp(X)).T))[1:3])
