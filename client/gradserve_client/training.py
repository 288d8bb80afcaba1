"""Training in the SDK: optimisers, schedules, the `Run` that `train` returns, checkpoints.

run = c.train(g, loss="loss", params={"W": W0}, data={"X": X, "y": y},
              optimizer=gs.SGD(lr=0.1, momentum=0.9), batch_size=128, epochs=5)
for step in run:          # gs.TrainStep
    print(step.step, step.loss)
run.params                # the final parameters
run.checkpoint            # the latest gs.Checkpoint: c.train(..., resume=run.checkpoint)

The update formulas are those of torch.optim.SGD and torch.optim.Adam; schedules step once per
optimizer step (torch's StepLR and CosineAnnealingLR, called after every ``optimizer.step()``).
"""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import GradserveError, InvalidArgument
from .proto import tensor_codec
from .proto import training_pb2 as tpb
from .proto.dataset_codec import dataset_id as dataset_id  # the SDK's name for it
from .proto.dataset_codec import le_bytes
from .proto.tensor_codec import varint

__all__ = [
    "SGD",
    "Adam",
    "AsyncRun",
    "Checkpoint",
    "ConstantLR",
    "CosineLR",
    "Run",
    "StepLR",
    "TrainResult",
    "TrainStep",
]

#: Bytes of one PutDataset chunk (1 MiB streams faster over gRPC than larger messages).
CHUNK_BYTES = 1 << 20

#: The default of ``train(report_interval=...)``: a remote run's steps arrive in batches about
#: this often (seconds), ten a second as a progress bar redraws, instead of a message per step.
REPORT_INTERVAL = 0.1


class _BadArgument(InvalidArgument, TypeError):
    """An unknown or ill-typed optimizer or schedule argument (INVALID_ARGUMENT, TypeError)."""


def _bad(where: str, reason: str) -> _BadArgument:
    return _BadArgument(f"{where}: {reason}", field_violations=[(where, reason)])


def _kwargs(owner: str, field_prefix: str, given: Mapping[str, Any], known: Mapping[str, Any]):
    unknown = sorted(set(given) - set(known))
    if unknown:
        reason = f"unknown {owner} argument; the arguments are {', '.join(known)}"
        raise _bad(f"{field_prefix}.{unknown[0]}", reason)
    return {**known, **given}


# ----------------------------------------------------------------------------------------------
# Optimisers and schedules


class SGD:
    """torch.optim.SGD: ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``dampening``."""

    __slots__ = ("dampening", "lr", "momentum", "nesterov", "weight_decay")
    _DEFAULTS: ClassVar[dict[str, Any]] = {
        "lr": None, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "dampening": 0.0
    }  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        values = _kwargs("SGD", "optimizer.sgd", kwargs, self._DEFAULTS)
        if values["lr"] is None:
            reason = "SGD needs a learning rate, e.g. gs.SGD(lr=0.1)"
            raise _bad("optimizer.sgd.lr", reason)
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def to_proto(self) -> tpb.Optimizer:
        """The wire message of this optimizer."""
        return tpb.Optimizer(
            sgd=tpb.Sgd(
                lr=float(self.lr),
                momentum=float(self.momentum),
                nesterov=bool(self.nesterov),
                weight_decay=float(self.weight_decay),
                dampening=float(self.dampening),
            )
        )

    def __repr__(self) -> str:
        return f"SGD({', '.join(f'{k}={getattr(self, k)!r}' for k in self._DEFAULTS)})"


class Adam:
    """torch.optim.Adam (amsgrad off): ``lr``, ``betas``, ``eps``, ``weight_decay`` (L2)."""

    __slots__ = ("betas", "eps", "lr", "weight_decay")
    _DEFAULTS: ClassVar[dict[str, Any]] = {
        "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0
    }  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        values = _kwargs("Adam", "optimizer.adam", kwargs, self._DEFAULTS)
        betas = tuple(values["betas"])
        if len(betas) != 2:
            reason = f"betas must be two numbers (beta1, beta2), got {values['betas']!r}"
            raise _bad("optimizer.adam.betas", reason)
        values["betas"] = betas
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def to_proto(self) -> tpb.Optimizer:
        """The wire message of this optimizer."""
        return tpb.Optimizer(
            adam=tpb.Adam(
                lr=float(self.lr),
                beta1=float(self.betas[0]),
                beta2=float(self.betas[1]),
                eps=float(self.eps),
                weight_decay=float(self.weight_decay),
            )
        )

    def __repr__(self) -> str:
        return f"Adam({', '.join(f'{k}={getattr(self, k)!r}' for k in self._DEFAULTS)})"


