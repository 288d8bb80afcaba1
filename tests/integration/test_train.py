"""Train and PutDataset through a real server: parity with torch.optim's formulas, exact resume,
cancellation, datasets, validation, the NaN case, and the three clients agreeing."""

from __future__ import annotations

import asyncio
import math
import pickle
import threading
import time

import gradserve_client as gs
import grpc
import numpy as np
import pytest
from gradserve import metrics
from gradserve.config import Settings
from gradserve.rpc import GradientServicer
from gradserve.server import create_server
from gradserve_client.proto import tensor_codec
from gradserve_client.proto import training_pb2 as tpb
from gradserve_client.training import dataset_chunks, dataset_id
from wire import call_error

N, D, H, K = 60, 5, 8, 3


def mlp_graph(batch: int = -1, dtype: str = "float64") -> gs.Graph:
    g = gs.Graph()
    X = g.input("X", shape=(batch, D), dtype=dtype)
    y = g.input("y", shape=(batch,), dtype="int64")
    W1 = g.input("W1", shape=(D, H), dtype=dtype)
    b1 = g.input("b1", shape=(H,), dtype=dtype)
    W2 = g.input("W2", shape=(H, K), dtype=dtype)
    b2 = g.input("b2", shape=(K,), dtype=dtype)
    g.output("loss", gs.cross_entropy(gs.tanh(X @ W1 + b1) @ W2 + b2, y))
    return g


def problem(seed: int = 0, n: int = N):
    rng = np.random.default_rng(seed)
    data = {"X": rng.normal(size=(n, D)), "y": rng.integers(0, K, size=n)}
    params = {
        "W1": rng.normal(size=(D, H)) * 0.5,
        "b1": rng.normal(size=H) * 0.1,
        "W2": rng.normal(size=(H, K)) * 0.5,
        "b2": np.zeros(K),
    }
    return params, data


def reference_grads(p, X, y):
    h = np.tanh(X @ p["W1"] + p["b1"])
    z = h @ p["W2"] + p["b2"]
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    m = len(y)
    probs[np.arange(m), y] -= 1
    dz = probs / m
    dh = (dz @ p["W2"].T) * (1 - h * h)
    return {"W1": X.T @ dh, "b1": dh.sum(0), "W2": h.T @ dz, "b2": dz.sum(0)}


def reference_train(params, data, opt, batch, epochs):
    """torch.optim.SGD / Adam, as their documentation writes them, in numpy."""
    p = {k: v.copy() for k, v in params.items()}
    state = {k: {} for k in p}
    t = 0
    n = len(data["y"])
    for _ in range(epochs):
        for lo in range(0, n, batch):
            grads = reference_grads(p, data["X"][lo : lo + batch], data["y"][lo : lo + batch])
            t += 1
            for k in p:
                g = grads[k] + opt["weight_decay"] * p[k]
                s = state[k]
                if opt["kind"] == "sgd":
                    mu = opt["momentum"]
                    if mu:
                        s["buf"] = g.copy() if t == 1 else mu * s["buf"] + g
                        g = g + mu * s["buf"] if opt["nesterov"] else s["buf"]
                    p[k] = p[k] - opt["lr"] * g
                else:
                    b1, b2 = opt["betas"]
                    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
                    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
                    denom = np.sqrt(s["v"]) / math.sqrt(1 - b2**t) + opt["eps"]
                    p[k] = p[k] - opt["lr"] / (1 - b1**t) * s["m"] / denom
    return p


@pytest.fixture(scope="module")
def client(server):
    with gs.Client(server.address) as c:
        yield c


