"""The run configuration: everything about a training run except the model, params and data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import TrainingConfigError
from .optimizers import OptimizerConfig
from .schedules import ConstantSchedule, ScheduleConfig


class TrainConfig(BaseModel):
    """A training run's configuration.

    Stops after `epochs` full passes or `max_steps` optimizer steps, whichever comes first
    (at least one is required). `max_steps` counts from the start of the run, including
    steps done before a resume checkpoint. `checkpoint_every=None` means no checkpoints.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=ConstantSchedule)
    batch_size: int = Field(ge=1)
    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    shuffle: bool = True
    seed: int = Field(0, ge=0)
    report_every: int = Field(1, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _stop(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs or max_steps (or both)")
        return self


def load_config(config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """Validate a plain mapping (as the rpc layer builds from protobuf) into a TrainConfig.

    Raises TrainingConfigError naming the first offending field (dotted, e.g.
    `optimizer.sgd.foo`), with every violation in `.violations`.
    """
    if isinstance(config, TrainConfig):
        return config
    try:
        return TrainConfig.model_validate(config)
    except ValidationError as exc:
        violations = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or _model_field(err)
            violations.append((field, err["msg"].removeprefix("Value error, ")))
        raise TrainingConfigError(*violations[0], violations=violations) from exc


def _model_field(err: Any) -> str:
    # A model-level validator has an empty loc; name the fields it is about.
    return "epochs" if "epochs" in err["msg"] else "config"
