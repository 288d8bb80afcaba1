"""C1, C2, T1, W6: whole models, float32, against PyTorch eager in the same run.

| id | workload |
|---|---|
| C1 | LeNet-5-like CNN on 28x28, batch 64: loss gradient w.r.t. every parameter |
| C2 | the same CNN: saliency, the gradient of each sample's top logit w.r.t. the input |
| T1 | a pre-LN transformer block (D=64, 4 heads, T=32, batch 8): loss gradient, every parameter |
| W6 | training the CNN through the Train stream, 200 steps (steps/s, higher is better) |

The models are written once as gradserve graphs (the SDK) and once as torch functional code
with the same parameters; gradients are compared (on the scale of each) before anything is
timed. gradserve runs through `LocalClient` (C1, C2, T1: what a notebook user calls) and the
core API (the program compiled once), and through `Client.train` against a localhost server
(W6, counting the upload and the stream set-up, as W5 does).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np

from bench.core import GS, GS_CORE, _guard, _torch, local_client, missing, sdk, to_program
from bench.harness import Contender, Row, Settings, relative_iqr, time_interleaved

TORCH = "torch eager"
BATCH, CLASSES = 64, 10
# LeNet-5: conv 5x5 (6, 'same'), relu, maxpool 2, conv 5x5 (16), relu, maxpool 2, 400-120-84-10
CNN_SHAPES = {
    "c1w": (6, 1, 5, 5),
    "c1b": (6,),
    "c2w": (16, 6, 5, 5),
    "c2b": (16,),
    "f1w": (400, 120),
    "f1b": (120,),
    "f2w": (120, 84),
    "f2b": (84,),
    "f3w": (84, CLASSES),
    "f3b": (CLASSES,),
}
D, HEADS, T, TB, FF = 64, 4, 32, 8, 256
BLOCK_SHAPES = {
    "ln1s": (D,),
    "ln1b": (D,),
    "wq": (D, D),
    "wk": (D, D),
    "wv": (D, D),
    "wo": (D, D),
    "ln2s": (D,),
    "ln2b": (D,),
    "w1": (D, FF),
    "b1": (FF,),
    "w2": (FF, D),
    "b2": (D,),
}


def _params(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """torch's default initialisation scale: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.startswith("ln") and name.endswith("s"):
            out[name] = np.ones(shape, np.float32)
            continue
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        bound = 1 / np.sqrt(fan_in)
        out[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return out


def cnn_data(batch: int = BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
        "labels": rng.integers(0, CLASSES, batch),
    }


def cnn_logits(gs: Any, v: dict[str, Any]) -> Any:
    h = gs.max_pool(
        gs.relu(gs.conv(v["x"], v["c1w"], v["c1b"], pads=(2, 2, 2, 2))), (2, 2), strides=(2, 2)
    )
    h = gs.max_pool(gs.relu(gs.conv(h, v["c2w"], v["c2b"])), (2, 2), strides=(2, 2))
    h = gs.reshape(h, (-1, 400))
    h = gs.relu(h @ v["f1w"] + v["f1b"])
    h = gs.relu(h @ v["f2w"] + v["f2b"])
    return h @ v["f3w"] + v["f3b"]


def cnn_graph(batch: int = -1, saliency: bool = False) -> Any:
    """The CNN with its loss ("loss"), or with the saliency objective ("top_logit": the sum over
    the batch of each sample's logit at `top`, whose gradient w.r.t. x is every sample's
    saliency map)."""
    gs = sdk()
    g = gs.Graph()
    v = {"x": g.input("x", shape=(batch, 1, 28, 28), dtype="float32")}
    v |= {k: g.input(k, shape=s, dtype="float32") for k, s in CNN_SHAPES.items()}
    logits = cnn_logits(gs, v)
    if saliency:
        top = g.input("top", shape=(batch, 1), dtype="int64")
        g.output("logits", logits)
        g.output("top_logit", gs.sum(gs.take_along_axis(logits, top, axis=1)))
    else:
        labels = g.input("labels", shape=(batch,), dtype="int64")
        g.output("loss", gs.cross_entropy(logits, labels))
    return g


def torch_cnn_logits(torch: Any, x: Any, p: dict[str, Any]) -> Any:
    F = torch.nn.functional
    h = F.max_pool2d(F.relu(F.conv2d(x, p["c1w"], p["c1b"], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["c2w"], p["c2b"])), 2)
    h = h.reshape(-1, 400)
    h = F.relu(h @ p["f1w"] + p["f1b"])
    h = F.relu(h @ p["f2w"] + p["f2b"])
    return h @ p["f3w"] + p["f3b"]


def block_graph() -> Any:
    """A pre-LN transformer block: x + MHA(LN(x)), then + MLP(LN(.)) with GELU; loss = mean
    squared output."""
    gs = sdk()
    g = gs.Graph()
    x = g.input("x", shape=(TB, T, D), dtype="float32")
    p = {k: g.input(k, shape=s, dtype="float32") for k, s in BLOCK_SHAPES.items()}
    dh = D // HEADS

    def heads(a: Any) -> Any:  # (B, T, D) -> (B, H, T, dh)
        return gs.transpose(gs.reshape(a, (TB, T, HEADS, dh)), (0, 2, 1, 3))

    h = gs.layer_norm(x, p["ln1s"], p["ln1b"])
    q, k, v = (heads(h @ p[w]) for w in ("wq", "wk", "wv"))
    att = gs.softmax(q @ gs.transpose(k, (0, 1, 3, 2)) * np.float32(1 / np.sqrt(dh)), axis=-1)
    o = gs.reshape(gs.transpose(att @ v, (0, 2, 1, 3)), (TB, T, D))
    x = x + o @ p["wo"]
    h = gs.layer_norm(x, p["ln2s"], p["ln2b"])
    x = x + gs.gelu(h @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    g.output("loss", gs.mean(x * x))
    return g


def torch_block_loss(torch: Any, x: Any, p: dict[str, Any]) -> Any:
    F = torch.nn.functional
    dh = D // HEADS

    def heads(a: Any) -> Any:
        return a.reshape(TB, T, HEADS, dh).transpose(1, 2)

    h = F.layer_norm(x, (D,), p["ln1s"], p["ln1b"])
    q, k, v = (heads(h @ p[w]) for w in ("wq", "wk", "wv"))
    att = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(dh), dim=-1)
    x = x + (att @ v).transpose(1, 2).reshape(TB, T, D) @ p["wo"]
    h = F.layer_norm(x, (D,), p["ln2s"], p["ln2b"])
    x = x + F.gelu(h @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return (x * x).mean()


def _close(
    got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float = 2e-4
) -> list[str]:
    """The names whose float32 values (gradients, updates) differ from torch's by more than
    ``rtol`` of the largest of each."""
    return [
        k
        for k, e in expected.items()
        if np.abs(np.asarray(got[k]) - e).max() > rtol * max(np.abs(e).max(), 1e-30)
    ]


def _gradient_row(
    id_: str,
    what: str,
    settings: Settings,
    graph: Any,
    feeds: dict[str, np.ndarray],
    of: str,
    wrt: list[str],
    torch_objective: Callable[[Any, dict[str, Any]], Any] | None,
    target: str,
    limit: float,
) -> Row:
    """A row timing d `of` / d `wrt` in LocalClient, the core API and torch eager."""
    torch = _torch()
    expected: dict[str, np.ndarray] | None = None
    contenders: list[Contender] = []
    if torch is not None and torch_objective is not None:
        ts = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in feeds.items()}
        for k in wrt:
            ts[k].requires_grad_(True)

        def torch_eager() -> Any:
            out = torch_objective(torch, ts)
            return dict(zip(wrt, torch.autograd.grad(out, [ts[k] for k in wrt]), strict=True))

        expected = {k: g.numpy() for k, g in torch_eager().items()}
        contenders.append(Contender(TORCH, torch_eager))
    else:
        contenders.append(missing(TORCH))

    def checked(name: str, fn: Callable[[], dict[str, np.ndarray]]) -> Contender:
        if expected is not None:
            bad = _close(fn(), expected)
            if bad:
                return Contender(name, None, f"wrong result ({', '.join(bad)}): not timed")
        return Contender(name, fn)

    lc, why = local_client()
    if lc is not None:
        contenders.insert(0, checked(GS, lambda: lc.grad(graph, feeds, of=of, wrt=wrt)))
    else:
        contenders.insert(0, Contender(GS, None, why))

    def core() -> Callable[[], dict[str, np.ndarray]]:
        from gradserve.autodiff import value_and_grad

        vg = value_and_grad(to_program(graph), of, wrt)
        return lambda: vg(feeds)[1]

    c = _guard(GS_CORE, core)
    contenders.insert(1, checked(GS_CORE, c.fn) if c.fn is not None else c)
    figures, spread, notes = time_interleaved(contenders, settings)
    gs_name = GS if figures.get(GS) is not None else GS_CORE
    row = Row(id_, what, "s", gs_name, TORCH, target, limit, figures=figures, spread=spread)
    row.notes = notes
    return row


def _cnn_feeds(batch: int = BATCH) -> dict[str, np.ndarray]:
    return cnn_data(batch) | _params(CNN_SHAPES, 1)


def c1(settings: Settings) -> Row:
    feeds = _cnn_feeds()
    labels = feeds["labels"]

    def objective(torch: Any, t: dict[str, Any]) -> Any:
        logits = torch_cnn_logits(torch, t["x"], t)
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))

    return _gradient_row(
        "C1",
        f"CNN (LeNet-5) loss gradient, 10 parameters, batch {BATCH}",
        settings,
        cnn_graph(BATCH),
        feeds,
        "loss",
        list(CNN_SHAPES),
        objective,
        "≤ 1.5× torch eager",
        1.5,
    )