OPTIMIZERS = {
    "sgd-momentum-wd": (
        gs.SGD(lr=0.1, momentum=0.9, weight_decay=1e-2),
        {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-2},
    ),
    "sgd-nesterov": (
        gs.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
        {"kind": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
    ),
    "adam": (
        gs.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=1e-2),
        {"kind": "adam", "lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 1e-2},
    ),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parity_with_torch_optim_formulas(client, name):
    optimizer, spec = OPTIMIZERS[name]
    params, data = problem()
    run = client.train(mlp_graph(), params=params, data=data, optimizer=optimizer,
                       batch_size=16, epochs=3, shuffle=False)  # fmt: skip
    steps = list(run)
    assert [s.step for s in steps] == list(range(1, 13))
    assert [s.epoch for s in steps] == [0] * 4 + [1] * 4 + [2] * 4
    want = reference_train(params, data, spec, 16, 3)
    for k in params:
        np.testing.assert_allclose(run.params[k], want[k], rtol=1e-10, atol=1e-14)
    assert run.result.steps == 12
    assert steps[0].loss > steps[-1].loss


def test_exact_resume_with_shuffle(client):
    params, data = problem(1)
    kw = dict(params=params, data=data, optimizer=gs.Adam(lr=0.02), batch_size=16, epochs=3,
              shuffle=True, seed=7, checkpoint_every=5)  # fmt: skip
    full = client.train(mlp_graph(), **kw)
    assert len(list(full)) == 12
    first = client.train(mlp_graph(), **kw)
    for step in first:
        if step.step == 7:
            break
    ckpt = first.checkpoint
    assert (ckpt.step, ckpt.epoch) == (7, 1)  # the step it stopped at, recomputed from step 5's
    with pytest.raises(RuntimeError, match="stopped after step 7"):
        _ = first.params
    ckpt = pickle.loads(pickle.dumps(gs.Checkpoint.from_bytes(ckpt.to_bytes())))
    resumed = client.train(mlp_graph(), **kw, resume=ckpt)
    assert [s.step for s in resumed] == list(range(8, 13))
    for k in params:
        assert np.array_equal(resumed.params[k], full.params[k])
    # a LocalClient checkpoint resumes on the server, and the other way round
    local = gs.LocalClient().train(mlp_graph(), **kw)
    for step in local:
        if step.step == 11:
            break
    on_server = client.train(mlp_graph(), **kw, resume=local.checkpoint)
    other = gs.LocalClient().train(mlp_graph(), **kw, resume=ckpt)
    for k in params:
        assert np.array_equal(on_server.params[k], full.params[k])
        assert np.array_equal(other.params[k], full.params[k])


def test_local_and_async_clients_agree_bitwise(server, client):
    params, data = problem(2)
    kw = dict(params=params, data=data, optimizer=gs.SGD(lr=0.1, momentum=0.9),
              schedule=gs.CosineLR(t_max=10), batch_size=16, epochs=2, seed=3)  # fmt: skip
    remote = client.train(mlp_graph(), **kw)
    remote_steps = list(remote)
    local = gs.LocalClient().train(mlp_graph(), **kw)
    local_steps = list(local)

    async def go():
        async with gs.AsyncClient(server.address) as ac:
            run = ac.train(mlp_graph(), **kw)
            steps = [s async for s in run]
            return steps, run.params, await ac.train(mlp_graph(), **kw).wait()

    async_steps, async_params, waited = asyncio.run(go())

    def strip(steps):
        return [(s.step, s.epoch, s.loss, s.lr) for s in steps]

    assert strip(remote_steps) == strip(local_steps) == strip(async_steps)
    # the loop's grad norm is a BLAS dot product, whose last bit may follow buffer alignment
    norms = [[s.grad_norm for s in steps] for steps in (remote_steps, local_steps, async_steps)]
    np.testing.assert_allclose(norms[0], norms[1], rtol=1e-12)
    np.testing.assert_allclose(norms[0], norms[2], rtol=1e-12)
    assert remote_steps[1].lr < remote_steps[0].lr  # the cosine schedule
    for k in params:
        assert np.array_equal(remote.params[k], local.params[k])
        assert np.array_equal(remote.params[k], async_params[k])
        assert np.array_equal(remote.params[k], waited[k])


def test_params_drains_the_run_and_report_every(client):
    params, data = problem()
    run = client.train(mlp_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.1),
                       batch_size=16, epochs=3, report_every=5)  # fmt: skip
    assert set(run.params) == set(params)
    assert [s.step for s in run.history] == [5, 10, 12]
    run = client.train(mlp_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.1),
                       batch_size=None, max_steps=2)  # fmt: skip
    assert [s.epoch for s in run] == [0, 1]


# ----------------------------------------------------------------------------------------------
# Cancellation


def slow_graph(n: int = 220, depth: int = 6) -> gs.Graph:
    g = gs.Graph()
    X = g.input("X", shape=(-1, n))
    W = g.input("W", shape=(n, n))
    h = X
    for _ in range(depth):
        h = gs.tanh(h @ W)
    g.output("loss", gs.mean(h * h))
    return g