class ConstantLR:
    """The optimizer's ``lr`` throughout (the default)."""

    __slots__ = ()

    def to_proto(self) -> tpb.Schedule:
        """The wire message of this schedule."""
        return tpb.Schedule(constant=tpb.ConstantSchedule())

    def __repr__(self) -> str:
        return "ConstantLR()"


class StepLR:
    """torch's StepLR, stepped per optimizer step: ``lr * gamma ** (t // step_size)``."""

    __slots__ = ("gamma", "step_size")

    def __init__(self, **kwargs: Any) -> None:
        values = _kwargs("StepLR", "schedule.step", kwargs, {"step_size": None, "gamma": 0.1})
        self.step_size, self.gamma = values["step_size"], values["gamma"]
        if self.step_size is None:
            reason = "StepLR needs step_size (in optimizer steps)"
            raise _bad("schedule.step.step_size", reason)

    def to_proto(self) -> tpb.Schedule:
        """The wire message of this schedule."""
        return tpb.Schedule(
            step=tpb.StepSchedule(step_size=int(self.step_size), gamma=float(self.gamma))
        )

    def __repr__(self) -> str:
        return f"StepLR(step_size={self.step_size!r}, gamma={self.gamma!r})"


class CosineLR:
    """torch's CosineAnnealingLR, per optimizer step:
    ``eta_min + (lr - eta_min) * (1 + cos(pi * t / t_max)) / 2``."""

    __slots__ = ("eta_min", "t_max")

    def __init__(self, **kwargs: Any) -> None:
        values = _kwargs("CosineLR", "schedule.cosine", kwargs, {"t_max": None, "eta_min": 0.0})
        self.t_max, self.eta_min = values["t_max"], values["eta_min"]
        if self.t_max is None:
            reason = "CosineLR needs t_max (in optimizer steps)"
            raise _bad("schedule.cosine.t_max", reason)

    def to_proto(self) -> tpb.Schedule:
        """The wire message of this schedule."""
        return tpb.Schedule(
            cosine=tpb.CosineSchedule(t_max=int(self.t_max), eta_min=float(self.eta_min))
        )

    def __repr__(self) -> str:
        return f"CosineLR(t_max={self.t_max!r}, eta_min={self.eta_min!r})"


Optimizer = SGD | Adam
"""What `train(optimizer=...)` takes."""

Schedule = ConstantLR | StepLR | CosineLR
"""What `train(schedule=...)` takes (None: a constant learning rate)."""


def optimizer_proto(optimizer: object) -> tpb.Optimizer:
    if not isinstance(optimizer, SGD | Adam):
        reason = f"expected gs.SGD(...) or gs.Adam(...), got {optimizer!r}"
        raise _bad("optimizer", reason)
    return optimizer.to_proto()


def schedule_proto(schedule: object) -> tpb.Schedule | None:
    if schedule is None:
        return None
    if not isinstance(schedule, ConstantLR | StepLR | CosineLR):
        reason = f"expected gs.ConstantLR(), gs.StepLR(...) or gs.CosineLR(...), got {schedule!r}"
        raise _bad("schedule", reason)
    return schedule.to_proto()


# ----------------------------------------------------------------------------------------------
# Events and checkpoints


@dataclass(frozen=True, slots=True)
class TrainStep:
    """One optimisation step: its number (1-based, across epochs and resumes), its epoch
    (0-based), the batch loss before the update, the global gradient L2 norm, the learning rate
    used, and the seconds since the run (this call) started. ``finite`` is False when the loss
    or the gradient was NaN or infinite: the run stops right after that step."""

    step: int
    epoch: int
    loss: float
    grad_norm: float
    lr: float
    elapsed: float
    finite: bool = True


@dataclass(frozen=True, slots=True)
class TrainResult:
    """The summary of a finished run."""

    steps: int
    final_loss: float
    elapsed: float


