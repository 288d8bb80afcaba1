"""Inputs with defaults: in the core (omitted inputs take them; derivatives may be taken with
respect to them; they are part of the content hash), in the SDK's Graph (to_proto, from_proto,
save, load) and through LocalClient (evaluate, grad, jvp, train)."""

from __future__ import annotations

import gradserve_client as gs
import numpy as np
import pytest
from gradserve.autodiff import (
    GraphDef,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    evaluate,
    jvp_values,
    vjp_values,
)
from gradserve_client.proto import graph_pb2

W0 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
X0 = np.array([0.5, -2.0, 4.0])


def program(default: np.ndarray | None = W0, shape: tuple[int, ...] = (2, 3)) -> Program:
    inputs = (InputDef("W", "float64", shape, default), InputDef("x", "float64", (3,)))
    nodes = (NodeDef("y", "matmul", ("W", "x")),)
    return Program.build(GraphDef(inputs, nodes, ("y",)))


def test_an_omitted_input_takes_its_default_and_a_fed_one_overrides_it() -> None:
    p = program()
    np.testing.assert_array_equal(evaluate(p, {"x": X0})["y"], W0 @ X0)
    np.testing.assert_array_equal(evaluate(p, {"x": X0, "W": 2 * W0})["y"], 2 * W0 @ X0)


def test_an_input_without_default_is_still_required() -> None:
    with pytest.raises(GraphError, match="missing a value") as err:
        evaluate(program(), {"W": W0})
    assert err.value.node == "x"


def test_derivatives_with_respect_to_a_defaulted_input() -> None:
    p = program()
    ct = np.array([1.0, -3.0])
    _, grads = vjp_values(p, {"x": X0}, {"y": ct}, ["W", "x"])
    np.testing.assert_allclose(grads["W"], np.outer(ct, X0))  # d(ct . W x)/dW
    np.testing.assert_allclose(grads["x"], W0.T @ ct)
    tangent = np.ones_like(W0)
    _, tangents = jvp_values(p, {"x": X0}, {"W": tangent}, ["y"])
    np.testing.assert_allclose(tangents["y"], tangent @ X0)


def test_the_default_is_part_of_the_content_hash() -> None:
    assert program().digest == program(W0.copy()).digest
    assert program().digest != program(W0 + 1).digest
    assert program().digest != program(None).digest


@pytest.mark.parametrize(
    ("default", "field"),
    [(W0.astype(np.float32), "default.dtype"), (W0.T.copy(), "default.shape")],
)
def test_a_default_that_does_not_fit_the_input_is_refused(default, field) -> None:
    with pytest.raises(GraphError) as err:
        program(default)
    assert (err.value.node, err.value.field) == ("W", field)


def test_a_dynamic_input_with_a_default_takes_the_default_shape_when_omitted() -> None:
    graph = GraphDef(
        (InputDef("W", "float64", (-1, 3), W0), InputDef("x", "float64", (3,))),
        (NodeDef("y", "matmul", ("W", "x")),),
        ("y",),
    )
    omitted = Program.build(graph.specialize({"x": (3,)}))
    np.testing.assert_array_equal(evaluate(omitted, {"x": X0})["y"], W0 @ X0)
    fed = Program.build(graph.specialize({"x": (3,), "W": (4, 3)}))
    assert fed.input("W").default is None  # fed with another shape: no default there
    assert fed.types["y"].shape == (4,)


# ---- the SDK ---------------------------------------------------------------------------------


def sdk_graph() -> gs.Graph:
    g = gs.Graph()
    W = g.input("W", shape=(2, 3), default=W0)
    x = g.input("x", shape=(3,))
    g.output("loss", gs.sum(gs.tanh(W @ x)))
    return g


def test_graph_defaults_are_read_only_copies_of_the_declared_dtype() -> None:
    g = gs.Graph()
    g.input("n", shape=(2,), dtype="float32", default=[1, 2])
    (default,) = g.defaults.values()
    assert default.dtype == np.float32 and not default.flags.writeable
    with pytest.raises(ValueError, match="shape"):
        g.input("m", shape=(3,), default=[1.0, 2.0])


@pytest.mark.parametrize("how", ["proto", "bytes", "file"])
def test_defaults_round_trip(how: str, tmp_path) -> None:
    g = sdk_graph()
    if how == "proto":
        back = gs.Graph.from_proto(g.to_proto())
    elif how == "bytes":
        back = gs.Graph.from_proto(graph_pb2.Graph.FromString(g.to_proto().SerializeToString()))
    else:
        g.save(tmp_path / "g.gsg")
        back = gs.Graph.load(tmp_path / "g.gsg")
    assert list(back.defaults) == ["W"]
    np.testing.assert_array_equal(back.defaults["W"], W0)
    assert back.to_proto() == g.to_proto()


def test_local_client_omits_defaulted_inputs_and_differentiates_by_them() -> None:
    g = sdk_graph()
    c = gs.LocalClient()
    np.testing.assert_allclose(c.evaluate(g, {"x": X0})["loss"], np.tanh(W0 @ X0).sum())
    grads = c.grad(g, {"x": X0}, of="loss", wrt=list(g.defaults))
    expected = np.outer(1 - np.tanh(W0 @ X0) ** 2, X0)
    np.testing.assert_allclose(grads["W"], expected)
    (jvp,) = c.jvp(g, {"x": X0}, tangents={"W": np.ones_like(W0)}, of=["loss"]).values()
    np.testing.assert_allclose(jvp, expected.sum())


def test_local_client_trains_the_defaults_as_params() -> None:
    g = gs.Graph()
    w = g.input("w", shape=(3,), default=np.zeros(3))
    b = g.input("b", shape=(), default=np.float64(0.5))  # not trained: keeps its default
    X = g.input("X", shape=(-1, 3))
    y = g.input("y", shape=(-1,))
    g.output("loss", gs.mse(X @ w + b, y))
    rng = np.random.default_rng(0)
    data = {"X": rng.normal(size=(8, 3)), "y": rng.normal(size=8)}
    run = gs.LocalClient().train(
        g, loss="loss", params={"w": g.defaults["w"]}, data=data,
        optimizer=gs.SGD(lr=0.1), batch_size=8, epochs=3, shuffle=False,
    )  # fmt: skip
    losses = [step.loss for step in run]
    w_ref = np.zeros(3)
    for loss in losses:  # full-batch SGD by hand, b held at its default
        r = data["X"] @ w_ref + 0.5 - data["y"]
        assert loss == pytest.approx(np.mean(r**2))
        w_ref -= 0.1 * 2 * data["X"].T @ r / 8
    np.testing.assert_allclose(run.params["w"], w_ref)
    assert set(run.params) == {"w"}
