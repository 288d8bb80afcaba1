"""The loop's guards: the exact refusals of params, resumes and gradient functions, and a
run fingerprint that depends on what determines the trajectory and on nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gradserve.training import (
    CheckpointEvent,
    GradientFunctionError,
    TrainingConfigError,
    load_config,
    run_fingerprint,
    train,
)


def never(params, batch):
    raise AssertionError("validation must fail before any step")


def config(**kw):
    return {"optimizer": {"kind": "sgd", "lr": 0.1}, "batch_size": 8, "epochs": 1} | kw


def refusal(params, data, cfg, **kw) -> tuple[str, str]:
    with pytest.raises(TrainingConfigError) as info:
        train(never, params, data, cfg, **kw)
    return info.value.field, info.value.reason


def checkpoint(mlp_grad, params, data):
    events = train(mlp_grad, params, data, config(checkpoint_every=2))
    return next(e.checkpoint for e in events if isinstance(e, CheckpointEvent))


def test_params_refusals_name_the_parameter(make_problem):
    params, data = make_problem()
    assert refusal({}, data, config()) == ("params", "no parameters to train")
    assert refusal(params | {"b1": [0.0]}, data, config()) == (
        "params.b1",
        "expected a numpy array, got <class 'list'>",
    )
    assert refusal(params | {"b1": np.zeros(5, np.int32)}, data, config()) == (
        "params.b1",
        "has dtype int32; a trainable parameter must be a float",
    )


def test_resume_refusals_say_what_differs(mlp_grad, make_problem):
    params, data = make_problem()
    ckpt = checkpoint(mlp_grad, params, data)
    fewer = {k: v for k, v in params.items() if k != "b2"}
    assert refusal(fewer, data, config(), resume=ckpt) == (
        "resume.params",
        "has entries ['W1', 'W2', 'b1', 'b2']; this run has ['W1', 'W2', 'b1']",
    )
    wider, _ = make_problem(hidden=6)
    assert refusal(wider, data, config(), resume=ckpt) == (
        "resume.params.W1",
        "has shape (4, 5) float64; this run has (4, 6) float64",
    )
    single = {k: v.astype(np.float32) for k, v in params.items()}
    assert refusal(single, data, config(), resume=ckpt) == (
        "resume.params.W1",
        "has shape (4, 5) float64; this run has (4, 5) float32",
    )
    momentum = config(optimizer={"kind": "sgd", "lr": 0.1, "momentum": 0.9})
    field, reason = refusal(params, data, momentum, resume=ckpt)
    assert field == "resume.optimizer_state" and reason.startswith("has entries ['step']")
    assert refusal(params, data, config(seed=1), resume=ckpt) == (
        "resume",
        "the checkpoint was made by a different run configuration (optimizer, schedule,"
        " batch size, shuffle, seed, or parameter or data shapes differ)",
    )
    for change in ({"step": -1}, {"epoch": -1}):
        bad = dataclasses.replace(ckpt, **change)
        assert refusal(params, data, config(), resume=bad) == ("resume", "negative step or epoch")
    for cursor in (-1, 7):  # 50 samples in batches of 8: cursors 0..6
        bad = dataclasses.replace(ckpt, cursor=cursor)
        assert refusal(params, data, config(), resume=bad) == (
            "resume",
            f"cursor {cursor} is outside 0..6",
        )


def test_gradient_function_errors_say_what_is_wrong(make_problem):
    params, data = make_problem()
    cases = [
        (lambda p, b: (1.0, {"W1": p["W1"]}), "gradients for ['W1'] but the parameters are "
         "['W1', 'W2', 'b1', 'b2']"),
        (lambda p, b: (1.0, {k: np.zeros(3) for k in p}), "gradient of 'W1' has shape (3,); "
         "the parameter has (4, 5)"),
        (lambda p, b: (np.ones(2), {k: np.zeros_like(v) for k, v in p.items()}),
         "the loss must be a scalar; got shape (2,)"),
    ]  # fmt: skip
    for grad_fn, message in cases:
        with pytest.raises(GradientFunctionError) as info:
            list(train(grad_fn, params, data, config()))
        assert str(info.value) == message


def test_gradients_of_another_dtype_update_in_the_parameters_dtype(mlp_grad, make_problem):
    params, data = make_problem()

    def single(p, b):
        loss, grads = mlp_grad(p, b)
        return loss, {k: g.astype(np.float32) for k, g in grads.items()}

    result = list(train(single, params, data, config()))[-1]
    assert {v.dtype for v in result.params.values()} == {np.dtype(np.float64)}
    expected = list(train(mlp_grad, params, data, config()))[-1]
    for name, value in result.params.items():
        np.testing.assert_allclose(value, expected.params[name], rtol=1e-5)


# A checkpoint is resumable as long as its fingerprint is the same: any change to what goes
# into it (its keys, their order, the encoding) would refuse every checkpoint clients hold.
GOLDEN = "253afe49ef0ce47841a278fb1d66dd9b30c1d38e8433d7f4f172353a03e08f41"


def fingerprint(make_problem, **changes) -> bytes:
    params, data = make_problem()
    return run_fingerprint(load_config(config(**changes)), params, data)


@pytest.mark.parametrize(
    "change",
    [
        {"optimizer": {"kind": "sgd", "lr": 0.2}},
        {"schedule": {"kind": "cosine", "t_max": 10}},
        {"batch_size": 9},
        {"shuffle": False},
        {"seed": 1},
    ],
    ids=["optimizer", "schedule", "batch_size", "shuffle", "seed"],
)
def test_the_fingerprint_depends_on_the_trajectory(change, make_problem):
    assert fingerprint(make_problem, **change) != fingerprint(make_problem)


def test_the_fingerprint_depends_on_param_and_data_shapes_and_dtypes(make_problem):
    cfg = load_config(config())
    params, data = make_problem()
    base = run_fingerprint(cfg, params, data)
    wider, _ = make_problem(hidden=6)
    assert run_fingerprint(cfg, wider, data) != base
    single = {k: v.astype(np.float32) for k, v in params.items()}
    assert run_fingerprint(cfg, single, data) != base
    assert run_fingerprint(cfg, params, {k: v[:40] for k, v in data.items()}) != base
    assert run_fingerprint(cfg, params, data | {"y": data["y"].astype(np.int32)}) != base
    assert run_fingerprint(cfg, params | {"b1": params["b1"] + 1}, data) == base  # not values


def test_the_fingerprint_ignores_length_and_cadence(make_problem):
    base = fingerprint(make_problem)
    assert fingerprint(make_problem, epochs=5) == base
    assert fingerprint(make_problem, max_steps=3) == base
    assert fingerprint(make_problem, report_every=2, checkpoint_every=3) == base
    assert base.hex() == GOLDEN
