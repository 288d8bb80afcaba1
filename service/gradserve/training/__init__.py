"""Optimisers and the training loop. Knows nothing of gRPC, protobuf or the autodiff core:
it trains through a gradient function (`GradFn`) that the rpc layer binds to the core."""

from .config import TrainConfig, load_config
from .data import batches_per_epoch, check_inputs, epoch_order, iter_batches, num_samples
from .errors import (
    GradientFunctionError,
    NonFiniteLoss,
    TrainingCancelled,
    TrainingConfigError,
    TrainingError,
)
from .loop import (
    Checkpoint,
    CheckpointEvent,
    Event,
    GradFn,
    ResultEvent,
    StepEvent,
    run_fingerprint,
    train,
)
from .optimizers import AdamConfig, OptimizerConfig, SgdConfig
from .schedules import ConstantSchedule, CosineSchedule, ScheduleConfig, StepSchedule

__all__ = [
    "AdamConfig",
    "Checkpoint",
    "CheckpointEvent",
    "ConstantSchedule",
    "CosineSchedule",
    "Event",
    "GradFn",
    "GradientFunctionError",
    "NonFiniteLoss",
    "OptimizerConfig",
    "ResultEvent",
    "ScheduleConfig",
    "SgdConfig",
    "StepEvent",
    "StepSchedule",
    "TrainConfig",
    "TrainingCancelled",
    "TrainingConfigError",
    "TrainingError",
    "batches_per_epoch",
    "check_inputs",
    "epoch_order",
    "iter_batches",
    "load_config",
    "num_samples",
    "run_fingerprint",
    "train",
]
