"""Parity with torch.optim's published update formulas, written here as a reference loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradserve.training import (
    AdamConfig,
    ResultEvent,
    SgdConfig,
    train,
)

BATCH, EPOCHS = 16, 3  # 50 samples: batches of 16, 16, 16 and a partial 2


def batches_in_order(data, batch_size):
    n = len(data["X"])
    for lo in range(0, n, batch_size):
        yield {k: v[lo : lo + batch_size] for k, v in data.items()}


def reference_sgd(mlp_grad, params, data, lr, momentum=0.0, dampening=0.0, nesterov=False, wd=0.0):
    """torch.optim.SGD, as its documentation writes the algorithm."""
    params = {k: v.copy() for k, v in params.items()}
    bufs: dict = {}
    for _ in range(EPOCHS):
        for batch in batches_in_order(data, BATCH):
            _, grads = mlp_grad(params, batch)
            for name in params:
                g = grads[name]
                if wd != 0:
                    g = g + wd * params[name]
                if momentum != 0:
                    if name in bufs:
                        bufs[name] = momentum * bufs[name] + (1 - dampening) * g
                    else:
                        bufs[name] = g.copy()
                    g = g + momentum * bufs[name] if nesterov else bufs[name]
                params[name] = params[name] - lr * g
    return params


def reference_adam(mlp_grad, params, data, lr, betas=(0.9, 0.999), eps=1e-8, wd=0.0):
    """torch.optim.Adam (amsgrad=False), as its documentation writes the algorithm."""
    params = {k: v.copy() for k, v in params.items()}
    b1, b2 = betas
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    t = 0
    for _ in range(EPOCHS):
        for batch in batches_in_order(data, BATCH):
            _, grads = mlp_grad(params, batch)
            t += 1
            for name in params:
                g = grads[name]
                if wd != 0:
                    g = g + wd * params[name]
                m[name] = b1 * m[name] + (1 - b1) * g
                v[name] = b2 * v[name] + (1 - b2) * g * g
                m_hat = m[name] / (1 - b1**t)
                v_hat = v[name] / (1 - b2**t)
                params[name] = params[name] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def run(mlp_grad, params, data, optimizer):
    events = list(
        train(
            mlp_grad,
            params,
            data,
            {"optimizer": optimizer, "batch_size": BATCH, "epochs": EPOCHS, "shuffle": False},
        )
    )
    result = events[-1]
    assert isinstance(result, ResultEvent)
    assert result.steps == EPOCHS * math.ceil(50 / BATCH)
    return result.params


def assert_params_close(got, want):
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=0, err_msg=name)


@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.3},
        {"momentum": 0.9, "nesterov": True},
        {"weight_decay": 0.05},
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    ],
    ids=["plain", "momentum", "dampening", "nesterov", "weight_decay", "all"],
)
def test_sgd_matches_torch_formulas(hyper, mlp_grad, make_problem):
    params, data = make_problem()
    got = run(mlp_grad, params, data, SgdConfig(lr=0.3, **hyper))
    want = reference_sgd(
        mlp_grad,
        params,
        data,
        lr=0.3,
        momentum=hyper.get("momentum", 0.0),
        dampening=hyper.get("dampening", 0.0),
        nesterov=hyper.get("nesterov", False),
        wd=hyper.get("weight_decay", 0.0),
    )
    assert_params_close(got, want)
    # The run moved: the parity is not vacuous.
    assert not np.allclose(got["W1"], params["W1"])


@pytest.mark.parametrize("wd", [0.0, 0.1], ids=["plain", "weight_decay"])
def test_adam_matches_torch_formulas(wd, mlp_grad, make_problem):
    params, data = make_problem()
    got = run(
        mlp_grad, params, data, AdamConfig(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd)
    )
    want = reference_adam(mlp_grad, params, data, lr=0.05, betas=(0.8, 0.99), eps=1e-6, wd=wd)
    assert_params_close(got, want)


def test_adam_defaults_match_torch(mlp_grad, make_problem):
    params, data = make_problem()
    got = run(mlp_grad, params, data, AdamConfig())
    assert_params_close(got, reference_adam(mlp_grad, params, data, lr=1e-3))


def test_state_is_flat_tensors(make_problem):
    params, _ = make_problem()
    sgd = SgdConfig(lr=0.1, momentum=0.9).init_state(params)
    assert set(sgd) == {"step"} | {f"momentum_buffer/{k}" for k in params}
    adam = AdamConfig().init_state(params)
    assert set(adam) == {"step"} | {f"{s}/{k}" for s in ("exp_avg", "exp_avg_sq") for k in params}
    assert all(isinstance(v, np.ndarray) for v in adam.values())
    assert SgdConfig(lr=0.1).init_state(params).keys() == {"step"}


def _float32_problem():
    rng = np.random.default_rng(3)
    p = {"w": rng.normal(size=(64,)).astype(np.float32)}
    g = {"w": rng.normal(size=(64,)).astype(np.float32)}
    return p, g


def test_sgd_update_stays_in_float32_arithmetic():
    # np.float64 hyper-parameters must not upcast (NumPy 2 treats them as strong types).
    p, g = _float32_problem()
    opt = SgdConfig(lr=np.float64(0.1), weight_decay=np.float64(0.01))
    want = p["w"] - np.float32(0.1) * (g["w"] + np.float32(0.01) * p["w"])
    state = opt.init_state(p)
    opt.update(p, g, state, np.float64(0.1))
    assert p["w"].dtype == np.float32
    np.testing.assert_array_equal(p["w"], want)


def test_adam_update_stays_in_float32_arithmetic():
    p, g = _float32_problem()
    opt = AdamConfig(lr=np.float64(0.01), betas=(np.float64(0.9), np.float64(0.999)))
    f = np.float32
    w, gw = p["w"].copy(), g["w"]
    m = f(0.1) * gw
    v = f(1 - 0.999) * gw * gw
    denom = np.sqrt(v) / f(math.sqrt(1 - 0.999)) + f(1e-8)
    want = w - (f(0.01 / (1 - 0.9)) * m) / denom
    state = opt.init_state(p)
    opt.update(p, g, state, 0.01)
    assert all(a.dtype == np.float32 for k, a in state.items() if k != "step")
    np.testing.assert_array_equal(p["w"], want)


def test_training_float32_stays_float32(mlp_grad, make_problem):
    params, data = make_problem(dtype=np.float32)
    for opt in (SgdConfig(lr=0.1, momentum=0.9, nesterov=True), AdamConfig(weight_decay=0.1)):
        events = list(
            train(
                mlp_grad,
                params,
                data,
                {"optimizer": opt, "batch_size": 8, "epochs": 2, "checkpoint_every": 3},
            )
        )
        result = events[-1]
        assert all(v.dtype == np.float32 for v in result.params.values())
        ckpt = next(e.checkpoint for e in events if hasattr(e, "checkpoint"))
        assert all(v.dtype == np.float32 for k, v in ckpt.optimizer_state.items() if k != "step")
