"""The SDK's training pieces and the server's dataset cache, without a server."""

from __future__ import annotations

import pickle

import gradserve_client as gs
import numpy as np
import pytest
from gradserve import training as tr
from gradserve.rpc.datasets import DatasetCache, assemble
from gradserve.rpc.errors import LimitExceeded, NotFound
from gradserve.rpc.training import MAX_BATCH_STEPS, batched, request_field
from gradserve_client.proto import training_pb2 as tpb
from gradserve_client.training import (
    Run,
    TrainResult,
    TrainStep,
    dataset_chunks,
    dataset_id,
    dataset_wire_chunks,
    total_steps,
)


def test_wire_chunks_are_what_protobuf_writes():
    rng = np.random.default_rng(1)
    data = {"X": rng.normal(size=(9, 4)).astype(np.float32), "y": np.arange(9),
            "s": np.array([], np.float64).reshape(0, 3), "é": np.ones(2, bool)}  # fmt: skip
    want = []
    for name in sorted(data):
        a = data[name]
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        dtype = gs.proto.tensor_codec.dtype_from_numpy(a.dtype)
        for start in range(0, max(len(raw), 1), 40):
            first = dict(dtype=dtype, shape=a.shape) if start == 0 else {}
            chunk = tpb.DatasetChunk(name=name, data=raw[start : start + 40], **first)
            want.append(chunk.SerializeToString())
    assert list(dataset_wire_chunks(data, chunk_bytes=40)) == want
    assert [c.SerializeToString() for c in dataset_chunks(data, chunk_bytes=40)] == want


def test_dataset_id_is_the_servers_and_chunking_round_trips():
    rng = np.random.default_rng(0)
    data = {"X": rng.normal(size=(50, 7)).astype(np.float32), "y": np.arange(50),
            "m": rng.random(50) > 0.5}  # fmt: skip
    chunks = list(dataset_chunks(data, chunk_bytes=100))
    assert len(chunks) > 10
    key, arrays = assemble(iter(chunks), max_elements=10**6, max_bytes=10**7)
    assert key == dataset_id(data) == dataset_id({k: data[k] for k in reversed(data)})
    # arrays uploaded out of name order are hashed after assembly: the same id
    by_name: dict[str, list] = {}
    for c in chunks:
        by_name.setdefault(c.name or next(reversed(by_name)), []).append(c)
    shuffled = [c for name in ("y", "X", "m") for c in by_name[name]]
    assert assemble(iter(shuffled), max_elements=10**6, max_bytes=10**7)[0] == key
    for name, a in data.items():
        assert np.array_equal(arrays[name], a) and arrays[name].dtype == a.dtype
    assert dataset_id({**data, "y": data["y"] + 1}) != key
    assert dataset_id({"X": data["X"].reshape(25, 14)}) != dataset_id({"X": data["X"]})
    big_endian = data["X"].astype(">f4")
    assert dataset_id({**data, "X": big_endian}) == key


def test_dataset_cache_is_a_bytes_bounded_lru():
    cache = DatasetCache(capacity_bytes=1000)
    hits, misses = [], []
    cache.on_hit.append(lambda: hits.append(1))
    cache.on_miss.append(lambda: misses.append(1))
    a, b, c = (np.zeros(50) for _ in range(3))  # 400 bytes each
    cache.put("a", {"x": a})
    cache.put("b", {"x": b})
    cache.get("a")  # a is now the most recent
    cache.put("c", {"x": c})  # evicts b
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.nbytes == 800
    with pytest.raises(NotFound) as info:
        cache.get("b")
    assert info.value.reason == "DATASET_NOT_FOUND"
    assert (len(hits), len(misses)) == (1, 1)
    with pytest.raises(LimitExceeded):
        cache.put("huge", {"x": np.zeros(200)})


def test_optimizers_and_schedules_to_proto():
    sgd = gs.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4).to_proto()
    assert sgd.WhichOneof("kind") == "sgd" and sgd.sgd.nesterov and sgd.sgd.momentum == 0.9
    adam = gs.Adam().to_proto().adam
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (1e-3, 0.9, 0.999, 1e-8)
    assert gs.StepLR(step_size=10, gamma=0.5).to_proto().step.step_size == 10
    assert gs.CosineLR(t_max=100).to_proto().cosine.t_max == 100
    assert "momentum=0.9" in repr(gs.SGD(lr=0.1, momentum=0.9))


def test_request_fields():
    assert request_field("params.W1") == 'params["W1"]'
    assert request_field("inputs.y") == 'data["y"]'
    assert request_field("resume.optimizer_state.step") == "resume_from.optimizer_state.step"
    assert request_field("optimizer.adam.betas.1") == "optimizer.adam.beta2"
    assert request_field("batch_size") == "batch_size"


def test_total_steps():
    assert total_steps(100, 32, 2, None) == 8
    assert total_steps(100, 32, None, None) == 4
    assert total_steps(100, 32, None, 5) == 5
    assert total_steps(100, 32, 3, 5) == 5
    assert total_steps(100, 0, 3, None) == 3


def test_checkpoint_is_opaque_and_serialisable(tmp_path):
    proto = tpb.Checkpoint(graph_id="g", step=5, epoch=1, cursor=32, fingerprint=b"f")
    proto.params["w"].CopyFrom(gs.proto.tensor_codec.to_tensor(np.arange(3.0)))
    ckpt = gs.Checkpoint(proto)
    assert gs.Checkpoint.from_bytes(ckpt.to_bytes()) == ckpt
    assert pickle.loads(pickle.dumps(ckpt)) == ckpt
    ckpt.save(tmp_path / "c.ckpt")
    assert gs.Checkpoint.load(tmp_path / "c.ckpt") == ckpt
    assert (ckpt.step, ckpt.epoch) == (5, 1)
    np.testing.assert_array_equal(ckpt.params["w"], np.arange(3.0))


