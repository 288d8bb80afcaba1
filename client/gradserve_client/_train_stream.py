"""A Train stream without the I/O, for `Client` and `AsyncClient`: the arguments resolved into
a TrainRequest (`train_call`), how the data travels (inline, or uploaded once and referenced by
its content id), and the retry state machine of an attempt that fails before its first event
(`RemoteTrain`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy.typing as npt

from ._args import Array, InvalidInput, arrays, the_output
from ._graphs import GraphIds, GraphLike, GraphMeta, graph_meta
from .errors import NotFound
from .proto import tensor_codec
from .proto import training_pb2 as tpb
from .training import (
    Checkpoint,
    Event,
    Optimizer,
    Schedule,
    dataset_id,
    decode_events,
    num_examples,
    optimizer_proto,
    schedule_proto,
    total_steps,
)

R = TypeVar("R")


class TrainCall:
    """A train call's arguments resolved (no I/O): the TrainRequest without its graph source
    and data, the parameters (none when resuming) and data as arrays, and the step count and
    first step for the progress bar."""

    __slots__ = ("_data", "arrays", "feeds", "meta", "request", "start", "total")

    def __init__(
        self,
        meta: GraphMeta,
        feeds: dict[str, Array],
        arrays: dict[str, Array],
        request: tpb.TrainRequest,
        total: int | None,
        start: int,
    ) -> None:
        self.meta, self.feeds, self.arrays = meta, feeds, arrays
        self.request, self.total, self.start = request, total, start
        self._data: TrainData | None = None

    def data(self) -> TrainData:
        """How the data travels (its content id computed once, also for `replay`)."""
        if self._data is None:
            self._data = TrainData(self.arrays)
        return self._data

    def replay(self, anchor: Checkpoint | None, step: int) -> TrainCall:
        """The same run, from ``anchor`` (None: this call's own start) to ``step``, where it
        ends with that step's checkpoint; it reports only its last step and sends no other
        checkpoint. The run is deterministic, so that checkpoint is the one this call's run
        had at ``step``."""
        request = tpb.TrainRequest()
        request.CopyFrom(self.request)
        request.ClearField("graph_source")
        request.ClearField("data")
        request.max_steps = request.report_every = step
        request.checkpoint_every = 0
        feeds, start = self.feeds, self.start
        if anchor is not None:
            request.ClearField("params")
            request.resume_from.CopyFrom(anchor.to_proto())
            feeds, start = {}, anchor.step
        replayed = TrainCall(self.meta, feeds, self.arrays, request, step, start)
        replayed._data = self._data
        return replayed


def train_call(
    graph: GraphLike,
    *,
    loss: str | None,
    params: Mapping[str, npt.ArrayLike],
    data: Mapping[str, npt.ArrayLike],
    optimizer: Optimizer,
    schedule: Schedule | None,
    batch_size: int | None,
    epochs: int | None,
    max_steps: int | None,
    seed: int,
    shuffle: bool,
    report_every: int,
    report_interval: float,
    checkpoint_every: int | None,
    resume: Checkpoint | None,
) -> TrainCall:
    """The arguments of ``train``. With ``resume``, the checkpoint's parameters are used and
    ``params`` is not sent."""
    meta = graph_meta(graph)
    loss = the_output(meta, loss, "loss")
    feeds = arrays(params, meta.input_dtypes, "params")
    data_arrays = arrays(data, meta.input_dtypes, "data")
    if resume is not None and not isinstance(resume, Checkpoint):
        reason = f"expected a gs.Checkpoint (run.checkpoint), got {type(resume).__name__}"
        raise InvalidInput(f"resume_from: {reason}", field_violations=[("resume_from", reason)])
    if resume is not None:
        feeds = {}
    request = tpb.TrainRequest(
        loss=loss,
        batch_size=batch_size or 0,
        epochs=epochs or 0,
        max_steps=max_steps or 0,
        shuffle=bool(shuffle),
        seed=int(seed),
        optimizer=optimizer_proto(optimizer),
        report_every=report_every or 0,
        report_interval_seconds=report_interval or 0.0,
        checkpoint_every=checkpoint_every or 0,
    )
    tensor_codec.fill_tensor_map(request.params, feeds)
    sched = schedule_proto(schedule)
    if sched is not None:
        request.schedule.CopyFrom(sched)
    if resume is not None:
        request.resume_from.CopyFrom(resume.to_proto())
    total = total_steps(num_examples(data_arrays), batch_size or 0, epochs, max_steps)
    start = resume.step if resume is not None else 0
    return TrainCall(meta, feeds, data_arrays, request, total, start)


#: Data up to this many bytes is sent inline with the TrainRequest; more is uploaded once with
#: PutDataset and referenced by its content id.
INLINE_DATA_BYTES = 4 << 20


class TrainData:
    """How a run's data travels: inline, or as a dataset id (uploaded when the server does not
    have it, and again when it forgets it)."""

    __slots__ = ("arrays", "id", "inline")

    def __init__(self, arrays: Mapping[str, Array]) -> None:
        self.arrays = dict(arrays)
        self.inline = sum(a.nbytes for a in self.arrays.values()) <= INLINE_DATA_BYTES
        self.id = "" if self.inline else dataset_id(self.arrays)

    def attach(self, request: tpb.TrainRequest) -> None:
        """Put the data in ``request``: inline, or its dataset id."""
        if self.inline:
            tensor_codec.fill_tensor_map(request.inline_data.tensors, self.arrays)
        else:
            request.dataset_id = self.id


def is_dataset_not_found(err: Exception) -> bool:
    """NOT_FOUND for an unknown dataset_id."""
    return isinstance(err, NotFound) and err.reason == "DATASET_NOT_FOUND"


#: Attempts of a Train stream: the first, then one after NOT_FOUND of the graph_id and one
#: after NOT_FOUND of the dataset_id.
TRAIN_ATTEMPTS = 3
#: What `RemoteTrain.retry` answers: send the request again, or upload the data first.
RETRY, UPLOAD = "retry", "upload"


class RemoteTrain:
    """The plumbing of a Train stream for `Client` and `AsyncClient`, without the I/O: the
    request of each attempt (graph by id when known, data inline or by dataset id), what to do
    when an attempt fails before its first event, and cancelling the latest call."""

    __slots__ = ("_calls", "_ids", "_sent_id", "call", "data")

    def __init__(self, call: TrainCall, graph_ids: GraphIds) -> None:
        self.call = call
        self.data = call.data()
        self._ids = graph_ids
        self._sent_id: str | None = None
        self._calls: list[Any] = []

    def request(self) -> tpb.TrainRequest:
        """The request of the next attempt, its graph source and data attached."""
        request = self.call.request
        if not self._calls:
            self.data.attach(request)
        self._sent_id = self._ids.attach(request, self.call.meta)
        return request

    def started(self, call: R) -> R:
        """Record the call of an attempt (for `cancel`); returns it."""
        self._calls.append(call)
        return call

    def retry(self, attempt: int, err: Exception) -> str:
        """After attempt ``attempt`` (0-based) failed before its first event with ``err``:
        `RETRY` (the full graph is now attached), `UPLOAD` (upload ``data.arrays`` with
        PutDataset, give its id to `uploaded`, retry), or "" (raise ``err``)."""
        if attempt + 1 >= TRAIN_ATTEMPTS:
            return ""
        if self._ids.resend(self.call.request, self.call.meta, self._sent_id, err):
            return RETRY
        if not self.data.inline and is_dataset_not_found(err):
            return UPLOAD
        return ""

    def uploaded(self, dataset_id: str) -> None:
        """Refer to the dataset just uploaded."""
        self.call.request.dataset_id = dataset_id

    def first(self, event: tpb.TrainEvent) -> list[Event]:
        """The first event of the stream (remembering the graph_id), decoded."""
        self._ids.remember(self.call.meta, event.graph_id)
        return decode_events(event)

    def cancel(self) -> None:
        """Cancel the latest call, if any."""
        if self._calls:
            self._calls[-1].cancel()