def slow_problem(n: int = 220, rows: int = 4000):
    rng = np.random.default_rng(0)
    return {"W": rng.normal(size=(n, n)) / np.sqrt(n)}, {"X": rng.normal(size=(rows, n))}


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_breaking_out_stops_the_server_loop_within_a_step(make_server):
    srv = make_server()
    params, data = slow_problem()
    with gs.Client(srv.address) as c:
        warm = c.train(slow_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.01),
                       batch_size=200, max_steps=2)  # fmt: skip
        list(warm)
        assert _wait(lambda: metrics.TRAIN_ACTIVE_STREAMS._value.get() == 0)
        threads = threading.active_count()
        before = metrics.TRAIN_STEPS._value.get()
        run = c.train(slow_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.01),
                      batch_size=200, epochs=50, checkpoint_every=2)  # fmt: skip
        t0 = time.monotonic()
        for step in run:
            if step.step == 4:
                break
        per_step = (time.monotonic() - t0) / 4
        assert run.checkpoint.step == 4  # step 4 was handed over with its checkpoint
        assert _wait(lambda: metrics.TRAIN_ACTIVE_STREAMS._value.get() == 0)
        ran = metrics.TRAIN_STEPS._value.get() - before
        assert ran <= 4 + 2, (ran, per_step)  # the step in flight, at most one more
        assert _wait(lambda: threading.active_count() <= threads), threading.enumerate()
        with pytest.raises(RuntimeError, match="stopped"):
            _ = run.params


def test_deadline_stops_the_run(make_server):
    srv = make_server()
    params, data = slow_problem()
    with gs.Client(srv.address) as c:
        run = c.train(slow_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.01),
                      batch_size=200, epochs=50, timeout=0.5)  # fmt: skip
        with pytest.raises(gs.DeadlineExceeded):
            list(run)
        assert _wait(lambda: metrics.TRAIN_ACTIVE_STREAMS._value.get() == 0)
    local = gs.LocalClient().train(slow_graph(), params=params, data=data,
                                   optimizer=gs.SGD(lr=0.01), batch_size=200, epochs=50,
                                   timeout=0.3)  # fmt: skip
    with pytest.raises(gs.DeadlineExceeded):
        list(local)


# ----------------------------------------------------------------------------------------------
# Datasets


def linear_graph(d: int) -> gs.Graph:
    g = gs.Graph()
    X = g.input("X", shape=(-1, d), dtype="float32")
    t = g.input("t", shape=(-1,), dtype="float32")
    w = g.input("w", shape=(d,), dtype="float32")
    r = X @ w - t
    g.output("loss", gs.mean(r * r))
    return g


def test_50_mib_dataset_uploads_in_chunks_and_trains(server, client):
    d = 256
    rows = (50 << 20) // (d * 4)
    rng = np.random.default_rng(0)
    data = {"X": rng.standard_normal((rows, d), dtype=np.float32),
            "t": rng.standard_normal(rows, dtype=np.float32)}  # fmt: skip
    key = dataset_id(data)
    assert len(list(dataset_chunks(data))) >= 13
    run = client.train(linear_graph(d), params={"w": np.zeros(d, np.float32)}, data=data,
                       optimizer=gs.SGD(lr=0.01), batch_size=512, max_steps=5)  # fmt: skip
    assert len(list(run)) == 5
    assert key in server.servicer.dataset_cache
    # uploading again answers the same content id
    assert client.put_dataset(data) == key


@pytest.fixture
def restarted():
    """restarted(port): a fresh in-process server on ``port`` (a restart), stopped at the end."""
    started = []

    def start(port):
        settings = Settings(host="127.0.0.1", port=port, metrics_port=0)
        servicer = GradientServicer(settings)
        server, _, _ = create_server(settings, servicer=servicer)
        started.append(server)
        return servicer

    yield start
    for server in started:
        server.stop(None)


def test_sdk_reuploads_after_a_restart(make_server, restarted):
    first = make_server()
    port = first.port
    d = 64
    rng = np.random.default_rng(1)
    rows = (5 << 20) // (d * 4)  # over the inline limit: goes by dataset id
    data = {"X": rng.standard_normal((rows, d), dtype=np.float32),
            "t": rng.standard_normal(rows, dtype=np.float32)}  # fmt: skip
    kw = dict(params={"w": np.zeros(d, np.float32)}, data=data, optimizer=gs.SGD(lr=0.01),
              batch_size=1024, max_steps=3)  # fmt: skip
    with gs.Client(f"127.0.0.1:{port}") as c:
        a = c.train(linear_graph(d), **kw).params
        first.server.stop(None)
        second = restarted(port)
        assert dataset_id(data) not in second.dataset_cache
        b = c.train(linear_graph(d), **kw).params
        assert dataset_id(data) in second.dataset_cache
        assert np.array_equal(a["w"], b["w"])