class _Ckpt:
    def __init__(self, step: int, made_from: object = "stream") -> None:
        self.step, self.made_from = step, made_from

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ckpt) and (other.step, other.made_from) == (
            self.step,
            self.made_from,
        )


def _fake_run(n_steps: int, fail_at: int | None = None, every: int = 2):
    """A run of ``n_steps`` with a checkpoint every ``every`` steps; its replays (recorded in
    ``replays``) end with a checkpoint saying what it was recomputed from."""
    cancelled, replays = [], []

    def events():
        for i in range(1, n_steps + 1):
            yield "step", TrainStep(i, 0, 1.0 / i, 1.0, 0.1, 0.0)
            if i == fail_at:
                raise gs.FailedPrecondition("boom")
            if i % every == 0:
                yield "checkpoint", _Ckpt(i)
        yield "result", ({"w": np.ones(2)}, TrainResult(n_steps, 1.0 / n_steps, 0.0))

    def replay(anchor, step):
        replays.append((anchor, step))

        def replayed():
            yield "step", TrainStep(step, 0, 0.5, 1.0, 0.1, 0.0)
            yield "checkpoint", _Ckpt(step, made_from=anchor)
            yield "result", ({"w": np.zeros(2)}, TrainResult(step, 0.5, 0.0))

        return Run(replayed, lambda: None, replay, total=step, start=0, checkpoint_every=0,
                   progress=False)  # fmt: skip

    run = Run(events, lambda: cancelled.append(1), replay, total=n_steps, start=0,
              checkpoint_every=every, progress=False)  # fmt: skip
    return run, cancelled, replays


def test_run_semantics():
    run, cancelled, replays = _fake_run(5)
    assert run.params["w"].tolist() == [1, 1]  # reading params runs it to the end
    assert [s.step for s in run.history] == [1, 2, 3, 4, 5] and run.done
    assert run.checkpoint == _Ckpt(4) and not cancelled and not replays
    assert list(run) == []  # iterated once

    run, cancelled, replays = _fake_run(5)
    seen = [(step.step, run.checkpoint and run.checkpoint.step) for step in run]
    assert seen == [(1, None), (2, 2), (3, 2), (4, 4), (5, 4)]  # a due step comes with its own

    run, cancelled, replays = _fake_run(5)
    for step in run:
        if step.step == 3:
            break
    assert cancelled == [1] and replays == [(_Ckpt(2), 3)]
    assert run.checkpoint == _Ckpt(3, made_from=_Ckpt(2))  # recomputed from step 2's
    with pytest.raises(RuntimeError, match="stopped after step 3"):
        _ = run.params

    run, cancelled, replays = _fake_run(5, every=10)
    for step in run:
        if step.step == 1:
            break
    assert replays == [(None, 1)] and run.checkpoint == _Ckpt(1, made_from=None)

    run, cancelled, replays = _fake_run(5)
    for step in run:
        if step.step == 4:
            break
    assert run.checkpoint == _Ckpt(4) and not replays  # step 4 came with its checkpoint

    run, _, replays = _fake_run(5, fail_at=3)
    with pytest.raises(gs.FailedPrecondition):
        list(run)
    with pytest.raises(RuntimeError, match="failed"):
        _ = run.params
    assert run.checkpoint == _Ckpt(2) and not replays  # a failed run keeps what it received


def _step(n: int) -> tr.StepEvent:
    return tr.StepEvent(n, 0, 1.0 / n, 1.0, 0.1, 0.0, True)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _timed(clock: _Clock, items):
    """Yield ``items``: a float moves the clock on, None is a tick, anything else an event."""
    for item in items:
        if isinstance(item, float):
            clock.now += item
        else:
            yield item


def _shape(out) -> list:
    return [[e.step for e in x] if isinstance(x, list) else type(x).__name__ for x in out]


def test_batched_sends_the_first_step_then_every_interval():
    clock = _Clock()
    ckpt = tr.CheckpointEvent(checkpoint=None)  # type: ignore[arg-type]
    done = tr.ResultEvent(params={}, steps=9, final_loss=0.0, elapsed_seconds=1.0)
    events = [_step(1), 0.01, _step(2), 0.01, _step(3), 0.5, None,  # a tick after the interval
              _step(4), 0.2, _step(5),  # the interval has passed: 4 and 5 go together
              _step(6), ckpt, _step(7), 0.01, _step(8), None, _step(9), done]  # fmt: skip
    out = list(batched(_timed(clock, events), 0.1, clock))
    assert _shape(out) == [[1], [2, 3], [4, 5], [6], "CheckpointEvent", [7, 8, 9], "ResultEvent"]


def test_batched_with_no_interval_sends_every_step_alone():
    clock = _Clock()
    out = list(batched(_timed(clock, [_step(1), None, _step(2), _step(3)]), 0.0, clock))
    assert _shape(out) == [[1], [2], [3]]


def test_batched_caps_a_batch_and_reports_the_steps_before_a_failure():
    clock = _Clock()
    many = [_step(n) for n in range(1, 2 * MAX_BATCH_STEPS + 4)]
    out = list(batched(_timed(clock, many), 60.0, clock))
    assert [len(b) for b in out] == [1, MAX_BATCH_STEPS, MAX_BATCH_STEPS, 2]

    def failing():
        yield from [_step(1), _step(2), _step(3)]
        raise RuntimeError("step 4 failed")

    got = []
    with pytest.raises(RuntimeError, match="step 4"):
        for batch in batched(failing(), 60.0, clock):
            got.append([e.step for e in batch])
    assert got == [[1], [2, 3]]
