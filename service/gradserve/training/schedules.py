"""Learning-rate schedules, stepped once per optimizer step (not per epoch).

`lr(base_lr, t)` is the learning rate of the optimizer step that follows `t` completed
steps (t = 0 for the first step): torch's scheduler `last_epoch` when `scheduler.step()`
is called after every `optimizer.step()`. Each schedule is its closed form, so the lr of
any step is recomputable on resume without replaying the schedule.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def lr(self, base_lr: float, t: int) -> float:
        raise NotImplementedError


class ConstantSchedule(_Schedule):
    kind: Literal["constant"] = "constant"

    def lr(self, base_lr: float, t: int) -> float:
        return float(base_lr)


class StepSchedule(_Schedule):
    """torch StepLR: `base_lr * gamma ** (t // step_size)`."""

    kind: Literal["step"] = "step"
    step_size: int = Field(ge=1)
    gamma: float = Field(0.1, gt=0)

    def lr(self, base_lr: float, t: int) -> float:
        return float(base_lr) * float(self.gamma) ** (t // self.step_size)


class CosineSchedule(_Schedule):
    """torch CosineAnnealingLR, closed form (periodic past `t_max`, as torch's closed form).

    `eta_min + (base_lr - eta_min) * (1 + cos(pi * t / t_max)) / 2`.
    """

    kind: Literal["cosine"] = "cosine"
    t_max: int = Field(ge=1)
    eta_min: float = Field(0.0, ge=0)

    def lr(self, base_lr: float, t: int) -> float:
        eta_min = float(self.eta_min)
        return eta_min + (float(base_lr) - eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2


ScheduleConfig = Annotated[
    ConstantSchedule | StepSchedule | CosineSchedule, Field(discriminator="kind")
]