class Checkpoint:
    """Everything needed to continue a run exactly: opaque, and serialisable with `to_bytes`
    (or pickle, or `save`). Pass it back as ``train(..., resume=checkpoint)``."""

    __slots__ = ("_proto",)

    def __init__(self, proto: tpb.Checkpoint) -> None:
        self._proto = proto

    @property
    def step(self) -> int:
        """Optimizer steps completed."""
        return int(self._proto.step)

    @property
    def epoch(self) -> int:
        """The (0-based) epoch the next step belongs to."""
        return int(self._proto.epoch)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameters after `step` steps (read-only arrays)."""
        return {k: tensor_codec.from_tensor(v, field=k) for k, v in self._proto.params.items()}

    def to_proto(self) -> tpb.Checkpoint:
        """The wire message (``training_pb2.Checkpoint``)."""
        return self._proto

    def to_bytes(self) -> bytes:
        """The checkpoint serialised (deterministic protobuf bytes)."""
        return self._proto.SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """The checkpoint of bytes written by `to_bytes`."""
        return cls(tpb.Checkpoint.FromString(data))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `to_bytes` to a file."""
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read a checkpoint written by `save`."""
        with open(path, "rb") as f:
            return cls.from_bytes(f.read())

    def __reduce__(self) -> tuple[Any, ...]:
        return (Checkpoint.from_bytes, (self.to_bytes(),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.to_bytes() == self.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, epoch={self.epoch})"


# What the clients feed a Run: ("step", TrainStep) | ("checkpoint", Checkpoint)
#                              | ("result", (params, TrainResult)).
Event = tuple[str, Any]


def _step(s: tpb.TrainStep) -> Event:
    return "step", TrainStep(
        s.step, s.epoch, s.loss, s.grad_norm, s.lr, s.elapsed_seconds, s.finite
    )


def decode_events(event: tpb.TrainEvent) -> list[Event]:
    """A TrainEvent as Run events: one, or one per step of a batch (`TrainEvent.steps`)."""
    kind = event.WhichOneof("event")
    if kind == "step":
        return [_step(event.step)]
    if kind == "steps":
        return [_step(s) for s in event.steps.steps]
    if kind == "checkpoint":
        return [("checkpoint", Checkpoint(event.checkpoint))]
    if kind == "result":
        r = event.result
        params = {k: np.array(tensor_codec.from_tensor(v, field=k)) for k, v in r.params.items()}
        return [("result", (params, TrainResult(r.steps, r.final_loss, r.elapsed_seconds)))]
    return []


# ----------------------------------------------------------------------------------------------
# Datasets


def dataset_wire_chunks(
    arrays: Mapping[str, np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """The PutDataset messages of a dataset, serialized: each array in chunks of at most
    ``chunk_bytes``, the first with its dtype and shape. Written by hand so that the values
    are copied once (through protobuf messages they are copied three times)."""
    for name in sorted(arrays):
        a = arrays[name]
        data = le_bytes(a)
        key = name.encode("utf-8")
        later = b"\x0a" + varint(len(key)) + key  # the name only
        first = later
        code = tensor_codec.dtype_from_numpy(a.dtype)
        if code:
            first += b"\x10" + varint(code)
        if a.ndim:
            dims = b"".join([varint(d) for d in a.shape])
            first += b"\x1a" + varint(len(dims)) + dims
        for start in range(0, max(len(data), 1), chunk_bytes):
            piece = data[start : start + chunk_bytes]
            head = first if start == 0 else later
            yield b"".join((head, b"\x22", varint(len(piece)), piece) if len(piece) else (head,))


def dataset_chunks(
    arrays: Mapping[str, np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tpb.DatasetChunk]:
    """The PutDataset messages of a dataset (`dataset_wire_chunks`, as messages)."""
    for chunk in dataset_wire_chunks(arrays, chunk_bytes):
        yield tpb.DatasetChunk.FromString(chunk)


def num_examples(data: Mapping[str, np.ndarray]) -> int:
    for a in data.values():
        return int(a.shape[0]) if a.ndim else 0
    return 0


def total_steps(n: int, batch_size: int, epochs: int | None, max_steps: int | None) -> int | None:
    """The number of steps a run takes in all (None if it cannot be told)."""
    if n <= 0 or batch_size < 0:
        return None
    per_epoch = math.ceil(n / batch_size) if batch_size else 1
    by_epochs = per_epoch * epochs if epochs else (None if max_steps else per_epoch)
    candidates = [x for x in (by_epochs, max_steps) if x]
    return min(candidates) if candidates else None


# ----------------------------------------------------------------------------------------------
# Runs


class _Progress:
    """A tqdm bar showing the loss (or nothing)."""

    def __init__(self, enabled: bool, total: int | None, start: int) -> None:
        self.bar: Any = None
        self.enabled, self.total, self.last = enabled, total, start

    def step(self, s: TrainStep) -> None:
        if self.enabled:
            if self.bar is None:  # at the first step: a refused run shows no bar
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.total, initial=self.last, unit="step", desc="train")
            self.bar.set_postfix(loss=f"{s.loss:.4g}", refresh=False)
            self.bar.update(s.step - self.last)
            self.last = s.step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(eq=False)
class _State:
    """What a run has received so far."""

    history: list[TrainStep] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    params: dict[str, np.ndarray] | None = None
    result: TrainResult | None = None
    started: bool = False
    stopped: bool = False  # cancelled by the caller before the end
    error: BaseException | None = None

    def take(self, event: Event, progress: _Progress) -> TrainStep | None:
        kind, value = event
        if kind == "step":
            self.history.append(value)
            progress.step(value)
            return value
        if kind == "checkpoint":
            self.checkpoint = value
        elif kind == "result":
            self.params, self.result = value
        return None

    def final_params(self) -> dict[str, np.ndarray]:
        if self.params is not None:
            return self.params
        if self.error is not None:
            raise RuntimeError(
                f"the run failed ({self.error}); its latest checkpoint is run.checkpoint"
            ) from self.error
        if self.stopped:
            last = self.history[-1].step if self.history else 0
            raise RuntimeError(
                f"the run was stopped after step {last}, before it ended: it has no final"
                " parameters; resume it with train(..., resume=run.checkpoint)"
            )
        raise RuntimeError("the run has not ended yet: iterate over it first")


#: What a run gets from its client to recompute a checkpoint: ``replay(anchor, step)`` returns
#: a run (not started) of the same training from ``anchor`` (None: the run's own start) that
#: stops after ``step`` and ends with that step's checkpoint.
Replay = Callable[[Checkpoint | None, int], Any]


class _RunBase:
    """What `Run` and `AsyncRun` share: the state received so far, the start and end of the
    iteration (progress bar, cancelling a run left early), `cancel` and the read-outs."""

    def __init__(
        self,
        events: Callable[[], Iterator[Event]] | Callable[[], AsyncIterator[Event]],
        cancel: Callable[[], None],
        replay: Replay,
        *,
        total: int | None,
        start: int,
        checkpoint_every: int | None,
        progress: bool,
    ) -> None:
        self._events = events
        self._cancel = cancel
        self._replay = replay
        self._total, self._start, self._progress = total, start, progress
        self._checkpoint_every = checkpoint_every
        self._held: TrainStep | None = None
        self._state = _State()

    def _begin(self) -> _Progress | None:
        """Start iterating: the progress bar, or None if the run was iterated before."""
        if self._state.started:
            return None
        self._state.started = True
        return _Progress(self._progress, self._total, self._start)

    def _steps(self, event: Event, progress: _Progress) -> list[TrainStep]:
        """Take ``event``; the steps to hand to the caller now. A step whose checkpoint is due
        (every ``checkpoint_every`` steps, and the last) is held until the event after it, its
        checkpoint, so that `checkpoint` is that step's while the caller looks at it."""
        held, self._held = self._held, None
        step = self._state.take(event, progress)
        steps = [held] if held is not None else []
        if step is not None:
            every = self._checkpoint_every
            due = (every and step.step % every == 0) or step.step == self._total
            if due and step.finite:
                self._held = step
            else:
                steps.append(step)
        return steps

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, GeneratorExit):
            self._state.error = exc

    def _stop_stream(self) -> None:
        """Cancel the stream of a run that has not ended (the server stops within one step)."""
        if self._state.result is None:
            self._state.stopped = self._state.error is None
            self._state.started = True
            self._cancel()

    def _final_replay(self) -> Any:
        """The replay (see `Replay`) that gives a stopped run the checkpoint of the last step
        received, or None when it has it (or took no step, or failed or finished instead)."""
        s = self._state
        if not s.stopped or not s.history:
            return None
        last = s.history[-1].step
        if s.checkpoint is not None and s.checkpoint.step >= last:
            return None
        return self._replay(s.checkpoint, last)

    def _replay_failed(self, exc: Exception) -> None:
        have = f"step {self._state.checkpoint.step}'s" if self._state.checkpoint else "none"
        warnings.warn(
            f"the run stopped after step {self._state.history[-1].step}, but its checkpoint"
            f" could not be made ({exc}); run.checkpoint is the latest received ({have})",
            RuntimeWarning,
            stacklevel=3,
        )

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The latest checkpoint: every ``checkpoint_every`` steps, and that of the last step
        once the run has ended or was stopped (None before the first)."""
        return self._state.checkpoint

    @property
    def history(self) -> list[TrainStep]:
        """Every TrainStep received so far."""
        return self._state.history

    @property
    def result(self) -> TrainResult | None:
        """The summary (steps, final loss, seconds) once the run has ended."""
        return self._state.result

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self._state.result is not None


class Run(_RunBase):
    """A training run: iterate over it for its `TrainStep`s (each reported step); then
    `params` holds the final parameters. Breaking out of the loop (or `cancel`) stops the run
    on the server within one step, and `checkpoint` is then that of the last step received.

    A run is iterated once. Reading `params` before iterating runs it to the end.
    """

    _events: Callable[[], Iterator[Event]]

    def __iter__(self) -> Iterator[TrainStep]:
        progress = self._begin()
        if progress is None:
            return
        try:
            for event in self._events():
                yield from self._steps(event, progress)
            if self._held is not None:  # a stream that ended without the step's checkpoint
                yield self._held
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            progress.close()
            self.cancel()

    def cancel(self) -> None:
        """Stop the run: the server stops within one step, and `checkpoint` becomes the
        checkpoint of the last step received (the server recomputes it from the latest
        checkpoint, at most ``checkpoint_every - 1`` steps)."""
        self._stop_stream()
        replay = self._final_replay()
        if replay is None:
            return
        try:
            for _ in replay:
                pass
        except GradserveError as exc:
            self._replay_failed(exc)
        else:
            self._state.checkpoint = replay.checkpoint

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The final parameters (the run is iterated to its end first if it was not)."""
        if not self._state.started:
            for _ in self:
                pass
        return self._state.final_params()

    def __repr__(self) -> str:
        s = self._state
        where = f"step {s.history[-1].step}" if s.history else "not started"
        return f"Run({'done' if s.result else where})"