def _chunks(*specs):
    return iter([tpb.DatasetChunk(**s) for s in specs])


F64 = 2  # DTYPE_FLOAT64


@pytest.mark.parametrize(
    ("chunks", "field"),
    [
        ([], "chunks"),
        ([{"name": "X", "dtype": F64, "shape": [2], "data": b"\0" * 24}], 'chunks["X"].data'),
        ([{"name": "X", "dtype": F64, "shape": [2], "data": b"\0" * 8}], 'chunks["X"].data'),
        ([{"name": "X", "dtype": 0, "shape": [2], "data": b"\0" * 16}], 'chunks["X"].dtype'),
        ([{"name": "X", "dtype": F64, "shape": [], "data": b"\0" * 8}], 'chunks["X"].shape'),
        ([{"name": "", "dtype": F64, "shape": [1], "data": b"\0" * 8}], "chunks.name"),
        (
            [
                {"name": "X", "dtype": F64, "shape": [2], "data": b"\0" * 16},
                {"name": "y", "dtype": F64, "shape": [2], "data": b"\0" * 16},
                {"name": "X", "data": b"\0" * 8},
            ],
            'chunks["X"]',
        ),
        (
            [
                {"name": "X", "dtype": F64, "shape": [2], "data": b"\0" * 16},
                {"name": "y", "dtype": F64, "shape": [3], "data": b"\0" * 24},
            ],
            'chunks["y"].shape',
        ),
    ],
)
def test_put_dataset_validation(stub, chunks, field):
    err = call_error(stub.PutDataset, _chunks(*chunks))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.fields[0] == field


def test_put_dataset_limits_and_id(make_server, stub):
    X = np.arange(12.0).reshape(6, 2)
    info = stub.PutDataset(dataset_chunks({"X": X}, chunk_bytes=40))
    assert info.dataset_id == dataset_id({"X": X})
    assert info.num_examples == 6 and list(info.arrays[0].shape) == [6, 2]
    small = make_server(dataset_cache_bytes=64)
    few = make_server(max_tensor_elements=10)
    for srv in (small, few):
        channel, s = srv.stub()
        with channel:
            err = call_error(s.PutDataset, dataset_chunks({"X": X}))
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("shape", [[2**32, 2**32], [0, 2**62, 4]])
def test_put_dataset_overflowing_shape_is_over_the_limit(stub, shape):
    # An int64 product of these shapes wraps to 0 elements, which passed the limit.
    err = call_error(stub.PutDataset, _chunks({"name": "X", "dtype": F64, "shape": shape}))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.message.startswith(f'chunks["X"] of shape {shape} has {2**64} elements')
    assert "max_tensor_elements" in err.message


def test_unknown_dataset_id_is_not_found(stub):
    params, _ = problem()
    req = tpb.TrainRequest(graph=mlp_graph().to_proto(), loss="loss", dataset_id="ds-nope",
                           optimizer=gs.SGD(lr=0.1).to_proto(), batch_size=4)  # fmt: skip
    for k, v in params.items():
        req.params[k].CopyFrom(tensor_codec.to_tensor(v))
    before = metrics.DATASET_CACHE_MISSES._value.get()
    err = call_error(lambda r: list(stub.Train(r)), req)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "DATASET_NOT_FOUND")
    assert metrics.DATASET_CACHE_MISSES._value.get() == before + 1


# ----------------------------------------------------------------------------------------------
# Validation and failures


