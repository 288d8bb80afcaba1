"""W5: SGD training of an MLP 784-256-10 (tanh, softmax cross-entropy), float32, batch 128,
lr 0.1, 300 steps over 8192 synthetic samples, in data order (no shuffle).

Contenders, each a whole training run, interleaved round by round:
- gradserve streamed from a localhost server via `Client.train`, counting the dataset upload and
  the stream set-up (a fresh Client per run; the server is restarted before each run, outside
  the timing, so that nothing is cached), its steps arriving in batches (the SDK's default
  `report_interval`); the same with `report_interval=0`, one step event per step (what 300
  events cost);
- `LocalClient.train` (in-process);
- PyTorch eager with torch.optim.SGD; a JAX jit training step; a hand-written numpy loop.
The figure is steps per second (higher is better). The notes also give each contender's CPU
seconds per step (the benchmark process's, plus the server process's for the streamed run), which
a busy machine distorts less than the wall clock: a contender's share of the cores is not its
cost.
"""

from __future__ import annotations

import inspect
import os
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np

from bench.harness import Row, Settings, relative_iqr

GS_STREAM = "gradserve Client.train (streamed)"
# The same run with one step event per step (report_interval=0): what the events cost W5 (the
# torch anchor reads no loss while it trains). W5 itself measures the SDK's default.
GS_STREAM_EACH = "gradserve Client.train (streamed, report_interval=0: an event per step)"
GS_LOCAL = "gradserve LocalClient.train"
TORCH = "torch eager SGD"
JAX = "jax jit step"
NUMPY = "numpy loop (hand)"

SAMPLES, IN, HIDDEN, OUT, BATCH, LR = 8192, 784, 256, 10, 128, 0.1


