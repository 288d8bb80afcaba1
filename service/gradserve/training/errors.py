"""Errors of the training loop. The rpc layer maps each to one gRPC status."""

from __future__ import annotations

import math


class TrainingError(Exception):
    """Base class of every error the training package raises on purpose."""


class TrainingConfigError(TrainingError, ValueError):
    """The run is refused before its first step (rpc: INVALID_ARGUMENT).

    `field` names the culprit as a dotted path (`batch_size`, `data.X`, `params.W1`,
    `optimizer.momentum`, `resume`); `reason` says why. `violations` holds every
    (field, reason) pair found, the first of which is (`field`, `reason`).
    """

    def __init__(
        self, field: str, reason: str, *, violations: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.violations = violations or [(field, reason)]


class NonFiniteLoss(TrainingError):
    """Step `step` (1-based) gave a NaN/inf loss or gradient (rpc: FAILED_PRECONDITION).

    The parameters were not updated with that step's gradient; the last checkpoint
    event is still valid.
    """

    def __init__(self, step: int, loss: float, grad_norm: float) -> None:
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        value = loss if not math.isfinite(loss) else grad_norm
        super().__init__(f"non-finite {what} ({value}) at step {step}")
        self.step = step
        self.loss = loss
        self.grad_norm = grad_norm


class TrainingCancelled(TrainingError):
    """`cancel()` returned true before a step; `steps` steps had completed (rpc: CANCELLED)."""

    def __init__(self, steps: int) -> None:
        super().__init__(f"training cancelled after {steps} steps")
        self.steps = steps


class GradientFunctionError(TrainingError):
    """The gradient function broke its contract (a bug in the binding: rpc INTERNAL)."""
