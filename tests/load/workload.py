"""The calls of the mixed load, each checked against numpy: Evaluate, Jacobian, grad (a Vjp of a
scalar), Vjp, Jvp, StreamJacobian and Train, the two streams sometimes cancelled midway."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import training_pb2 as tpb
from wire import G, arrays, tensors

# y = sin(W @ x); loss = sum(y)
MIXED = G(
    inputs=[("x", "float64", [3]), ("W", "float64", [2, 3])],
    nodes=[("h", "matmul", ["W", "x"], {}), ("y", "sin", ["h"], {}), ("loss", "sum", ["y"], {})],
    outputs=["y", "loss"],
)
SOFTMAX_N = 120
SOFTMAX = G([("x", "float64", [SOFTMAX_N])], [("y", "softmax", ["x"], {})], ["y"])
# least squares: loss = mean((X @ w - t)^2)
REGRESSION = G(
    inputs=[("w", "float64", [3]), ("X", "float64", [-1, 3]), ("t", "float64", [-1])],
    nodes=[
        ("p", "matmul", ["X", "w"], {}),
        ("r", "subtract", ["p", "t"], {}),
        ("s", "square", ["r"], {}),
        ("loss", "mean", ["s"], {}),
    ],
    outputs=["loss"],
)
TRAIN_STEPS = 12
LR = 0.05
TIMEOUT = 30  # seconds per call: far above what any call takes


def close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _feed(rng: np.random.Generator):
    x, W = rng.normal(size=3), rng.normal(size=(2, 3))
    return x, W, tensors({"x": x, "W": W})


def evaluate(stub, rng) -> None:
    x, W, feed = _feed(rng)
    r = stub.Evaluate(pb.EvaluateRequest(graph=MIXED.proto(), inputs=feed), timeout=TIMEOUT)
    out = arrays(r.outputs)
    close(out["y"], np.sin(W @ x))
    close(out["loss"], np.sin(W @ x).sum())


def jacobian(stub, rng) -> None:
    x, W, feed = _feed(rng)
    request = pb.JacobianRequest(graph=MIXED.proto(), inputs=feed, of=["y"], wrt=["x", "W"])
    r = stub.Jacobian(request, timeout=TIMEOUT)
    blocks = {(b.of, b.wrt): arrays({"j": b.dense})["j"] for b in r.blocks}
    c = np.cos(W @ x)
    close(blocks[("y", "x")], c[:, None] * W)
    want_w = np.zeros((2, 2, 3))
    for i in range(2):
        want_w[i, i] = c[i] * x
    close(blocks[("y", "W")], want_w)


def grad(stub, rng) -> None:
    x, W, feed = _feed(rng)
    request = pb.VjpRequest(
        graph=MIXED.proto(), inputs=feed, cotangents=tensors({"loss": 1.0}), wrt=["x"]
    )
    r = stub.Vjp(request, timeout=TIMEOUT)
    close(arrays(r.gradients)["x"], W.T @ np.cos(W @ x))


def vjp(stub, rng) -> None:
    x, W, feed = _feed(rng)
    ct = rng.normal(size=2)
    request = pb.VjpRequest(
        graph=MIXED.proto(), inputs=feed, cotangents=tensors({"y": ct}), wrt=["x", "W"]
    )
    g = arrays(stub.Vjp(request, timeout=TIMEOUT).gradients)
    c = ct * np.cos(W @ x)
    close(g["x"], c @ W)
    close(g["W"], np.outer(c, x))


def jvp(stub, rng) -> None:
    x, W, feed = _feed(rng)
    t = rng.normal(size=3)
    request = pb.JvpRequest(graph=MIXED.proto(), inputs=feed, tangents=tensors({"x": t}), of=["y"])
    close(arrays(stub.Jvp(request, timeout=TIMEOUT).tangents)["y"], np.cos(W @ x) * (W @ t))


def stream_jacobian(stub, rng, cancel_after: int | None = None) -> None:
    x = rng.normal(size=SOFTMAX_N)
    s = np.exp(x - x.max())
    s /= s.sum()
    want = np.diag(s) - np.outer(s, s)
    request = pb.StreamJacobianRequest(
        graph=SOFTMAX.proto(), inputs=tensors({"x": x}), rows_per_message=10
    )
    call = stub.StreamJacobian(request, timeout=TIMEOUT)
    rows = 0
    for block in call:
        got = arrays({"r": block.rows})["r"]
        close(got, want[block.row_start : block.row_start + block.row_count])
        rows += block.row_count
        if cancel_after is not None and rows >= cancel_after:
            call.cancel()
            return
    assert rows == SOFTMAX_N


def stream_jacobian_cancelled(stub, rng) -> None:
    stream_jacobian(stub, rng, cancel_after=30)


def _gd(w: np.ndarray, X: np.ndarray, t: np.ndarray, steps: int) -> tuple[np.ndarray, list]:
    """Full-batch gradient descent on mean((Xw - t)^2), as the server's SGD does it."""
    losses = []
    for _ in range(steps):
        r = X @ w - t
        losses.append(np.mean(r**2))
        w = w - LR * (2 / len(t)) * (X.T @ r)
    return w, losses


def regression_run(rng, steps: int, report_every: int = 1):
    """A Train request of least squares by full-batch SGD; the parameters and the losses that
    numpy computes for it."""
    X, t, w0 = rng.normal(size=(32, 3)), rng.normal(size=32), rng.normal(size=3)
    request = tpb.TrainRequest(
        graph=REGRESSION.proto(),
        loss="loss",
        params=tensors({"w": w0}),
        inline_data=tpb.DataTensors(tensors=tensors({"X": X, "t": t})),
        max_steps=steps,
        report_every=report_every,
        optimizer=tpb.Optimizer(sgd=tpb.Sgd(lr=LR)),
    )
    return (request, *_gd(w0, X, t, steps))


def train(stub, rng, cancel_after: int | None = None) -> None:
    request, want_w, losses = regression_run(rng, TRAIN_STEPS)
    call = stub.Train(request, timeout=TIMEOUT)
    steps = 0
    for event in call:
        kind = event.WhichOneof("event")
        if kind == "step":
            steps += 1
            assert event.step.step == steps
            np.testing.assert_allclose(event.step.loss, losses[steps - 1], rtol=1e-10)
            if cancel_after is not None and steps == cancel_after:
                call.cancel()
                return
        elif kind == "result":
            close(arrays(event.result.params)["w"], want_w)
            assert event.result.steps == TRAIN_STEPS
    assert steps == TRAIN_STEPS


def train_cancelled(stub, rng) -> None:
    train(stub, rng, cancel_after=4)


CALLS: dict[str, Callable] = {
    "evaluate": evaluate,
    "jacobian": jacobian,
    "grad": grad,
    "vjp": vjp,
    "jvp": jvp,
    "stream_jacobian": stream_jacobian,
    "stream_jacobian_cancelled": stream_jacobian_cancelled,
    "train": train,
    "train_cancelled": train_cancelled,
}
