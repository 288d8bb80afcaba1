"""Train and PutDataset: the training loop (`gradserve.training`) bound to the core and the wire.

`prepare` validates a run before its first step (INVALID_ARGUMENT naming the request field) and
binds the loop's gradient function to the core: one compiled value-and-gradient program per batch
shape (two at most: the full batch and the last partial one). `train` (the RPC) streams the
loop's events as TrainEvents. The in-process entry point (`inprocess`, which `LocalClient`
runs) calls `prepare` directly, so its validation and errors are the server's.

Wire notes:
- Checkpoint.cursor counts examples (the proto's contract); the loop counts batches.
- The checkpoint's loss is not on the wire: a resumed run that takes no step reports NaN.
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from gradserve_client.proto import graph_pb2, tensor_codec
from gradserve_client.proto import training_pb2 as tpb

from gradserve import autodiff, metrics
from gradserve import training as tr
from gradserve.autodiff import GraphError, Program
from gradserve.autodiff.memory import MemoryLimitExceeded
from gradserve.config import Settings
from gradserve.rpc.codec import decode_tensors, encode_tensors
from gradserve.rpc.datasets import DatasetCache, assemble
from gradserve.rpc.errors import InvalidArgument, RpcError, from_graph_error, memory_limit_error
from gradserve.rpc.graph_cache import CachedGraph, GraphCache
from gradserve.rpc.requests import resolve

#: Whether this server implements Train and PutDataset (GetServerInfo lists "train" if so).
AVAILABLE = True

#: ErrorInfo reason of a run stopped by a NaN or infinite loss or gradient.
NON_FINITE_LOSS = "NON_FINITE_LOSS"

# Events the loop may run ahead of the stream (it still checks for cancellation every step).
_AHEAD = 4

#: The most steps one TrainEvent carries (about 60 bytes each), so that a batch stays far below
#: gRPC's message limits however fast the steps are.
MAX_BATCH_STEPS = 4096


class FailedPrecondition(RpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class _Cancelled(autodiff.Cancelled):
    """The loop saw the cancel callback (the servicer maps it as the core's Cancelled)."""


# ----------------------------------------------------------------------------------------------
# Request -> configuration


def request_field(field: str) -> str:
    """The request field of a training-package field (`params.W1` -> `params["W1"]`)."""
    head, _, rest = field.partition(".")
    if head in ("params", "data", "inputs") and rest:
        name, dot, more = rest.partition(".")
        kind = "data" if head == "inputs" else head
        return f'{kind}["{name}"]{dot}{more}'
    if head == "resume":
        return "resume_from" + (f".{rest}" if rest else "")
    return field.replace("adam.betas.0", "adam.beta1").replace("adam.betas.1", "adam.beta2")


def invalid(exc: tr.TrainingConfigError) -> InvalidArgument:
    """A TrainingConfigError as INVALID_ARGUMENT, every violation naming its request field."""
    violations = [(request_field(f), r) for f, r in exc.violations]
    err = InvalidArgument(*violations[0])
    err.violations = violations
    return err


def optimizer_config(optimizer: tpb.Optimizer) -> dict[str, Any]:
    kind = optimizer.WhichOneof("kind")
    if kind == "sgd":
        o = optimizer.sgd
        return {"kind": "sgd", "lr": o.lr, "momentum": o.momentum, "nesterov": o.nesterov,
                "weight_decay": o.weight_decay, "dampening": o.dampening}  # fmt: skip
    if kind == "adam":
        o = optimizer.adam
        betas = (
            o.beta1 if o.HasField("beta1") else 0.9,
            o.beta2 if o.HasField("beta2") else 0.999,
        )
        eps = o.eps if o.HasField("eps") else 1e-8
        return {"kind": "adam", "lr": o.lr, "betas": betas, "eps": eps,
                "weight_decay": o.weight_decay}  # fmt: skip
    raise InvalidArgument("optimizer", "set an optimizer: sgd or adam")


def schedule_config(schedule: tpb.Schedule) -> dict[str, Any]:
    kind = schedule.WhichOneof("kind")
    if kind == "step":
        return {"kind": "step", "step_size": schedule.step.step_size, "gamma": schedule.step.gamma}
    if kind == "cosine":
        s = schedule.cosine
        return {"kind": "cosine", "t_max": s.t_max, "eta_min": s.eta_min}
    return {"kind": "constant"}


def run_config(request: tpb.TrainRequest, n: int) -> dict[str, Any]:
    """The loop's configuration mapping of a TrainRequest (unvalidated: `load_config` checks),
    with the wire's zero defaults resolved: batch_size 0 = the whole dataset, epochs 0 = 1
    unless max_steps is set, report_every 0 = 1, checkpoint_every 0 = never."""
    return {
        "optimizer": optimizer_config(request.optimizer),
        "schedule": schedule_config(request.schedule),
        "batch_size": request.batch_size or n,
        "epochs": request.epochs or (None if request.max_steps > 0 else 1),
        "max_steps": request.max_steps or None,
        "shuffle": request.shuffle,
        "seed": request.seed,
        "report_every": request.report_every or 1,
        "checkpoint_every": request.checkpoint_every or None,
    }


# ----------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_to_proto(ckpt: tr.Checkpoint, graph_id: str, batch_size: int) -> tpb.Checkpoint:
    return tpb.Checkpoint(
        graph_id=graph_id,
        step=ckpt.step,
        epoch=ckpt.epoch,
        cursor=ckpt.cursor * batch_size,
        seed=ckpt.seed,
        params=encode_tensors(ckpt.params),
        optimizer_state=encode_tensors(ckpt.optimizer_state),
        fingerprint=ckpt.fingerprint,
    )


def checkpoint_from_proto(
    msg: tpb.Checkpoint, graph_id: str, batch_size: int, max_elements: int
) -> tr.Checkpoint:
    if msg.graph_id and msg.graph_id != graph_id:
        raise InvalidArgument(
            "resume_from.graph_id",
            f"the checkpoint is of graph {msg.graph_id[:16]}..., this run trains"
            f" {graph_id[:16]}...: resume with the graph that made it",
        )
    if msg.cursor % batch_size:
        raise InvalidArgument(
            "resume_from.cursor",
            f"example {msg.cursor} is not at a batch boundary of batch_size {batch_size}",
        )
    return tr.Checkpoint(
        step=msg.step,
        epoch=msg.epoch,
        cursor=msg.cursor // batch_size,
        seed=msg.seed,
        loss=math.nan,
        params=decode_tensors(msg.params, "resume_from.params", max_elements),
        optimizer_state=decode_tensors(
            msg.optimizer_state, "resume_from.optimizer_state", max_elements
        ),
        fingerprint=msg.fingerprint,
    )


# ----------------------------------------------------------------------------------------------
# Validation and the core binding


@dataclass
class PreparedRun:
    """A validated run: iterate `events` (the loop's events, errors as RpcErrors)."""

    events: Iterator[tr.Event]
    graph_id: str
    batch_size: int
    start_step: int  # the steps taken before: a resumed run's first event is step start_step + 1


def prepare(
    entry: CachedGraph,
    request: tpb.TrainRequest,
    params: Mapping[str, np.ndarray],
    data: Mapping[str, np.ndarray],
    *,
    max_nodes: int,
    max_elements: int,
    cancel: Callable[[], bool] | None = None,
) -> PreparedRun:
    """Validate a run before its first step and bind the core; raises RpcErrors.

    ``request`` supplies loss, the run configuration and resume_from (not the graph, params or
    data, which are given decoded). With resume_from and no params, the checkpoint's are used.
    """
    graph, loss = entry.graph, request.loss
    interval = request.report_interval_seconds
    if not 0 <= interval < math.inf:  # NaN fails too
        reason = f"must be a finite number of seconds >= 0 (0: one event per step), got {interval}"
        raise InvalidArgument("report_interval_seconds", reason)
    if not loss:
        reason = f"name the scalar output to minimise: one of {list(graph.outputs)}"
        raise InvalidArgument("loss", reason)
    if loss not in graph.outputs:
        raise InvalidArgument(
            "loss", f"{loss!r} is not an output of the graph (outputs: {list(graph.outputs)})"
        )
    declared = {i.name: (i.shape, i.dtype) for i in graph.inputs}
    try:
        n = tr.num_samples(data)
        cfg = tr.load_config(run_config(request, n))
        resume = None
        if request.HasField("resume_from"):
            resume = checkpoint_from_proto(
                request.resume_from, entry.graph_id, cfg.batch_size, max_elements
            )
            if not params:
                params = resume.params
        # Inputs with defaults that are neither trained nor fed keep their default values.
        fixed = {
            i.name: i.default
            for i in graph.inputs
            if i.default is not None and i.name not in params and i.name not in data
        }
        for name in params:
            if name in declared and np.dtype(declared[name][1]).kind != "f":
                raise tr.TrainingConfigError(
                    f"params.{name}",
                    f"is declared {declared[name][1]}; a trained parameter must be a float",
                )
        bound = {k: v for k, v in declared.items() if k not in fixed}
        tr.check_inputs(bound, params=params, data=data, batch_size=cfg.batch_size)
    except tr.TrainingConfigError as exc:
        raise invalid(exc) from None
    sizes = {min(cfg.batch_size, n)} | ({n % cfg.batch_size} if n % cfg.batch_size else set())
    names = tuple(params)
    fns = {}
    param_shapes = {k: v.shape for k, v in params.items()}
    for size in sorted(sizes, reverse=True):
        shapes = param_shapes | {k: (size, *v.shape[1:]) for k, v in data.items()}
        program = entry.program_for(shapes, max_nodes)
        t = program.types[loss]
        if t.shape != ():
            raise InvalidArgument(
                "loss",
                f"{loss!r} has shape {list(t.shape)}; the loss must be a scalar"
                " (reduce it, e.g. with mean or sum)",
            )
        if not t.is_float:
            raise InvalidArgument("loss", f"{loss!r} is {t.dtype}; the loss must be a float")
        try:
            fns[size] = autodiff.value_and_grad(program, loss, names, cancel=cancel)
        except GraphError as exc:
            raise from_graph_error(exc, entry.input_names, running=True) from None
    first = next(iter(data))

    def grad_fn(p: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> Any:
        return fns[batch[first].shape[0]]({**fixed, **p, **batch}, cancel)

    try:
        events = tr.train(grad_fn, params, data, cfg, resume=resume, cancel=cancel)
    except tr.TrainingConfigError as exc:
        raise invalid(exc) from None
    events = run_events(events, entry.input_names, program=program)
    return PreparedRun(events, entry.graph_id, cfg.batch_size, resume.step if resume else 0)


def run_events(
    events: Iterator[tr.Event], input_names: tuple[str, ...], program: Program | None = None
) -> Iterator[tr.Event]:
    """The loop's events, with its errors raised as RpcErrors (or the core's Cancelled);
    ``program`` (one of the run's) names the node of a step over --max-request-bytes."""
    try:
        yield from events
    except tr.NonFiniteLoss as exc:
        raise FailedPrecondition(
            f"{exc}: the run stopped and the parameters were not updated by that step;"
            " resume from the last checkpoint with a smaller learning rate",
            reason=NON_FINITE_LOSS,
            metadata={"step": str(exc.step)},
        ) from None
    except tr.TrainingCancelled:
        raise _Cancelled from None
    except tr.TrainingConfigError as exc:
        raise invalid(exc) from None
    except GraphError as exc:
        raise from_graph_error(exc, input_names, running=True) from None
    except MemoryLimitExceeded as exc:
        raise memory_limit_error(exc, program) from None


def pumped(
    events: Iterator[tr.Event], cancel: Callable[[], bool], *, tick: float = 0.1
) -> Iterator[tr.Event | None]:
    """``events``, computed by a thread of their own up to `_AHEAD` events in advance, so that
    the next step runs while gRPC sends the last event; None (a tick) after every ``tick``
    seconds without one. The thread ends with the iterator (closing it, or the call being
    cancelled, stops it within one step) and is joined."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(_AHEAD)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                if cancel():
                    return False
        return False

    def produce() -> None:
        try:
            for ev in events:
                if not put(("event", ev)):
                    return
        except BaseException as exc:  # handed to the stream, which raises it
            put(("error", exc))
        else:
            put(("end", None))
        finally:
            events.close()  # type: ignore[attr-defined]

    # In a copy of this context: the steps keep the RPC thread's memory budget.
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(produce,), name="gradserve-train", daemon=True
    )
    thread.start()
    try:
        while True:
            try:
                kind, value = q.get(timeout=tick)
            except queue.Empty:
                if thread.is_alive() or not q.empty():
                    yield None
                    continue
                raise _Cancelled from None  # the producer gave up: the call was cancelled
            if kind == "event":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()


def batched(
    events: Iterator[tr.Event | None], interval: float, clock: Callable[[], float] = time.monotonic
) -> Iterator[tr.Event | list[tr.StepEvent]]:
    """``events`` with their steps gathered into lists (a None in ``events`` is a tick: no
    event for a while): the first step at once, then the steps since the last list once
    ``interval`` seconds have passed since it (or it holds `MAX_BATCH_STEPS`), and always
    before any other event or an error. With ``interval`` 0, every step is a list of one."""
    pending: list[tr.StepEvent] = []
    sent = -math.inf
    try:
        for ev in events:
            if isinstance(ev, tr.StepEvent):
                pending.append(ev)
            elif ev is not None:
                if pending:
                    yield pending
                    pending, sent = [], clock()
                yield ev
                continue
            now = clock()
            if pending and (now - sent >= interval or len(pending) >= MAX_BATCH_STEPS):
                yield pending
                pending, sent = [], now
        if pending:
            yield pending
    except Exception:  # the steps before a failure are reported, then the failure
        if pending:
            yield pending
        raise


# ----------------------------------------------------------------------------------------------
# The RPCs


def _request_data(
    request: tpb.TrainRequest, datasets: DatasetCache, max_elements: int
) -> dict[str, np.ndarray]:
    source = request.WhichOneof("data")
    if source == "inline_data":
        return decode_tensors(request.inline_data.tensors, "data", max_elements)
    if source == "dataset_id" and request.dataset_id:
        return datasets.get(request.dataset_id)  # hooks count hits and misses
    raise InvalidArgument("data", "set inline_data or dataset_id (from PutDataset)")


def step_proto(ev: tr.StepEvent) -> tpb.TrainStep:
    return tpb.TrainStep(
        step=ev.step,
        epoch=ev.epoch,
        loss=ev.loss,
        grad_norm=ev.grad_norm,
        lr=ev.lr,
        elapsed_seconds=ev.elapsed_seconds,
        finite=ev.finite,
    )


def call_ended(context: Any) -> Callable[[], bool]:
    """True once the call has ended (the client cancelled or went away, the deadline passed):
    grpc says so through a termination callback, so a check reads a flag. (Asking the call,
    ``context.is_active()``, takes the lock that the thread sending the events holds: the loop
    waited on it for about 7 % of its time.)"""
    ended = threading.Event()
    if not context.add_callback(ended.set):
        ended.set()  # it has ended already
    return ended.is_set


def train(
    request: tpb.TrainRequest,
    context: grpc.ServicerContext,
    *,
    graphs: GraphCache,
    datasets: DatasetCache,
    settings: Settings,
) -> Iterator[tpb.TrainEvent]:
    """The Train RPC (server streaming): step events, checkpoints, then the result."""
    s = settings
    cancel = call_ended(context)
    entry = resolve(request, graphs, s, cancel)
    data = _request_data(request, datasets, s.max_tensor_elements)
    params = decode_tensors(request.params, "params", s.max_tensor_elements)
    run = prepare(
        entry,
        request,
        params,
        data,
        max_nodes=s.max_graph_nodes,
        max_elements=s.max_tensor_elements,
        cancel=cancel,
    )
    # gradserve_train_active_streams is counted by the metrics interceptor; steps are here.
    gid, done = run.graph_id, run.start_step  # the steps counted so far
    interval = request.report_interval_seconds
    # Ticks at least every 0.1 s (the pump's poll) and often enough to keep the interval.
    tick = min(max(interval, 0.01), 0.1) if interval else 0.1
    for ev in batched(pumped(run.events, cancel, tick=tick), interval):
        if isinstance(ev, list):
            metrics.TRAIN_STEPS.inc(ev[-1].step - done)
            done = ev[-1].step
            if interval:
                steps = tpb.TrainSteps(steps=[step_proto(e) for e in ev])
                yield tpb.TrainEvent(steps=steps, graph_id=gid)
            else:  # one step per list
                yield tpb.TrainEvent(step=step_proto(ev[0]), graph_id=gid)
        elif isinstance(ev, tr.CheckpointEvent):
            ckpt = checkpoint_to_proto(ev.checkpoint, gid, run.batch_size)
            yield tpb.TrainEvent(checkpoint=ckpt, graph_id=gid)
        else:
            if ev.steps > done:
                metrics.TRAIN_STEPS.inc(ev.steps - done)
            result = tpb.TrainResult(
                params=encode_tensors(ev.params),
                steps=ev.steps,
                final_loss=ev.final_loss,
                elapsed_seconds=ev.elapsed_seconds,
            )
            yield tpb.TrainEvent(result=result, graph_id=gid)


def put_dataset(
    request_iterator: Iterator[tpb.DatasetChunk], *, datasets: DatasetCache, settings: Settings
) -> tpb.DatasetInfo:
    """The PutDataset RPC (client streaming): assembles, stores and describes a dataset."""
    key, arrays = assemble(
        request_iterator,
        max_elements=settings.max_tensor_elements,
        max_bytes=settings.dataset_cache_bytes,
    )
    stored = datasets.put(key, arrays)
    return tpb.DatasetInfo(
        dataset_id=key,
        num_examples=tr.num_samples(stored),
        arrays=[
            graph_pb2.InputSpec(
                name=name, dtype=tensor_codec.dtype_from_numpy(a.dtype), shape=a.shape
            )
            for name, a in stored.items()
        ],
    )
