"""Schedules against their closed forms, and as the loop applies them (once per step)."""

from __future__ import annotations

import math

import pytest
from gradserve.training import (
    ConstantSchedule,
    CosineSchedule,
    SgdConfig,
    StepEvent,
    StepSchedule,
    train,
)


def test_constant():
    assert [ConstantSchedule().lr(0.5, t) for t in range(4)] == [0.5] * 4


def test_step_decay_closed_form():
    s = StepSchedule(step_size=3, gamma=0.5)
    assert [s.lr(1.0, t) for t in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert StepSchedule(step_size=2).gamma == 0.1
    for t in range(20):
        assert s.lr(0.3, t) == pytest.approx(0.3 * 0.5 ** (t // 3), rel=1e-15)


def test_cosine_closed_form():
    s = CosineSchedule(t_max=10, eta_min=0.01)
    for t in range(25):
        want = 0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * t / 10)) / 2
        assert s.lr(0.2, t) == pytest.approx(want, rel=1e-15)
    assert s.lr(0.2, 0) == pytest.approx(0.2)
    assert s.lr(0.2, 10) == pytest.approx(0.01)
    assert CosineSchedule(t_max=4).lr(1.0, 2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "schedule", [StepSchedule(step_size=3, gamma=0.5), CosineSchedule(t_max=7, eta_min=0.001)]
)
def test_loop_steps_schedule_once_per_optimizer_step(schedule, mlp_grad, make_problem):
    params, data = make_problem()
    events = train(
        mlp_grad,
        params,
        data,
        {"optimizer": SgdConfig(lr=0.1), "schedule": schedule, "batch_size": 16, "epochs": 3},
    )
    lrs = [e.lr for e in events if isinstance(e, StepEvent)]
    assert lrs == [schedule.lr(0.1, t) for t in range(12)]