def _variants():
    params, data = problem()
    g = mlp_graph()
    scalar_out = gs.Graph()
    X = scalar_out.input("X", shape=(-1, D))
    W = scalar_out.input("W", shape=(D, 2))
    scalar_out.output("loss", X @ W)
    int_param = gs.Graph()
    X2 = int_param.input("X", shape=(-1, D))
    int_param.input("k", shape=(), dtype="int64")
    int_param.output("loss", gs.sum(X2))
    base = dict(params=params, data=data, optimizer=gs.SGD(lr=0.1), batch_size=16)
    return {
        "loss not an output": (g, {**base, "loss": "nope"}, "loss"),
        "loss not a scalar": (
            scalar_out,
            {**base, "params": {"W": np.ones((D, 2))}, "data": {"X": data["X"]}},
            "loss",
        ),
        "param not an input": (
            g,
            {**base, "params": {**params, "Z": np.ones(2)}},
            'params["Z"]',
        ),
        "param not a float": (
            int_param,
            {**base, "params": {"k": np.int64(2)}, "data": {"X": data["X"]}},
            'params["k"]',
        ),
        "param shape": (g, {**base, "params": {**params, "b2": np.zeros(4)}}, 'params["b2"]'),
        "data lengths disagree": (
            g,
            {**base, "data": {"X": data["X"], "y": data["y"][:-1]}},
            ('data["X"]', 'data["y"]'),  # a map: either may come first
        ),
        "data not an input": (g, {**base, "data": {**data, "Q": data["y"]}}, 'data["Q"]'),
        "input missing": (g, {**base, "data": {"X": data["X"]}}, 'data["y"]'),
        "batch vs declared": (mlp_graph(batch=16), base, ('data["X"]', 'data["y"]')),
        "momentum < 0": (
            g,
            {**base, "optimizer": gs.SGD(lr=0.1, momentum=-1)},
            "optimizer.sgd.momentum",
        ),
        "nesterov without momentum": (
            g,
            {**base, "optimizer": gs.SGD(lr=0.1, nesterov=True)},
            "optimizer.sgd",
        ),
        "lr <= 0": (g, {**base, "optimizer": gs.Adam(lr=0)}, "optimizer.adam.lr"),
        "beta1 >= 1": (
            g,
            {**base, "optimizer": gs.Adam(betas=(1.5, 0.9))},
            "optimizer.adam.beta1",
        ),
        "step_size": (
            g,
            {**base, "schedule": gs.StepLR(step_size=0)},
            "schedule.step.step_size",
        ),
        "batch_size": (g, {**base, "batch_size": -3}, "batch_size"),
        "checkpoint_every": (g, {**base, "checkpoint_every": -1}, "checkpoint_every"),
        "report_interval < 0": (g, {**base, "report_interval": -0.5}, "report_interval_seconds"),
        "report_interval NaN": (
            g,
            {**base, "report_interval": math.nan},
            "report_interval_seconds",
        ),
    }


VARIANTS = _variants()


@pytest.mark.parametrize("which", ["server", "local"])
@pytest.mark.parametrize("case", VARIANTS)
def test_validation_names_the_field(client, which, case):
    graph, kwargs, field = VARIANTS[case]
    c = client if which == "server" else gs.LocalClient()
    before = metrics.TRAIN_STEPS._value.get()
    with pytest.raises(gs.InvalidArgument) as info:
        list(c.train(graph, **kwargs))
    fields = field if isinstance(field, tuple) else (field,)
    assert info.value.field_violations[0][0] in fields, info.value
    assert metrics.TRAIN_STEPS._value.get() == before  # refused before the first step


def test_unknown_optimizer_or_schedule_argument():
    for make, field in (
        (lambda: gs.SGD(lr=0.1, foo=1), "optimizer.sgd.foo"),
        (lambda: gs.Adam(beta1=0.9), "optimizer.adam.beta1"),
        (lambda: gs.StepLR(step_size=3, gama=0.5), "schedule.step.gama"),
        (lambda: gs.CosineLR(tmax=3), "schedule.cosine.tmax"),
        (lambda: gs.SGD(momentum=0.9), "optimizer.sgd.lr"),
    ):
        with pytest.raises(gs.InvalidArgument) as info:
            make()
        assert info.value.field_violations[0][0] == field
        assert isinstance(info.value, TypeError)


