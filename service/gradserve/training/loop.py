"""The training loop: a generator of step, checkpoint and result events.

The loop knows nothing of gRPC nor of the autodiff core: it calls a gradient function.
The rpc layer binds the core to `GradFn`, maps the events to protobuf and the errors to
status codes (see `errors.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import TrainConfig, load_config
from .data import batches_per_epoch, iter_batches, num_samples
from .errors import GradientFunctionError, NonFiniteLoss, TrainingCancelled, TrainingConfigError

GradFn = Callable[
    [Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    tuple[np.ndarray | float, dict[str, np.ndarray]],
]
"""grad_fn(params, batch) -> (scalar loss, {param name: gradient, same shape and dtype}).

`params` are the loop's live arrays: read them, do not mutate or keep them across calls.
The loop never writes into the returned gradients.
"""

_FINGERPRINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class StepEvent:
    step: int  # 1-based optimizer step, counted from the start of the run (across resumes)
    epoch: int  # 0-based epoch this step's batch belongs to
    loss: float  # the batch loss at the parameters before this step's update
    grad_norm: float  # global L2 norm over all raw gradients (before weight decay)
    lr: float  # the scheduled learning rate used by this step
    elapsed_seconds: float  # wall time since this train() call started
    finite: bool  # False: loss or gradient was NaN/inf; NonFiniteLoss follows


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Everything needed to continue a run exactly; all fields are plain values or tensors."""

    step: int  # optimizer steps completed
    epoch: int  # 0-based epoch to continue in
    cursor: int  # batches of `epoch` already consumed (0 <= cursor < batches per epoch)
    seed: int  # shuffle seed; with `epoch` it determines the data order (the rng state)
    loss: float  # the loss of step `step`
    params: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]  # flat: "step", "exp_avg/W1", ...
    fingerprint: bytes  # sha256 of the run configuration; must match on resume


@dataclass(frozen=True, slots=True)
class CheckpointEvent:
    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True)
class ResultEvent:
    params: dict[str, np.ndarray]
    steps: int  # optimizer steps completed in total (including before a resume)
    final_loss: float  # the loss of the last step
    elapsed_seconds: float


Event = StepEvent | CheckpointEvent | ResultEvent


def train(
    grad_fn: GradFn,
    params: Mapping[str, np.ndarray],
    data: Mapping[str, np.ndarray],
    config: TrainConfig | Mapping[str, Any],
    *,
    resume: Checkpoint | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    """Validate eagerly, then return an iterator of events that runs the training.

    Raises TrainingConfigError here, before any step. While iterating: yields StepEvent
    every `report_every` steps and at the last step, CheckpointEvent every
    `checkpoint_every` steps (after that step's StepEvent) and after the last step (if it
    took any, so the run can be resumed where it ended), and finally one ResultEvent.
    Raises NonFiniteLoss after the non-finite step's event, and TrainingCancelled when
    `cancel()` is true before a step (it is checked before every step). Closing the
    iterator early also stops the run. The caller's `params` and `resume` are never mutated.
    """
    cfg = load_config(config)
    params = _validate_params(params)
    n = num_samples(data)
    fingerprint = run_fingerprint(cfg, params, data)
    optimizer = cfg.optimizer
    state = optimizer.init_state(params)
    step, epoch, cursor, loss = 0, 0, 0, math.nan
    if resume is not None:
        _check_resume(resume, params, state, fingerprint)
        params = {k: v.copy() for k, v in resume.params.items()}
        state = {k: v.copy() for k, v in resume.optimizer_state.items()}
        step, epoch, cursor, loss = resume.step, resume.epoch, resume.cursor, resume.loss
    per_epoch = batches_per_epoch(n, cfg.batch_size)
    if not 0 <= cursor < per_epoch:
        raise TrainingConfigError("resume", f"cursor {cursor} is outside 0..{per_epoch - 1}")
    total = min(
        cfg.epochs * per_epoch if cfg.epochs is not None else math.inf,
        cfg.max_steps if cfg.max_steps is not None else math.inf,
    )
    return _run(grad_fn, params, data, cfg, state, fingerprint, step, epoch, cursor, loss,
                int(total), cancel)  # fmt: skip


def _run(
    grad_fn: GradFn,
    params: dict[str, np.ndarray],
    data: Mapping[str, np.ndarray],
    cfg: TrainConfig,
    state: dict[str, np.ndarray],
    fingerprint: bytes,
    step: int,
    epoch: int,
    cursor: int,
    loss: float,
    total: int,
    cancel: Callable[[], bool] | None,
) -> Iterator[Event]:
    start, first = time.perf_counter(), step
    optimizer, schedule, base_lr = cfg.optimizer, cfg.schedule, float(cfg.optimizer.lr)
    per_epoch = batches_per_epoch(num_samples(data), cfg.batch_size)
    while step < total:
        batches = iter_batches(
            data, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed, epoch=epoch, start=cursor
        )
        for batch in batches:
            if step >= total:
                break
            if cancel is not None and cancel():
                raise TrainingCancelled(step)
            lr = schedule.lr(base_lr, step)
            raw_loss, grads = grad_fn(params, batch)
            loss = _scalar(raw_loss)
            grads = _check_grads(grads, params)
            grad_norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
            step += 1
            cursor += 1
            finite = math.isfinite(loss) and math.isfinite(grad_norm)
            if not finite or step % cfg.report_every == 0 or step == total:
                yield StepEvent(
                    step, epoch, loss, grad_norm, lr, time.perf_counter() - start, finite
                )
            if not finite:
                raise NonFiniteLoss(step, loss, grad_norm)
            optimizer.update(params, grads, state, lr)
            if cfg.checkpoint_every is not None and step % cfg.checkpoint_every == 0:
                yield _checkpoint(step, epoch, cursor, per_epoch, loss, params, state, cfg,
                                  fingerprint)  # fmt: skip
        if cursor == per_epoch:
            epoch, cursor = epoch + 1, 0
    if step > first and (cfg.checkpoint_every is None or step % cfg.checkpoint_every):
        # A final checkpoint, so that a run which ended before its first (or next) one can be
        # resumed where it ended, e.g. with more steps.
        yield _checkpoint(step, epoch, cursor, per_epoch, loss, params, state, cfg, fingerprint)
    yield ResultEvent(params, step, loss, time.perf_counter() - start)


def _checkpoint(
    step: int,
    epoch: int,
    cursor: int,
    per_epoch: int,
    loss: float,
    params: dict[str, np.ndarray],
    state: dict[str, np.ndarray],
    cfg: TrainConfig,
    fingerprint: bytes,
) -> CheckpointEvent:
    """The state after ``step`` (copied); a checkpoint at the end of an epoch points at the
    start of the next one."""
    e, c = (epoch + 1, 0) if cursor == per_epoch else (epoch, cursor)
    return CheckpointEvent(
        Checkpoint(
            step=step,
            epoch=e,
            cursor=c,
            seed=cfg.seed,
            loss=loss,
            params={k: v.copy() for k, v in params.items()},
            optimizer_state={k: v.copy() for k, v in state.items()},
            fingerprint=fingerprint,
        )
    )


def run_fingerprint(
    config: TrainConfig, params: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]
) -> bytes:
    """sha256 over what determines the trajectory, bar the values: optimizer, schedule,
    batching, seed, and the names, shapes and dtypes of params and data (so the data size).
    Not epochs/max_steps (a resume may train longer) nor report/checkpoint cadence."""
    spec = {
        "version": _FINGERPRINT_VERSION,
        "optimizer": config.optimizer.model_dump(mode="json"),
        "schedule": config.schedule.model_dump(mode="json"),
        "batch_size": config.batch_size,
        "shuffle": config.shuffle,
        "seed": config.seed,
        "params": {k: [list(v.shape), v.dtype.str] for k, v in params.items()},
        "data": {k: [list(v.shape), v.dtype.str] for k, v in data.items()},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).digest()