def c2(settings: Settings) -> Row:
    feeds = _cnn_feeds()
    del feeds["labels"]
    graph = cnn_graph(BATCH, saliency=True)
    # each sample's top class, as a saliency user would pick it
    placeholder = {"top": np.zeros((BATCH, 1), np.int64)}
    logits = sdk().LocalClient().evaluate(graph, feeds | placeholder)["logits"]
    feeds["top"] = top_t = logits.argmax(axis=1)[:, None]

    def objective(torch: Any, t: dict[str, Any]) -> Any:
        return torch_cnn_logits(torch, t["x"], t).gather(1, torch.from_numpy(top_t)).sum()

    return _gradient_row(
        "C2",
        f"CNN saliency: d top logit / d input, batch {BATCH}",
        settings,
        graph,
        feeds,
        "top_logit",
        ["x"],
        objective,
        "≤ 1.5× torch eager",
        1.5,
    )


def t1(settings: Settings) -> Row:
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((TB, T, D)).astype(np.float32)} | _params(BLOCK_SHAPES, 3)
    return _gradient_row(
        "T1",
        f"transformer block loss gradient (D={D}, {HEADS} heads, T={T}, batch {TB})",
        settings,
        block_graph(),
        feeds,
        "loss",
        list(BLOCK_SHAPES),
        lambda torch, t: torch_block_loss(torch, t["x"], t),
        "≤ 2× torch eager",
        2.0,
    )