def test_optimizer_unset_and_resume_mismatch(client, stub):
    params, data = problem()
    req = tpb.TrainRequest(graph=mlp_graph().to_proto(), loss="loss", batch_size=16)
    for k, v in {**params, **data}.items():
        target = req.params if k in params else req.inline_data.tensors
        target[k].CopyFrom(tensor_codec.to_tensor(v))
    err = call_error(lambda r: list(stub.Train(r)), req)
    assert (err.code, err.fields[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "optimizer")

    kw = dict(params=params, data=data, optimizer=gs.SGD(lr=0.1), epochs=1, checkpoint_every=2)
    run = client.train(mlp_graph(), batch_size=16, **kw)
    list(run)
    with pytest.raises(gs.InvalidArgument) as info:
        list(client.train(mlp_graph(), batch_size=20, resume=run.checkpoint, **kw))
    assert info.value.field_violations[0][0].startswith("resume_from")
    other = mlp_graph()
    other.output("extra", other.outputs["loss"] * 2.0)
    with pytest.raises(gs.InvalidArgument) as info:
        list(client.train(other, loss="loss", batch_size=16, resume=run.checkpoint, **kw))
    assert info.value.field_violations[0][0] == "resume_from.graph_id"


def test_nan_loss_fails_with_the_step_and_keeps_the_checkpoint(client):
    g = gs.Graph()
    X = g.input("X", shape=(-1,))
    w = g.input("w", shape=())
    g.output("loss", gs.mean(gs.sqrt(X) * w))
    X0 = np.ones(12)
    X0[9] = -1.0  # in the 3rd batch of 4
    for c in (client, gs.LocalClient()):
        run = c.train(g, params={"w": np.array(1.0)}, data={"X": X0},
                      optimizer=gs.SGD(lr=0.1), batch_size=4, epochs=1, shuffle=False,
                      checkpoint_every=2)  # fmt: skip
        seen = []
        with pytest.raises(gs.FailedPrecondition) as info:
            for step in run:
                seen.append(step)
        assert [s.finite for s in seen] == [True, True, False]
        assert math.isnan(seen[-1].loss)
        assert "step 3" in info.value.message
        assert info.value.reason == "NON_FINITE_LOSS" and info.value.metadata["step"] == "3"
        assert run.checkpoint.step == 2
        with pytest.raises(RuntimeError, match="failed"):
            _ = run.params


def test_train_feature_and_metrics(client):
    assert "train" in client.server_info().features
    params, data = problem()
    before = metrics.TRAIN_STEPS._value.get()
    list(client.train(mlp_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.1),
                      batch_size=16, epochs=1, report_every=3))  # fmt: skip
    assert metrics.TRAIN_STEPS._value.get() == before + 4


def test_a_resumed_run_counts_only_its_own_steps(client):
    params, data = problem()
    kw = dict(params=params, data=data, optimizer=gs.SGD(lr=0.1), batch_size=16)
    first = client.train(mlp_graph(), epochs=1, **kw)
    list(first)
    assert first.checkpoint.step == 4
    before = metrics.TRAIN_STEPS._value.get()
    resumed = client.train(mlp_graph(), epochs=2, resume=first.checkpoint, **kw)
    assert [s.step for s in resumed] == [5, 6, 7, 8]
    assert metrics.TRAIN_STEPS._value.get() == before + 4  # steps 5-8, not 8


def test_raw_stream_events(stub):
    params, data = problem()
    req = tpb.TrainRequest(graph=mlp_graph().to_proto(), loss="loss", batch_size=16, epochs=1,
                           optimizer=gs.SGD(lr=0.1).to_proto(), checkpoint_every=2)  # fmt: skip
    for k, v in {**params, **data}.items():
        target = req.params if k in params else req.inline_data.tensors
        target[k].CopyFrom(tensor_codec.to_tensor(v))
    events = list(stub.Train(req))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["step", "step", "checkpoint", "step", "step", "checkpoint", "result"]
    assert events[2].checkpoint.cursor == 32  # examples, not batches
    assert events[5].checkpoint.epoch == 1 and events[5].checkpoint.cursor == 0
    assert all(e.graph_id == events[0].graph_id != "" for e in events)
    assert events[-1].result.steps == 4


def test_raw_stream_events_in_batches(stub):
    """With report_interval_seconds, the first step goes at once and the later ones together,
    flushed before each checkpoint (the last step's too) and the result (10 s: no batch is due
    by time)."""
    params, data = problem()
    req = tpb.TrainRequest(graph=mlp_graph().to_proto(), loss="loss", batch_size=16, epochs=2,
                           optimizer=gs.SGD(lr=0.1).to_proto())  # fmt: skip
    req.report_interval_seconds = 10
    for k, v in {**params, **data}.items():
        target = req.params if k in params else req.inline_data.tensors
        target[k].CopyFrom(tensor_codec.to_tensor(v))

    def reported(e):  # the steps of an event, or None for another kind
        return e.steps.steps if e.HasField("steps") else [e.step] if e.HasField("step") else None

    def shape(events):
        return [[s.step for s in reported(e)] if reported(e) else e.WhichOneof("event")
                for e in events]  # fmt: skip

    def steps(events):
        return [(s.step, s.loss, s.grad_norm) for e in events for s in reported(e) or []]

    assert shape(stub.Train(req)) == [[1], [2, 3, 4, 5, 6, 7, 8], "checkpoint", "result"]
    req.checkpoint_every = 3
    events = list(stub.Train(req))
    assert shape(events) == [[1], [2, 3], "checkpoint", [4, 5, 6], "checkpoint", [7, 8],
                             "checkpoint", "result"]  # fmt: skip
    req.report_interval_seconds = 0
    one_each = list(stub.Train(req))
    assert shape(one_each)[:3] == [[1], [2], [3]]
    assert steps(one_each) == steps(events) and len(steps(events)) == 8


