"""Every refusal happens before the first step and names its culprit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gradserve.training import (
    AdamConfig,
    CheckpointEvent,
    CosineSchedule,
    GradientFunctionError,
    SgdConfig,
    StepSchedule,
    TrainConfig,
    TrainingConfigError,
    check_inputs,
    load_config,
    run_fingerprint,
    train,
)
from pydantic import ValidationError


def never(params, batch):
    raise AssertionError("validation must fail before any step")


def config(**kw):
    return {"optimizer": {"kind": "sgd", "lr": 0.1}, "batch_size": 8, "epochs": 1} | kw


def refused(params, data, cfg, **kw) -> TrainingConfigError:
    with pytest.raises(TrainingConfigError) as info:
        train(never, params, data, cfg, **kw)  # raises on the call, not on iteration
    return info.value


def test_parameter_must_be_float(make_problem):
    params, data = make_problem()
    params["b1"] = np.zeros(5, dtype=np.int64)
    err = refused(params, data, config())
    assert err.field == "params.b1" and "float" in err.reason


def test_data_leading_dimensions_must_agree(make_problem):
    params, data = make_problem()
    data["y"] = data["y"][:49]
    err = refused(params, data, config())
    assert err.field == "data.y"
    assert "49" in err.reason and "50" in err.reason and "data.X" in err.reason


@pytest.mark.parametrize("size", [0, -3])
def test_batch_size_at_least_one(size, make_problem):
    params, data = make_problem()
    err = refused(params, data, config(batch_size=size))
    assert err.field == "batch_size"


def test_epochs_or_max_steps_required(make_problem):
    params, data = make_problem()
    err = refused(params, data, config(epochs=None))
    assert "epochs or max_steps" in err.reason
    with pytest.raises(ValidationError, match="epochs or max_steps"):
        TrainConfig(optimizer=SgdConfig(lr=0.1), batch_size=4)


@pytest.mark.parametrize(
    ("optimizer", "field"),
    [
        ({"kind": "sgd", "lr": 0.1, "mementum": 0.9}, "optimizer.sgd.mementum"),
        ({"kind": "adam", "beta1": 0.9}, "optimizer.adam.beta1"),
        ({"kind": "rmsprop", "lr": 0.1}, "optimizer"),
        ({"kind": "sgd", "lr": 0.0}, "optimizer.sgd.lr"),
        ({"kind": "sgd", "lr": 0.1, "nesterov": True}, "optimizer.sgd"),
        ({"kind": "adam", "betas": [0.9, 1.0]}, "optimizer.adam.betas.1"),
    ],
)
def test_optimizer_arguments_are_checked(optimizer, field, make_problem):
    params, data = make_problem()
    err = refused(params, data, config(optimizer=optimizer))
    assert err.field == field
    if optimizer.get("kind") == "rmsprop":
        assert "rmsprop" in err.reason


def test_unknown_arguments_named_by_the_models():
    with pytest.raises(ValidationError, match="mementum"):
        SgdConfig(lr=0.1, mementum=0.9)
    with pytest.raises(ValidationError, match="amsgrad"):
        AdamConfig(amsgrad=True)
    with pytest.raises(ValidationError, match="nesterov requires momentum"):
        SgdConfig(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValidationError, match="T_max"):
        CosineSchedule(T_max=3)
    with pytest.raises(ValidationError, match="step_size"):
        StepSchedule(step_size=0)


def test_unknown_schedule_argument(make_problem):
    params, data = make_problem()
    err = refused(params, data, config(schedule={"kind": "cosine", "t_max": 5, "warmup": 2}))
    assert err.field == "schedule.cosine.warmup"
    err = refused(params, data, config(schedule={"kind": "cosine", "t_max": 5}, seed=-1))
    assert err.field == "seed"


def test_load_config_collects_every_violation():
    with pytest.raises(TrainingConfigError) as info:
        load_config(config(batch_size=0, report_every=0))
    assert {f for f, _ in info.value.violations} == {"batch_size", "report_every"}
    cfg = TrainConfig(optimizer=AdamConfig(), batch_size=4, max_steps=3)
    assert load_config(cfg) is cfg


def _checkpoint(mlp_grad, params, data, cfg):
    events = train(mlp_grad, params, data, cfg | {"checkpoint_every": 2})
    return next(e.checkpoint for e in events if isinstance(e, CheckpointEvent))


def test_resume_refuses_a_different_optimizer(mlp_grad, make_problem):
    params, data = make_problem()
    ckpt = _checkpoint(mlp_grad, params, data, config())
    other = config(optimizer={"kind": "sgd", "lr": 0.2})
    err = refused(params, data, other, resume=ckpt)
    assert err.field == "resume" and "different run configuration" in err.reason
    # A different kind of optimizer has a different state: named by the state check.
    err = refused(params, data, config(optimizer={"kind": "adam"}), resume=ckpt)
    assert err.field == "resume.optimizer_state"


def test_resume_refuses_a_different_data_size(mlp_grad, make_problem):
    params, data = make_problem()
    ckpt = _checkpoint(mlp_grad, params, data, config())
    smaller = {k: v[:40] for k, v in data.items()}
    err = refused(params, smaller, config(), resume=ckpt)
    assert err.field == "resume" and "data" in err.reason


def test_resume_refuses_different_shapes(mlp_grad, make_problem):
    params, data = make_problem()
    ckpt = _checkpoint(mlp_grad, params, data, config())
    wider, _ = make_problem(hidden=6)
    err = refused(wider, data, config(), resume=ckpt)
    assert err.field == "resume.params.W1" and "(4, 5)" in err.reason


def test_resume_with_other_seed_refused(mlp_grad, make_problem):
    params, data = make_problem()
    ckpt = _checkpoint(mlp_grad, params, data, config())
    assert refused(params, data, config(seed=1), resume=ckpt).field == "resume"


# check_inputs: the helper for the rpc/core seam, which knows the graph's declared inputs.

DECLARED = {
    "W": ((3, 2), "float64"),
    "X": ((-1, 3), "float64"),
    "y": ((-1,), "int64"),
}


def bound(n=10):
    params = {"W": np.zeros((3, 2))}
    data = {"X": np.zeros((n, 3)), "y": np.zeros(n, dtype=np.int64)}
    return params, data


def test_check_inputs_accepts_any_batch_with_minus_one():
    params, data = bound()
    check_inputs(DECLARED, params=params, data=data, batch_size=4)


def test_check_inputs_fixed_batch_dimension():
    declared = DECLARED | {"X": ((4, 3), "float64")}
    params, data = bound(8)
    check_inputs(declared, params=params, data=data, batch_size=4)
    params, data = bound(10)  # the last batch would have 2 rows
    with pytest.raises(TrainingConfigError, match="declare it as -1") as info:
        check_inputs(declared, params=params, data=data, batch_size=4)
    assert info.value.field == "data.X"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p, d: d.update(X=np.zeros((10, 4))), "data.X"),
        (lambda p, d: d.update(y=np.zeros(10)), "data.y"),
        (lambda p, d: d.update(Z=np.zeros(10)), "data.Z"),
        (lambda p, d: d.pop("y"), "inputs.y"),
        (lambda p, d: p.update(W=np.zeros((2, 3))), "params.W"),
        (lambda p, d: p.update(X=np.zeros((3,))), "data.X"),
        (lambda p, d: d.update(y=np.zeros(9, dtype=np.int64)), "data.y"),
    ],
    ids=["trailing", "dtype", "unknown", "unbound", "param_shape", "both", "leading"],
)
def test_check_inputs_refusals(change, field):
    params, data = bound()
    change(params, data)
    with pytest.raises(TrainingConfigError) as info:
        check_inputs(DECLARED, params=params, data=data, batch_size=4)
    assert info.value.field == field


# The exact refusals, and a run fingerprint that depends on what determines the trajectory
# and on nothing else.


def refusal(params, data, cfg, **kw) -> tuple[str, str]:
    err = refused(params, data, cfg, **kw)
    return err.field, err.reason


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
    ckpt = _checkpoint(mlp_grad, params, data, config())
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