# ----------------------------------------------------------------------------------------------
# W6: the CNN trained through the Train stream

W6_SAMPLES, W6_LR = 2048, 0.05
# float32 trajectories drift apart with the steps (conv gradients summed in another order):
# after 100 steps gradserve's and torch's updates differ by ~6 %, after 200 by more than torch
# with 1 and 2 threads differs from itself. After 50 steps they agree to 0.2 % or better.
W6_CHECKED_STEPS, W6_UPDATE_RTOL = 50, 1e-2


def _updates(trained: dict[str, np.ndarray], start: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: trained[k] - start[k] for k in start}


GS_STREAM = "gradserve Client.train (streamed)"
TORCH_SGD = "torch eager SGD"


def _torch_cnn_trainer(data: dict, params: dict) -> Callable[[int], dict] | None:
    torch = _torch()
    if torch is None:
        return None
    x, labels = torch.from_numpy(data["x"]), torch.from_numpy(data["labels"])

    def run(steps: int) -> dict:
        p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        opt = torch.optim.SGD(list(p.values()), lr=W6_LR)
        n = x.shape[0]
        for step in range(steps):
            start = (step * BATCH) % n
            xb, yb = x[start : start + BATCH], labels[start : start + BATCH]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(torch_cnn_logits(torch, xb, p), yb).backward()
            opt.step()
        return {k: v.detach().numpy() for k, v in p.items()}

    return run