class AsyncRun(_RunBase):
    """The asyncio twin of `Run`: ``async for step in run``; then `params`. Breaking out of
    the loop (or ``run.cancel()``) stops the run; ``await run.stop()`` (or ``async with
    run:``) also waits for the checkpoint of the last step received."""

    _events: Callable[[], AsyncIterator[Event]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = asyncio.Lock()

    async def __aiter__(self) -> AsyncIterator[TrainStep]:
        progress = self._begin()
        if progress is None:
            return
        try:
            async for event in self._events():
                for step in self._steps(event, progress):
                    yield step
            if self._held is not None:  # a stream that ended without the step's checkpoint
                yield self._held
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            progress.close()
            await self.stop()

    def cancel(self) -> None:
        """Stop the run: the server stops within one step (`stop` also makes the checkpoint
        of the last step received)."""
        self._stop_stream()

    async def stop(self) -> None:
        """Stop the run, and return once `checkpoint` is the checkpoint of the last step
        received (as `Run.cancel`). After ``break`` in ``async for``, asyncio closes the loop's
        iterator later, on its own: await this before reading `checkpoint`."""
        self._stop_stream()
        async with self._stopping:
            replay = self._final_replay()
            if replay is None:
                return
            try:
                async for _ in replay:
                    pass
            except GradserveError as exc:
                self._replay_failed(exc)
            else:
                self._state.checkpoint = replay.checkpoint

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self) -> dict[str, np.ndarray]:
        """Run to the end; the final parameters."""
        if not self._state.started:
            async for _ in self:
                pass
        return self._state.final_params()

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The final parameters, once the run has ended (``await run.wait()`` runs it)."""
        return self._state.final_params()
