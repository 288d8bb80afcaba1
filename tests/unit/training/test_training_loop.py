"""The loop: events, exact resume, determinism, cancellation, non-finite losses, batching."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from gradserve.training import (
    AdamConfig,
    Checkpoint,
    CheckpointEvent,
    CosineSchedule,
    NonFiniteLoss,
    ResultEvent,
    SgdConfig,
    StepEvent,
    TrainingCancelled,
    epoch_order,
    iter_batches,
    train,
)

OPTIMIZERS = [
    SgdConfig(lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.01),
    SgdConfig(lr=0.2, momentum=0.9, dampening=0.5),
    AdamConfig(lr=0.02, weight_decay=0.01),
]


def config(optimizer, **kw):
    base = {"optimizer": optimizer, "batch_size": 16, "epochs": 3, "seed": 7, "shuffle": True}
    return base | kw


def final(events):
    events = list(events)
    assert isinstance(events[-1], ResultEvent)
    return events[-1]


def assert_params_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=["nesterov", "dampening", "adam"])
def test_resume_from_any_checkpoint_is_exact(optimizer, mlp_grad, make_problem):
    params, data = make_problem()
    schedule = CosineSchedule(t_max=10, eta_min=0.01)
    cfg = config(optimizer, checkpoint_every=1, report_every=1, schedule=schedule)
    events = list(train(mlp_grad, params, data, cfg))
    full = events[-1]
    steps = [e for e in events if isinstance(e, StepEvent)]
    checkpoints = [e.checkpoint for e in events if isinstance(e, CheckpointEvent)]
    assert [c.step for c in checkpoints] == list(range(1, 13))  # 4 batches x 3 epochs
    for ckpt in checkpoints[:-1]:
        calls: list[object] = []

        def counted(p, batch, calls=calls):
            calls.append(batch)
            return mlp_grad(p, batch)

        resumed_events = list(train(counted, params, data, cfg, resume=ckpt))
        resumed = final(resumed_events)
        # It goes on from the checkpoint: only the steps after it run, with the same
        # step numbers, epochs, losses and learning rates as the uninterrupted run.
        assert len(calls) == full.steps - ckpt.step
        resumed_steps = [e for e in resumed_events if isinstance(e, StepEvent)]
        assert [(e.step, e.epoch, e.loss, e.lr) for e in resumed_steps] == [
            (e.step, e.epoch, e.loss, e.lr) for e in steps[ckpt.step :]
        ]
        assert resumed.steps == full.steps
        assert resumed.final_loss == full.final_loss
        assert_params_equal(resumed.params, full.params)
    # A checkpoint can be reused: resuming does not consume or alter it.
    again = final(train(mlp_grad, params, data, cfg, resume=checkpoints[5]))
    assert_params_equal(again.params, full.params)


def test_resume_with_longer_run_matches_uninterrupted(mlp_grad, make_problem):
    params, data = make_problem()
    cfg = config(OPTIMIZERS[2], checkpoint_every=5)
    short = list(train(mlp_grad, params, data, cfg | {"epochs": 2}))
    ckpt = [e.checkpoint for e in short if isinstance(e, CheckpointEvent)][-1]
    longer = final(train(mlp_grad, params, data, cfg | {"epochs": 4}, resume=ckpt))
    assert_params_equal(
        longer.params, final(train(mlp_grad, params, data, cfg | {"epochs": 4})).params
    )


def test_checkpoint_fields_and_copies(mlp_grad, make_problem):
    params, data = make_problem()
    events = list(train(mlp_grad, params, data, config(OPTIMIZERS[0], checkpoint_every=4)))
    ckpts = [e.checkpoint for e in events if isinstance(e, CheckpointEvent)]
    # 4 batches per epoch: a checkpoint at the end of an epoch points at the next one.
    assert [(c.step, c.epoch, c.cursor) for c in ckpts] == [(4, 1, 0), (8, 2, 0), (12, 3, 0)]
    ckpts6 = [
        e.checkpoint
        for e in train(mlp_grad, params, data, config(OPTIMIZERS[0], checkpoint_every=6))
        if isinstance(e, CheckpointEvent)
    ]
    assert [(c.step, c.epoch, c.cursor) for c in ckpts6] == [(6, 1, 2), (12, 3, 0)]
    first = ckpts[0]
    assert isinstance(first, Checkpoint) and first.seed == 7
    assert isinstance(first.fingerprint, bytes) and len(first.fingerprint) == 32
    assert int(first.optimizer_state["step"]) == 4
    # Later in-place updates did not alter earlier checkpoints.
    assert not np.array_equal(first.params["W1"], ckpts[1].params["W1"])
    assert not np.array_equal(
        first.optimizer_state["momentum_buffer/W1"], ckpts[1].optimizer_state["momentum_buffer/W1"]
    )
    result = events[-1]
    assert_params_equal(result.params, ckpts[-1].params)


def test_determinism_and_inputs_untouched(mlp_grad, make_problem):
    params, data = make_problem()
    before = {k: v.copy() for k, v in params.items()}
    a = final(train(mlp_grad, params, data, config(OPTIMIZERS[2])))
    b = final(train(mlp_grad, params, data, config(OPTIMIZERS[2])))
    assert_params_equal(a.params, b.params)
    assert_params_equal(params, before)
    other_seed = final(train(mlp_grad, params, data, config(OPTIMIZERS[2], seed=8)))
    assert not np.array_equal(a.params["W1"], other_seed.params["W1"])


def test_step_events(mlp_grad, make_problem):
    params, data = make_problem()
    events = list(train(mlp_grad, params, data, config(OPTIMIZERS[0], report_every=5)))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == [5, 10, 12]  # the last step is always reported
    assert [e.epoch for e in steps] == [1, 2, 2]  # 0-based
    assert all(e.finite and e.lr == 0.2 for e in steps)
    assert steps[0].elapsed_seconds <= steps[-1].elapsed_seconds <= events[-1].elapsed_seconds
    assert events[-1].final_loss == steps[-1].loss


def test_step_event_values(mlp_grad, make_problem):
    params, data = make_problem()
    events = list(train(mlp_grad, params, data, config(OPTIMIZERS[0], shuffle=False, max_steps=1)))
    first = events[0]
    loss, grads = mlp_grad(params, {k: v[:16] for k, v in data.items()})
    assert first.loss == pytest.approx(float(loss), rel=1e-15)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    assert first.grad_norm == pytest.approx(norm, rel=1e-12)
    assert (first.step, first.epoch) == (1, 0)


@pytest.mark.parametrize(
    ("kw", "steps"),
    [({"epochs": 2}, 8), ({"epochs": None, "max_steps": 5}, 5), ({"epochs": 1, "max_steps": 9}, 4),
     ({"epochs": 5, "max_steps": 9}, 9)],
)  # fmt: skip
def test_stop_at_epochs_or_max_steps(kw, steps, mlp_grad, make_problem):
    params, data = make_problem()
    assert final(train(mlp_grad, params, data, config(OPTIMIZERS[0], **kw))).steps == steps


def test_cancel_stops_within_one_step(mlp_grad, make_problem):
    params, data = make_problem()
    calls = []

    def counting_grad(p, b):
        calls.append(1)
        return mlp_grad(p, b)

    flag = {"stop": False}
    events = train(counting_grad, params, data, config(OPTIMIZERS[0]), cancel=lambda: flag["stop"])
    seen = []
    with pytest.raises(TrainingCancelled) as info:
        for event in events:
            seen.append(event)
            if isinstance(event, StepEvent) and event.step == 3:
                flag["stop"] = True
    assert info.value.steps == 3
    assert len(calls) == 3
    assert not any(isinstance(e, ResultEvent) for e in seen)


def test_cancel_before_first_step(mlp_grad, make_problem):
    params, data = make_problem()

    def never(p, b):
        raise AssertionError("no step may run")

    with pytest.raises(TrainingCancelled) as info:
        list(train(never, params, data, config(OPTIMIZERS[0]), cancel=lambda: True))
    assert info.value.steps == 0


def test_closing_the_iterator_stops(mlp_grad, make_problem):
    params, data = make_problem()
    calls = []

    def counting_grad(p, b):
        calls.append(1)
        return mlp_grad(p, b)

    events = train(counting_grad, params, data, config(OPTIMIZERS[0]))
    next(events)
    events.close()
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, "grad"])
def test_non_finite_step_is_reported_and_not_applied(bad, mlp_grad, make_problem):
    params, data = make_problem()
    step_count = {"n": 0}

    def poisoned(p, b):
        step_count["n"] += 1
        loss, grads = mlp_grad(p, b)
        if step_count["n"] == 3:
            if bad == "grad":
                grads["W2"] = grads["W2"] * np.nan
            else:
                loss = bad
        return loss, grads

    cfg = config(OPTIMIZERS[2], checkpoint_every=1)
    seen = []
    with pytest.raises(NonFiniteLoss) as info:
        for event in train(poisoned, params, data, cfg):
            seen.append(event)
    assert info.value.step == 3
    what = {"nan": "loss (nan)", "inf": "loss (inf)", "grad": "gradient norm (nan)"}[str(bad)]
    assert str(info.value) == f"non-finite {what} at step 3"
    last = seen[-1]
    assert isinstance(last, StepEvent) and last.step == 3 and not last.finite
    # The last checkpoint is the state after step 2: step 3's gradient was never applied.
    ckpt = [e.checkpoint for e in seen if isinstance(e, CheckpointEvent)][-1]
    assert ckpt.step == 2
    two = final(train(mlp_grad, params, data, cfg | {"epochs": None, "max_steps": 2}))
    assert_params_equal(ckpt.params, two.params)


def test_batching_in_order_with_partial_last_batch():
    data = {
        "X": np.arange(10.0).reshape(5, 2),
        "y": np.arange(5, dtype=np.int64),
        "m": np.array([True, False, True, True, False]),
    }
    batches = list(iter_batches(data, 2, shuffle=False, seed=0, epoch=0))
    assert [b["y"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0]["y"].dtype == np.int64 and batches[0]["m"].dtype == np.bool_
    assert batches[2]["m"].tolist() == [False]


def test_shuffled_batching_is_recomputable_per_epoch():
    n = 11
    data = {"y": np.arange(n, dtype=np.int32), "X": np.arange(2.0 * n).reshape(n, 2)}
    for epoch in (0, 3):
        order = np.random.default_rng((5, epoch)).permutation(n)
        assert np.array_equal(epoch_order(n, shuffle=True, seed=5, epoch=epoch), order)
        batches = list(iter_batches(data, 4, shuffle=True, seed=5, epoch=epoch))
        assert [len(b["y"]) for b in batches] == [4, 4, 3]
        assert np.array_equal(np.concatenate([b["y"] for b in batches]), order)
        assert np.array_equal(batches[1]["X"][:, 0], 2.0 * order[4:8])  # rows stay aligned
        tail = list(iter_batches(data, 4, shuffle=True, seed=5, epoch=epoch, start=2))
        assert np.array_equal(tail[0]["y"], batches[2]["y"])
    assert epoch_order(n, shuffle=False, seed=5, epoch=0) is None


def test_checkpoints_carry_their_steps_loss_and_the_final_one_its_epoch(mlp_grad, make_problem):
    params, data = make_problem()
    cfg = config(OPTIMIZERS[0], report_every=1, checkpoint_every=5)
    events = list(train(mlp_grad, params, data, cfg))
    losses = {e.step: e.loss for e in events if isinstance(e, StepEvent)}
    ckpts = [e.checkpoint for e in events if isinstance(e, CheckpointEvent)]
    # 12 steps of 4 batches an epoch: at step 5, at step 10, and a final one after step 12,
    # at the end of the last epoch, which points at the start of the next.
    assert [(c.step, c.epoch, c.cursor) for c in ckpts] == [(5, 1, 1), (10, 2, 2), (12, 3, 0)]
    assert [c.loss for c in ckpts] == [losses[5], losses[10], losses[12]]


def test_resume_from_the_end_takes_no_step(mlp_grad, make_problem):
    params, data = make_problem()
    cfg = config(OPTIMIZERS[2])
    end = [
        e.checkpoint for e in train(mlp_grad, params, data, cfg) if isinstance(e, CheckpointEvent)
    ]
    events = list(train(mlp_grad, params, data, cfg, resume=end[-1]))
    assert len(events) == 1  # no step, no checkpoint: only the result of the checkpoint
    assert (events[0].steps, events[0].final_loss) == (12, end[-1].loss)
    assert_params_equal(events[0].params, end[-1].params)


def test_a_checkpoint_at_step_0_is_accepted(mlp_grad, make_problem):
    params, data = make_problem()
    cfg = config(OPTIMIZERS[0], checkpoint_every=1, epochs=None, max_steps=2)
    first = next(
        e.checkpoint for e in train(mlp_grad, params, data, cfg) if isinstance(e, CheckpointEvent)
    )
    start = dataclasses.replace(first, step=0, epoch=0, cursor=0, params=params)
    assert final(train(mlp_grad, params, data, cfg, resume=start)).steps == 2


def test_result_elapsed_is_the_runs_wall_time(mlp_grad, make_problem):
    params, data = make_problem()
    began = time.perf_counter()
    result = final(train(mlp_grad, params, data, config(OPTIMIZERS[0])))
    assert 0 < result.elapsed_seconds <= time.perf_counter() - began


def test_gradients_are_cast_to_the_parameters_dtype(mlp_grad, make_problem):
    params, data = make_problem(dtype=np.float32)

    def double(p, b):  # float64 gradients of float32 parameters
        loss, grads = mlp_grad(p, b)
        return loss, {k: g.astype(np.float64) for k, g in grads.items()}

    cfg = config(OPTIMIZERS[2], report_every=1)
    runs = [list(train(fn, params, data, cfg)) for fn in (double, mlp_grad)]
    steps = [
        [(e.step, e.loss, e.grad_norm) for e in run[:-1] if isinstance(e, StepEvent)]
        for run in runs
    ]
    assert steps[0] == steps[1]
    assert_params_equal(runs[0][-1].params, runs[1][-1].params)
    assert {v.dtype for v in runs[0][-1].params.values()} == {np.dtype(np.float32)}
