"""A tiny tanh MLP with a softmax cross-entropy loss and hand-written backprop."""

from __future__ import annotations

import numpy as np
import pytest


def _mlp_grad(params, batch):
    """grad_fn for logits = tanh(X W1 + b1) W2 + b2, mean softmax cross-entropy on labels y."""
    X, y = batch["X"], batch["y"]
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    h = np.tanh(X @ W1 + b1)
    logits = h @ W2 + b2
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    m = X.shape[0]
    loss = -logp[np.arange(m), y].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(m), y] -= 1
    dlogits /= m
    dh = (dlogits @ W2.T) * (1 - h * h)
    grads = {
        "W1": X.T @ dh,
        "b1": dh.sum(axis=0),
        "W2": h.T @ dlogits,
        "b2": dlogits.sum(axis=0),
    }
    return loss, grads


def _make_problem(n=50, d=4, hidden=5, k=3, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    data = {
        "X": rng.normal(size=(n, d)).astype(dtype),
        "y": rng.integers(0, k, size=n),
    }
    params = {
        "W1": (rng.normal(size=(d, hidden)) * 0.5).astype(dtype),
        "b1": np.zeros(hidden, dtype=dtype),
        "W2": (rng.normal(size=(hidden, k)) * 0.5).astype(dtype),
        "b2": np.zeros(k, dtype=dtype),
    }
    return params, data


@pytest.fixture
def mlp_grad():
    """The grad_fn (tests import nothing from conftest, whatever pytest's import mode)."""
    return _mlp_grad


@pytest.fixture
def make_problem():
    """make_problem(n=50, d=4, hidden=5, k=3, dtype=float64, seed=0) -> (params, data)."""
    return _make_problem
