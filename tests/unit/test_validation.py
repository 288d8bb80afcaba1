"""Every validation error of the core: a `GraphError` naming the right node and field.

Graph errors are found by `Program.build` before anything runs; input errors by `evaluate`,
`vjp_values`, `jvp_values` and `jacobian` at their boundary; target errors (`of`, `wrt`) by the
transforms.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradserve.autodiff import (
    GraphDef,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    evaluate,
    jacobian,
    jvp_values,
    vjp,
    vjp_values,
)


def build(inputs, nodes, outputs, **kwargs) -> Program:
    specs = tuple(
        InputDef(name, spec[1], tuple(spec[0]))
        if spec and isinstance(spec[-1], str)
        else InputDef(name, "float64", tuple(spec))
        for name, spec in inputs.items()
    )
    defs = tuple(NodeDef(n[0], n[1], tuple(n[2]), n[3] if len(n) > 3 else {}) for n in nodes)
    return Program.build(GraphDef(specs, defs, tuple(outputs)), **kwargs)


def raises(node: str, field: str, fn, *args, **kwargs) -> GraphError:
    with pytest.raises(GraphError) as err:
        fn(*args, **kwargs)
    assert (err.value.node, err.value.field) == (node, field), str(err.value)
    assert err.value.reason
    assert node in str(err.value) and field in str(err.value)
    return err.value


# ---- graph structure ---------------------------------------------------------------------------


def test_cycle_of_two_nodes():
    err = raises(
        "a",
        "inputs",
        build,
        {"x": (3,)},
        [("a", "add", ["x", "b"]), ("b", "sin", ["a"]), ("y", "cos", ["b"])],
        ["y"],
    )
    assert "cycle" in err.reason


def test_cycle_self_loop():
    raises(
        "a", "inputs", build, {"x": (3,)}, [("y", "sin", ["x"]), ("a", "add", ["a", "x"])], ["y"]
    )


def test_cycle_is_found_even_when_declared_late():
    # A long valid chain, then a 3-cycle: the culprit named is on the cycle.
    nodes = [("n0", "sin", ["x"])] + [(f"n{i}", "sin", [f"n{i - 1}"]) for i in range(1, 50)]
    nodes += [("p", "sin", ["r"]), ("q", "sin", ["p"]), ("r", "add", ["q", "n49"])]
    with pytest.raises(GraphError) as err:
        build({"x": ()}, nodes, ["n49"])
    assert err.value.node in {"p", "q", "r"} and err.value.field == "inputs"


def test_unknown_op():
    raises("y", "op", build, {"x": (3,)}, [("y", "frobnicate", ["x"])], ["y"])


def test_dangling_input_reference():
    raises("y", "inputs[1]", build, {"x": (3,)}, [("y", "add", ["x", "nowhere"])], ["y"])


def test_duplicate_input_names():
    with pytest.raises(GraphError) as err:
        Program.build(
            GraphDef(
                (InputDef("x", "float64", (3,)), InputDef("x", "float64", (2,))),
                (NodeDef("y", "sin", ("x",)),),
                ("y",),
            )
        )
    assert (err.value.node, err.value.field) == ("x", "name")


def test_duplicate_node_names():
    raises("y", "name", build, {"x": (3,)}, [("y", "sin", ["x"]), ("y", "cos", ["x"])], ["y"])


def test_node_named_like_an_input():
    raises("x", "name", build, {"x": (3,)}, [("x", "sin", ["x"])], ["x"])


def test_empty_name():
    raises("", "name", build, {"x": (3,)}, [("", "sin", ["x"])], ["x"])


@pytest.mark.parametrize(
    "op, operands",
    [("sin", ["x", "x"]), ("add", ["x"]), ("where", ["x", "x"]), ("constant", ["x"])],
)
def test_wrong_arity(op, operands):
    attrs = {"value": np.zeros(3)} if op == "constant" else {}
    raises("y", "inputs", build, {"x": (3,)}, [("y", op, operands, attrs)], ["y"])


def test_unknown_attribute():
    raises("y", "attrs.colour", build, {"x": (3,)}, [("y", "sin", ["x"], {"colour": 1})], ["y"])


def test_missing_required_attribute():
    raises("y", "attrs.shape", build, {"x": (6,)}, [("y", "reshape", ["x"])], ["y"])
    raises("c", "attrs.value", build, {"x": (6,)}, [("c", "constant", [])], ["c"])


@pytest.mark.parametrize(
    "op, attrs, field",
    [
        ("reshape", {"shape": "2x3"}, "attrs.shape"),
        ("reshape", {"shape": (2.0, 3.0)}, "attrs.shape"),
        ("reshape", {"shape": (True, 6)}, "attrs.shape"),
        ("transpose", {"axes": "0"}, "attrs.axes"),
        ("constant", {"value": [1.0, 2.0]}, "attrs.value"),
        ("constant", {"value": np.array(["a"])}, "attrs.value"),
    ],
)
def test_wrongly_typed_attribute(op, attrs, field):
    operands = [] if op == "constant" else ["x"]
    raises("y", field, build, {"x": (6,)}, [("y", op, operands, attrs)], ["y"])


def test_attribute_value_out_of_range():
    raises(
        "y", "attrs.shape", build, {"x": (6,)}, [("y", "reshape", ["x"], {"shape": (4,)})], ["y"]
    )
    raises(
        "y",
        "attrs.axes",
        build,
        {"x": (2, 3)},
        [("y", "transpose", ["x"], {"axes": (0, 0)})],
        ["y"],
    )


# ---- shapes and dtypes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b", [((3,), (4,)), ((3, 2), (2, 3)), ((2, 3, 2), (3, 2, 2)), ((5, 1), (4, 3))]
)
def test_shape_mismatch_under_broadcasting(a, b):
    err = raises("y", "inputs", build, {"a": a, "b": b}, [("y", "add", ["a", "b"])], ["y"])
    assert "broadcast" in err.reason


def test_shape_mismatch_deep_in_the_graph_names_its_node():
    raises(
        "bad",
        "inputs",
        build,
        {"a": (3,), "b": (4,)},
        [("s", "sin", ["a"]), ("c", "cos", ["b"]), ("bad", "multiply", ["s", "c"])],
        ["bad"],
    )


def test_dtype_mismatch_float32_float64():
    err = raises(
        "y",
        "inputs[1]",
        build,
        {"a": ((3,), "float32"), "b": ((3,), "float64")},
        [("y", "add", ["a", "b"])],
        ["y"],
    )
    assert "float32" in err.reason and "float64" in err.reason


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_non_float_input_to_a_float_op(dtype):
    raises("y", "inputs[0]", build, {"x": ((3,), dtype)}, [("y", "sin", ["x"])], ["y"])


def test_bool_input_to_arithmetic():
    raises("y", "inputs[0]", build, {"x": ((3,), "bool")}, [("y", "add", ["x", "x"])], ["y"])


def test_where_condition_must_be_bool():
    raises("y", "inputs[0]", build, {"x": (3,)}, [("y", "where", ["x", "x", "x"])], ["y"])


@pytest.mark.parametrize("dtype", ["float16", "complex128", "f8", ""])
def test_unknown_dtype(dtype):
    raises("x", "dtype", build, {"x": ((3,), dtype)}, [("y", "sin", ["x"])], ["y"])


def test_dynamic_dimension_must_be_bound():
    raises("x", "shape", build, {"x": (-1, 3)}, [("y", "sin", ["x"])], ["y"])


# ---- outputs -----------------------------------------------------------------------------------


def test_unknown_output():
    raises("z", "outputs[1]", build, {"x": (3,)}, [("y", "sin", ["x"])], ["y", "z"])


def test_empty_outputs():
    raises("", "outputs", build, {"x": (3,)}, [("y", "sin", ["x"])], [])


def test_output_listed_twice():
    raises("", "outputs", build, {"x": (3,)}, [("y", "sin", ["x"])], ["y", "y"])


def test_node_limit():
    raises("", "nodes", build, {"x": (3,)}, [("y", "sin", ["x"])] * 1, ["y"], max_nodes=0)


# ---- feeding inputs ----------------------------------------------------------------------------


@pytest.fixture
def p32():
    return build(
        {"x": ((3,), "float32"), "k": ((3,), "int64")},
        [("y", "sin", ["x"]), ("m", "greater", ["k", "k"])],
        ["y", "m"],
    )


def test_feed_wrong_shape(p32):
    raises(
        "x", "inputs.shape", evaluate, p32, {"x": np.zeros(4, np.float32), "k": np.zeros(3, int)}
    )


def test_feed_wrong_dtype(p32):
    # float64 to a float32 input would lose precision: refused, not silently cast.
    raises("x", "inputs.dtype", evaluate, p32, {"x": np.zeros(3), "k": np.zeros(3, int)})
    raises("k", "inputs.dtype", evaluate, p32, {"x": np.zeros(3, np.float32), "k": np.zeros(3)})
    raises(
        "x", "inputs.dtype", evaluate, p32, {"x": np.array(["a", "b", "c"]), "k": np.zeros(3, int)}
    )


def test_feed_missing_input(p32):
    raises("k", "inputs", evaluate, p32, {"x": np.zeros(3, np.float32)})


def test_feed_unknown_input(p32):
    feeds = {"x": np.zeros(3, np.float32), "k": np.zeros(3, int), "extra": np.zeros(3)}
    raises("extra", "inputs", evaluate, p32, feeds)


def test_feed_errors_are_checked_by_every_entry_point():
    p = build({"x": (3,)}, [("y", "sin", ["x"])], ["y"])
    bad = {"x": np.zeros(2)}
    raises("x", "inputs.shape", vjp_values, p, bad, {"y": np.ones(3)}, ["x"])
    raises("x", "inputs.shape", jvp_values, p, bad, {"x": np.ones(3)}, ["y"])
    raises("x", "inputs.shape", jacobian, p, bad, ["y"], ["x"])
    good = {"x": np.zeros(3)}
    raises("y", "cotangents.shape", vjp_values, p, good, {"y": np.ones(2)}, ["x"])
    raises("x", "tangents.shape", jvp_values, p, good, {"x": np.ones(2)}, ["y"])


def test_evaluate_unknown_output(p32):
    feeds = {"x": np.zeros(3, np.float32), "k": np.zeros(3, int)}
    raises("nope", "outputs", evaluate, p32, feeds, ["y", "nope"])


# ---- derivative targets ------------------------------------------------------------------------


@pytest.fixture
def mixed():
    return build(
        {"x": (3,), "k": ((3,), "int64")},
        [("y", "sin", ["x"]), ("m", "greater", ["x", "x"]), ("s", "add", ["k", "k"])],
        ["y", "m", "s"],
    )


def _feeds():
    return {"x": np.ones(3), "k": np.ones(3, np.int64)}


def test_wrt_not_an_input(mixed):
    raises("y", "wrt", jacobian, mixed, _feeds(), ["y"], ["y"])
    raises("nope", "wrt", vjp, mixed, ("y",), ("nope",))


def test_wrt_not_float(mixed):
    raises("k", "wrt", jacobian, mixed, _feeds(), ["y"], ["k"])
    raises("k", "wrt", vjp_values, mixed, _feeds(), {"y": np.ones(3)}, ["k"])


def test_of_not_float(mixed):
    raises("m", "of", jacobian, mixed, _feeds(), ["m"], ["x"])
    raises("s", "of", jacobian, mixed, _feeds(), ["s"], ["x"])


def test_of_unknown(mixed):
    raises("nope", "of", vjp, mixed, ("nope",), ("x",))


def test_unknown_jacobian_mode(mixed):
    raises("", "mode", jacobian, mixed, _feeds(), ["y"], ["x"], mode="sideways")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("chunk", [-1, -3, 0, 1.5, True])
def test_jacobian_chunk_size_must_be_a_positive_integer(mode, chunk):
    p = build({"x": (3,)}, [("s", "sum", ["x"]), ("y", "multiply", ["x", "s"])], ["y"])
    raises(
        "", "chunk_size", jacobian, p, {"x": np.ones(3)}, ["y"], ["x"], mode=mode, chunk_size=chunk
    )