def make_data(samples: int = SAMPLES) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((samples, IN)).astype(np.float32)
    labels = rng.integers(0, OUT, samples).astype(np.int64)
    params = {
        "W1": (rng.standard_normal((IN, HIDDEN)) / np.sqrt(IN)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "W2": (rng.standard_normal((HIDDEN, OUT)) / np.sqrt(HIDDEN)).astype(np.float32),
        "b2": np.zeros(OUT, np.float32),
    }
    return {"X": X, "labels": labels}, params


def _batches(n_samples: int, steps: int) -> list[slice]:
    per_epoch = -(-n_samples // BATCH)
    return [
        slice((s % per_epoch) * BATCH, min((s % per_epoch + 1) * BATCH, n_samples))
        for s in range(steps)
    ]


def numpy_train(data: dict, params: dict, steps: int) -> dict[str, np.ndarray]:
    p = {k: v.copy() for k, v in params.items()}
    X, labels = data["X"], data["labels"]
    lr = np.float32(LR)
    for sl in _batches(len(X), steps):
        x, y = X[sl], labels[sl]
        h = np.tanh(x @ p["W1"] + p["b1"])
        logits = h @ p["W2"] + p["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probs = e / e.sum(axis=1, keepdims=True)
        probs[np.arange(len(y)), y] -= 1
        g_logits = probs / np.float32(len(y))
        g_h = (g_logits @ p["W2"].T) * (1 - h * h)
        p["W2"] -= lr * (h.T @ g_logits)
        p["b2"] -= lr * g_logits.sum(0)
        p["W1"] -= lr * (x.T @ g_h)
        p["b1"] -= lr * g_h.sum(0)
    return p


def torch_trainer(data: dict, params: dict) -> Callable[[int], dict] | None:
    try:
        import torch
    except ImportError:
        return None
    X, labels = torch.from_numpy(data["X"]), torch.from_numpy(data["labels"])

    def run(steps: int) -> dict:
        p = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
        opt = torch.optim.SGD(list(p.values()), lr=LR)
        for sl in _batches(len(X), steps):
            logits = torch.tanh(X[sl] @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
            loss = torch.nn.functional.cross_entropy(logits, labels[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {k: v.detach().numpy() for k, v in p.items()}

    return run


def jax_trainer(data: dict, params: dict) -> Callable[[int], dict] | None:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    X, labels = jnp.asarray(data["X"]), jnp.asarray(data["labels"])

    def loss_fn(p: dict, x: Any, y: Any) -> Any:
        logits = jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(p: dict, x: Any, y: Any) -> dict:
        g = jax.grad(loss_fn)(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - jnp.float32(LR) * b, p, g)

    def run(steps: int) -> dict:
        p = {k: jnp.asarray(v) for k, v in params.items()}
        for sl in _batches(len(X), steps):
            p = step(p, X[sl], labels[sl])
        return {k: np.asarray(jax.block_until_ready(v)) for k, v in p.items()}

    return run


def model_graph() -> Any:
    import gradserve_client as gs

    g = gs.Graph()
    X = g.input("X", shape=(-1, IN), dtype="float32")
    labels = g.input("labels", shape=(-1,), dtype="int64")
    W1 = g.input("W1", shape=(IN, HIDDEN), dtype="float32")
    b1 = g.input("b1", shape=(HIDDEN,), dtype="float32")
    W2 = g.input("W2", shape=(HIDDEN, OUT), dtype="float32")
    b2 = g.input("b2", shape=(OUT,), dtype="float32")
    g.output("loss", gs.cross_entropy(gs.tanh(X @ W1 + b1) @ W2 + b2, labels))
    return g


def _train_kwargs(method: Callable[..., Any], steps: int) -> dict[str, Any]:
    import gradserve_client as gs

    params = inspect.signature(method).parameters
    kwargs: dict[str, Any] = {
        "optimizer": gs.SGD(lr=LR),
        "batch_size": BATCH,
        "shuffle": False,
    }
    for name in ("max_steps", "steps"):
        if name in params:
            kwargs[name] = steps
            break
    else:
        kwargs["epochs"] = -(-steps // -(-SAMPLES // BATCH))
    if "checkpoint_every" in params:
        kwargs["checkpoint_every"] = None
    return kwargs


def gradserve_trainer(
    data: dict,
    params: dict,
    client_factory: Callable[[], Any],
    first_step: list[float],
    report_interval: float | None = None,
) -> Callable[[int], tuple[dict, int]]:
    """A run of `client.train` (with this `report_interval`; None: the SDK's default); appends
    the seconds until the first step event to `first_step` (upload, compilation and stream
    set-up)."""
    g = model_graph()

    def run(steps: int) -> tuple[dict, int]:
        with ExitStack() as stack:
            t0 = time.perf_counter()
            client = client_factory()
            if hasattr(client, "__enter__"):
                client = stack.enter_context(client)
            kwargs = _train_kwargs(client.train, steps)
            if report_interval is not None:
                kwargs["report_interval"] = report_interval
            r = client.train(g, loss="loss", params=params, data=data, **kwargs)
            done = 0
            for _ in r:
                if done == 0:
                    first_step.append(time.perf_counter() - t0)
                done += 1
            return dict(r.params), done

    return run


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FreshServer:
    """A gradserve server restarted (untimed) before each streamed run, so that every run
    pays for its dataset upload and graph compilation: nothing is cached from the last one."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.target = ""
        self.pid = 0

    def prepare(self) -> None:
        from bench.servers import gradserve_command, started_server

        self._stack.close()
        self._stack = ExitStack()
        started = self._stack.enter_context(started_server(gradserve_command()))
        self.target, self.pid = started.target, started.proc.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def close(self) -> None:
        self._stack.close()


def run(settings: Settings) -> list[Row]:
    steps = 20 if settings.quick else 300
    samples = 1024 if settings.quick else SAMPLES
    rounds = 1 if settings.quick else 5
    data, params = make_data(samples)
    reference = numpy_train(data, params, steps)
    runners: dict[str, Callable[[int], Any]] = {}
    prepare: dict[str, Callable[[], None]] = {}  # untimed set-up before each run
    server_cpu: dict[str, Callable[[], float]] = {}  # CPU seconds of a contender's server
    first_step: dict[str, list[float]] = {GS_STREAM: [], GS_LOCAL: []}
    notes: dict[str, str] = {}

    def check(name: str, fn: Callable[[int], Any] | None) -> None:
        if fn is None:
            notes[name] = "not installed"
            return
        try:
            out = fn(steps)
            got = out[0] if isinstance(out, tuple) else out
            bad = [
                k for k in reference if not np.allclose(got[k], reference[k], rtol=2e-3, atol=2e-4)
            ]
            if bad:
                notes[name] = (
                    f"parameters differ from the numpy loop ({', '.join(bad)}); timed anyway"
                )
            runners[name] = fn
        except Exception as exc:
            notes[name] = f"failed: {type(exc).__name__}: {exc}"[:200]

    with ExitStack() as stack:
        try:
            import gradserve_client as gs
        except Exception as exc:
            gs = None
            notes[GS_STREAM] = notes[GS_LOCAL] = f"SDK import failed: {exc}"
        if gs is not None:
            from bench.servers import ServerUnavailable

            try:
                server = FreshServer()
                stack.callback(server.close)
                server.prepare()

                def client() -> Any:  # the server listens on a new port after each restart
                    return gs.Client(server.target)

                for name, interval in ((GS_STREAM, None), (GS_STREAM_EACH, 0.0)):
                    prepare[name] = server.prepare
                    server_cpu[name] = server.cpu_seconds
                    first = first_step.setdefault(name, [])
                    check(name, gradserve_trainer(data, params, client, first, interval))
            except ServerUnavailable as exc:
                notes[GS_STREAM] = notes[GS_STREAM_EACH] = f"server not available: {exc}"
            check(GS_LOCAL, gradserve_trainer(data, params, gs.LocalClient, first_step[GS_LOCAL]))
        check(TORCH, torch_trainer(data, params))
        check(JAX, jax_trainer(data, params))
        check(NUMPY, lambda n: numpy_train(data, params, n))

        times: dict[str, list[float]] = {k: [] for k in runners}
        cpu: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(rounds):
            for name, fn in runners.items():
                if name in prepare:
                    prepare[name]()
                other = server_cpu.get(name, lambda: 0.0)
                c0, s0, t0 = time.process_time(), other(), time.perf_counter()
                fn(steps)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0 + other() - s0)

    figures: dict[str, float | None] = dict.fromkeys(
        [GS_STREAM, GS_STREAM_EACH, GS_LOCAL, TORCH, JAX, NUMPY]
    )
    spread: dict[str, float] = {}
    for name, values in times.items():
        figures[name] = steps / statistics.median(values)
        spread[name] = relative_iqr(values)
    for name, values in cpu.items():
        per_step = statistics.median(values) / steps
        where = " (client and server)" if name in server_cpu else ""
        notes[name] = f"{notes.get(name, '')} CPU {per_step * 1e3:.2f} ms/step{where}".strip()
    for name, values in first_step.items():
        timed = values[1:]  # the first was the untimed correctness run
        if timed and name in times:
            first = statistics.median(timed)
            steady = (steps - 1) / (statistics.median(times[name]) - first)
            what = " (upload, compile, stream set-up)" if name == GS_STREAM else ""
            notes[name] = (
                f"{notes.get(name, '')} first step after {first * 1e3:.0f} ms{what}; "
                f"then {steady:.0f} steps/s"
            ).strip()
    workload = f"train MLP {IN}-{HIDDEN}-{OUT} f32, batch {BATCH}, {steps} steps"
    stream = Row(
        "W5",
        workload + " (streamed)",
        "steps/s",
        GS_STREAM,
        TORCH,
        "≥ 1.0× torch eager steps/s",
        1.0,
        higher_is_better=True,
        figures=figures,
        spread=spread,
        notes=notes,
    )
    local = Row(
        "W5b",
        "  (same run) LocalClient.train vs numpy loop",
        "steps/s",
        GS_LOCAL,
        NUMPY,
        "≥ 0.85× numpy loop steps/s",
        0.85,
        higher_is_better=True,
        figures={k: figures[k] for k in (GS_LOCAL, NUMPY)},
        notes={k: v for k, v in notes.items() if k in (GS_LOCAL, NUMPY)},
    )
    return [stream, local]