def w6(settings: Settings) -> Row:
    from bench.servers import ServerUnavailable, gradserve_server

    steps = 20 if settings.quick else 200
    rounds = 1 if settings.quick else 3
    data = cnn_data(W6_SAMPLES, seed=4)
    params = _params(CNN_SHAPES, 5)
    gs = sdk()
    g_train = cnn_graph()
    notes: dict[str, str] = {}
    runners: dict[str, Callable[[int], Any]] = {}
    with ExitStack() as stack:
        try:
            target = stack.enter_context(gradserve_server())

            def streamed(n: int) -> dict:
                with gs.Client(target) as c:
                    run = c.train(
                        g_train,
                        loss="loss",
                        params=params,
                        data={"x": data["x"], "labels": data["labels"]},
                        optimizer=gs.SGD(lr=W6_LR),
                        batch_size=BATCH,
                        epochs=-(-n * BATCH // W6_SAMPLES),
                        max_steps=n,
                        shuffle=False,
                        checkpoint_every=None,
                    )
                    for _ in run:
                        pass
                    return dict(run.params)

            runners[GS_STREAM] = streamed
        except ServerUnavailable as exc:
            notes[GS_STREAM] = f"server not available: {exc}"
        torch_run = _torch_cnn_trainer(data, params)
        if torch_run is not None:
            runners[TORCH_SGD] = torch_run
        else:
            notes[TORCH_SGD] = "not installed"
        if len(runners) == 2:  # same data order, same formulas: the updates must agree
            checked = min(steps, W6_CHECKED_STEPS)
            got, want = (runners[k](checked) for k in (GS_STREAM, TORCH_SGD))
            bad = _close(_updates(got, params), _updates(want, params), W6_UPDATE_RTOL)
            if bad:
                differ = ", ".join(bad)
                notes[GS_STREAM] = f"updates differ from torch's after {checked} steps ({differ})"
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(rounds):
            for name, fn in runners.items():
                t0 = time.perf_counter()
                fn(steps)
                times[name].append(time.perf_counter() - t0)
    figures: dict[str, float | None] = dict.fromkeys([GS_STREAM, TORCH_SGD])
    spread = {}
    for name, values in times.items():
        figures[name] = steps / statistics.median(values)
        spread[name] = relative_iqr(values)
    return Row(
        "W6",
        f"train the CNN, batch {BATCH}, {steps} steps (streamed, upload counted)",
        "steps/s",
        GS_STREAM,
        TORCH_SGD,
        "≥ 0.7× torch eager steps/s",
        0.7,
        higher_is_better=True,
        figures=figures,
        spread=spread,
        notes=notes,
    )


def run(settings: Settings) -> list[Row]:
    return [c1(settings), c2(settings), t1(settings), w6(settings)]
