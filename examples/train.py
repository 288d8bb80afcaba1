"""Train two models on a gradserve server, streaming every step back.

1. The article's ReLU neuron, activation max(0, w·x + b), fitted with a mean squared error.
2. An MLP classifier (tanh hidden layer, softmax cross-entropy) on synthetic 2-D blobs, with
   a checkpoint taken mid-way and the run resumed from it.

Start a server (`make run`, 127.0.0.1:50051), then:

    python examples/train.py [--target HOST:PORT] [--local]

`--local` trains in this process with `gs.LocalClient` instead (no server needed).
"""

from __future__ import annotations

import argparse

import gradserve_client as gs
import numpy as np


def relu_neuron(client) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 3))
    w_true, b_true = np.array([1.5, -2.0, 0.5]), 0.3
    y = np.maximum(0.0, X @ w_true + b_true)

    g = gs.Graph()
    x = g.input("x", shape=(-1, 3))
    target = g.input("y", shape=(-1,))
    w = g.input("w", shape=(3,))
    b = g.input("b", shape=())
    pred = gs.relu(x @ w + b)
    g.output("loss", gs.mean((pred - target) ** 2))

    run = client.train(
        g,
        loss="loss",
        params={"w": np.array([0.1, 0.1, 0.1]), "b": np.array(0.1)},
        data={"x": X, "y": y},
        optimizer=gs.SGD(lr=0.1, momentum=0.9),
        batch_size=32,
        epochs=30,
    )
    for step in run:
        if step.step % 60 == 0:
            print(f"  neuron step {step.step:4d}  epoch {step.epoch:2d}  loss {step.loss:.3e}")
    print(f"  w = {np.round(run.params['w'], 3)} (true {w_true}),"
          f" b = {float(run.params['b']):.3f} (true {b_true})")  # fmt: skip


def mlp_classifier(client) -> None:
    rng = np.random.default_rng(1)
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    labels = rng.integers(0, 3, size=600)
    X = centers[labels] + 0.6 * rng.normal(size=(600, 2))

    g = gs.Graph()
    x = g.input("X", shape=(-1, 2))
    y = g.input("labels", shape=(-1,), dtype="int64")
    W1, b1 = g.input("W1", shape=(2, 16)), g.input("b1", shape=(16,))
    W2, b2 = g.input("W2", shape=(16, 3)), g.input("b2", shape=(3,))
    logits = gs.tanh(x @ W1 + b1) @ W2 + b2
    g.output("loss", gs.cross_entropy(logits, y))
    g.output("logits", logits)

    params = {
        "W1": rng.normal(size=(2, 16)) * 0.5,
        "b1": np.zeros(16),
        "W2": rng.normal(size=(16, 3)) * 0.5,
        "b2": np.zeros(3),
    }
    common = dict(
        loss="loss", params=params, data={"X": X, "labels": labels},
        optimizer=gs.Adam(lr=0.02), schedule=gs.CosineLR(t_max=200),
        batch_size=64, epochs=20, checkpoint_every=50,
    )  # fmt: skip
    run = client.train(g, **common)
    for step in run:
        if step.step == 75:  # stop mid-way: the run's checkpoint is then step 75's
            break
    print(f"  stopped at step 75; checkpoint at step {run.checkpoint.step}")
    resumed = client.train(g, **common, resume=run.checkpoint)
    for step in resumed:
        if step.step % 50 == 0:
            print(f"  mlp step {step.step:4d}  loss {step.loss:.4f}  lr {step.lr:.4f}")
    out = client.evaluate(g, {"X": X, "labels": labels, **resumed.params})
    accuracy = float(np.mean(out["logits"].argmax(axis=1) == labels))
    print(f"  training accuracy {accuracy:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="the server (HOST:PORT)")
    parser.add_argument("--local", action="store_true", help="train in-process (LocalClient)")
    args = parser.parse_args()
    client = gs.LocalClient() if args.local else gs.Client(args.target, timeout=30)
    with client:
        print("ReLU neuron, max(0, w·x + b), MSE:")
        relu_neuron(client)
        print("MLP classifier on three blobs, Adam + cosine schedule, stop and resume:")
        mlp_classifier(client)


if __name__ == "__main__":
    main()