def _validate_params(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not params:
        raise TrainingConfigError("params", "no parameters to train")
    out = {}
    for name, p in params.items():
        if not isinstance(p, np.ndarray):
            raise TrainingConfigError(f"params.{name}", f"expected a numpy array, got {type(p)}")
        if not np.issubdtype(p.dtype, np.floating):
            raise TrainingConfigError(
                f"params.{name}", f"has dtype {p.dtype}; a trainable parameter must be a float"
            )
        out[name] = np.array(p, copy=True, order="C")  # ours to update in place
    return out


def _check_resume(
    ckpt: Checkpoint,
    params: Mapping[str, np.ndarray],
    state: Mapping[str, np.ndarray],
    fingerprint: bytes,
) -> None:
    for kind, got, want in (
        ("params", ckpt.params, params),
        ("optimizer_state", ckpt.optimizer_state, state),
    ):
        if got.keys() != want.keys():
            raise TrainingConfigError(
                f"resume.{kind}",
                f"has entries {sorted(got)}; this run has {sorted(want)}",
            )
        for name, arr in got.items():
            if arr.shape != want[name].shape or arr.dtype != want[name].dtype:
                raise TrainingConfigError(
                    f"resume.{kind}.{name}",
                    f"has shape {arr.shape} {arr.dtype}; this run has"
                    f" {want[name].shape} {want[name].dtype}",
                )
    if ckpt.fingerprint != fingerprint:
        raise TrainingConfigError(
            "resume",
            "the checkpoint was made by a different run configuration (optimizer, schedule,"
            " batch size, shuffle, seed, or parameter or data shapes differ)",
        )
    if ckpt.step < 0 or ckpt.epoch < 0:
        raise TrainingConfigError("resume", "negative step or epoch")


def _scalar(loss: Any) -> float:
    arr = np.asarray(loss)
    if arr.ndim != 0:
        raise GradientFunctionError(f"the loss must be a scalar; got shape {arr.shape}")
    return float(arr)


def _check_grads(
    grads: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    if grads.keys() != params.keys():
        raise GradientFunctionError(
            f"gradients for {sorted(grads)} but the parameters are {sorted(params)}"
        )
    out = {}
    for name, p in params.items():
        g = np.asarray(grads[name])
        if g.shape != p.shape:
            raise GradientFunctionError(
                f"gradient of {name!r} has shape {g.shape}; the parameter has {p.shape}"
            )
        out[name] = g if g.dtype == p.dtype else g.astype(p.dtype)
    return out