def test_the_sdk_hands_over_every_step_of_a_batch(client):
    params, data = problem()
    kw = dict(params=params, data=data, optimizer=gs.SGD(lr=0.1), batch_size=16, epochs=3)
    batched = list(client.train(mlp_graph(), report_interval=60, **kw))
    one_each = list(client.train(mlp_graph(), report_interval=0, **kw))
    assert [s.step for s in batched] == list(range(1, 13))
    assert [(s.loss, s.grad_norm) for s in batched] == [(s.loss, s.grad_norm) for s in one_each]


def test_async_break_cancels_the_stream(make_server):
    srv = make_server()
    params, data = slow_problem()
    before = metrics.TRAIN_STEPS._value.get()

    async def go():
        async with gs.AsyncClient(srv.address) as ac:
            run = ac.train(slow_graph(), params=params, data=data, optimizer=gs.SGD(lr=0.01),
                           batch_size=200, epochs=50, report_interval=0)  # fmt: skip
            async for step in run:
                if step.step == 3:
                    break
            await asyncio.sleep(0.2)  # the async generator's aclose runs on the loop
            return run

    run = asyncio.run(go())
    assert _wait(lambda: metrics.TRAIN_ACTIVE_STREAMS._value.get() == 0)
    # one event per step: the stream ran at most 2 steps ahead of the break (batched, it runs
    # up to report_interval ahead); the stop checkpoint's replay (from
    # the run's start: no checkpoint yet) may add its 3 steps
    assert metrics.TRAIN_STEPS._value.get() - before <= 3 + 2 + 3
    with pytest.raises(RuntimeError, match="stopped"):
        _ = run.params


def test_a_run_that_ends_before_its_first_checkpoint_resumes_exactly(client):
    """max_steps=38 with checkpoint_every=100: the run ends with a checkpoint of step 38, and
    resuming it to step 100 gives the uninterrupted run's parameters, bit for bit."""
    params, data = problem()
    kw = dict(data=data, optimizer=gs.Adam(lr=0.01), batch_size=16, shuffle=True, seed=3,
              checkpoint_every=100)  # fmt: skip
    for c in (client, gs.LocalClient()):
        short = c.train(mlp_graph(), params=params, max_steps=38, **kw)
        list(short)
        assert short.checkpoint is not None and short.checkpoint.step == 38
        resumed = c.train(mlp_graph(), params=params, max_steps=100, resume=short.checkpoint, **kw)
        steps = [s.step for s in resumed]
        assert steps[0] == 39 and steps[-1] == 100
        whole = c.train(mlp_graph(), params=params, max_steps=100, **kw)
        for name, value in whole.params.items():
            np.testing.assert_array_equal(resumed.params[name], value)


# ----------------------------------------------------------------------------------------------
# Stopping: the checkpoint of the step the caller stopped at

STOP_KW = dict(optimizer=gs.SGD(lr=0.05, momentum=0.9, nesterov=True), batch_size=16,
               shuffle=True, seed=5, max_steps=100, checkpoint_every=100)  # fmt: skip


def _stopped_then_resumed(c, start=None):
    """Break out at step 38 (no checkpoint received yet): the run's checkpoint is step 38's.
    Returns it and the parameters of the run resumed from it to step 100."""
    params, data = problem(4)
    run = c.train(mlp_graph(), params=params, data=data, **STOP_KW, resume=start)
    for step in run:
        if step.step == 38:
            break
    ckpt = run.checkpoint
    resumed = c.train(mlp_graph(), params=params, data=data, **STOP_KW, resume=ckpt)
    assert [s.step for s in resumed][:2] == [39, 40]
    return ckpt, resumed.params


@pytest.fixture(scope="module")
def uninterrupted(client):
    """The whole run to step 100, and a run that ended at step 38 (max_steps) with its final
    checkpoint: what a stop at step 38 must reproduce."""
    params, data = problem(4)
    whole = client.train(mlp_graph(), params=params, data=data, **STOP_KW)
    ended = client.train(mlp_graph(), params=params, data=data, **{**STOP_KW, "max_steps": 38})
    list(ended)
    return whole.params, ended.checkpoint


def _assert_step_38(ckpt, resumed, uninterrupted):
    whole, at_38 = uninterrupted
    assert ckpt is not None and (ckpt.step, ckpt.epoch) == (38, 9)
    assert ckpt == at_38  # params, momentum buffers, cursor and fingerprint, byte for byte
    momentum = tpb.Checkpoint.FromString(ckpt.to_bytes()).optimizer_state
    assert {k for k in momentum if k.startswith("momentum_buffer/")} == {
        f"momentum_buffer/{k}" for k in whole
    }
    for name, value in whole.items():
        np.testing.assert_array_equal(resumed[name], value)


def test_breaking_out_gives_the_checkpoint_of_that_step(client, uninterrupted):
    ckpt, resumed = _stopped_then_resumed(client)
    _assert_step_38(ckpt, resumed, uninterrupted)


def test_local_client_stop_checkpoint_resumes_on_the_server(client, uninterrupted):
    ckpt, resumed = _stopped_then_resumed(gs.LocalClient())
    _assert_step_38(ckpt, resumed, uninterrupted)
    params, data = problem(4)
    on_server = client.train(mlp_graph(), params=params, data=data, **STOP_KW, resume=ckpt)
    for name, value in uninterrupted[0].items():
        np.testing.assert_array_equal(on_server.params[name], value)


def test_async_stop_gives_the_checkpoint_of_that_step(server, uninterrupted):
    params, data = problem(4)

    async def go():
        async with gs.AsyncClient(server.address) as ac:
            run = ac.train(mlp_graph(), params=params, data=data, **STOP_KW)
            async for step in run:
                if step.step == 38:
                    break
            await run.stop()
            ckpt = run.checkpoint
            async with ac.train(mlp_graph(), params=params, data=data, **STOP_KW) as other:
                async for step in other:
                    if step.step == 38:
                        break
            resumed = ac.train(mlp_graph(), params=params, data=data, **STOP_KW, resume=ckpt)
            return ckpt, other.checkpoint, await resumed.wait()

    ckpt, other, resumed = asyncio.run(go())
    assert other == ckpt
    _assert_step_38(ckpt, resumed, uninterrupted)


def test_stop_after_a_checkpoint_and_after_a_resume(client, uninterrupted):
    """A stop recomputes from the latest checkpoint (here step 20's), or from the checkpoint
    the run was resumed from; a step whose checkpoint is due is handed over with it."""
    params, data = problem(4)
    kw = {**STOP_KW, "checkpoint_every": 20}
    run = client.train(mlp_graph(), params=params, data=data, **kw)
    seen = {}
    for step in run:
        seen[step.step] = run.checkpoint.step if run.checkpoint else None
        if step.step == 38:
            break
    assert seen[19] is None and seen[20] == 20 and seen[38] == 20
    assert run.checkpoint.step == 38
    # its parameters and optimizer state are those of the run that ended at step 38
    assert run.checkpoint.params.keys() == uninterrupted[1].params.keys()
    for name, value in uninterrupted[1].params.items():
        np.testing.assert_array_equal(run.checkpoint.params[name], value)
    start = client.train(mlp_graph(), params=params, data=data, **{**kw, "max_steps": 30})
    list(start)
    ckpt, resumed = _stopped_then_resumed(client, start=start.checkpoint)
    _assert_step_38(ckpt, resumed, uninterrupted)


def test_a_stop_before_any_step_or_after_the_end_has_nothing_to_recompute(client):
    params, data = problem(4)
    with client.train(mlp_graph(), params=params, data=data, **STOP_KW) as run:
        pass
    assert run.checkpoint is None and run.history == []
    done = client.train(mlp_graph(), params=params, data=data, **{**STOP_KW, "max_steps": 5})
    list(done)
    done.cancel()
    assert done.checkpoint.step == 5 and done.done
