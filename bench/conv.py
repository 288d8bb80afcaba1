"""K1-K3: conv-heavy micro-benchmarks, float32, against PyTorch eager in the same run.

Each workload is one layer's loss gradient, sum(tanh(conv(x, w) + b)) (K1, K2) or
sum(tanh(max_pool(x))) (K3), with respect to every float operand: the forward, the im2col
contraction and both halves of the backward (the transposed convolution for x, the correlation
for w). gradserve runs through the core API (`value_and_grad`, program built and compiled once);
torch through `torch.autograd.grad`. The gradients are compared (on the scale of each) before
timing.

| id | layer |
|---|---|
| K1 | LeNet conv2: x (64, 6, 14, 14), w (16, 6, 5, 5) |
| K2 | 3x3 'same' conv: x (8, 32, 32, 32), w (32, 32, 3, 3), pads 1 |
| K3 | 2x2 max-pool, stride 2: x (64, 16, 28, 28) |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.core import GS_CORE, _guard, _torch, missing
from bench.harness import Contender, Row, Settings, time_interleaved

TORCH = "torch eager"


def _program(x_shape, w_shape, attrs, pool: bool) -> Any:
    from gradserve.autodiff import GraphDef, InputDef, NodeDef, Program

    if pool:
        inputs = (InputDef("x", "float32", x_shape),)
        layer = NodeDef("h", "max_pool", ("x",), attrs)
    else:
        inputs = (
            InputDef("x", "float32", x_shape),
            InputDef("w", "float32", w_shape),
            InputDef("b", "float32", (w_shape[0],)),
        )
        layer = NodeDef("h", "conv", ("x", "w", "b"), attrs)
    nodes = (layer, NodeDef("t", "tanh", ("h",), {}), NodeDef("loss", "sum", ("t",), {}))
    return Program.build(GraphDef(inputs, nodes, ("loss",)))


def _workload(
    id_: str,
    what: str,
    settings: Settings,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...] | None,
    attrs: dict,
) -> Row:
    rng = np.random.default_rng(0)
    pool = w_shape is None
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    if not pool:
        feeds["w"] = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(
            np.float32
        )
        feeds["b"] = rng.standard_normal(w_shape[0]).astype(np.float32)
    names = list(feeds)
    contenders: list[Contender] = []

    def core() -> Callable[[], Any]:
        from gradserve.autodiff import value_and_grad

        vg = value_and_grad(_program(x_shape, w_shape, attrs, pool), "loss", names)
        return lambda: vg(feeds)

    torch = _torch()
    expected = None
    if torch is not None:
        import torch.nn.functional as F

        ts = {k: torch.tensor(v, requires_grad=True) for k, v in feeds.items()}

        def torch_eager() -> Any:
            if pool:
                h = F.max_pool2d(ts["x"], attrs["kernel_shape"], attrs["strides"])
            else:
                h = F.conv2d(ts["x"], ts["w"], ts["b"], padding=attrs.get("pads", [0])[0])
            loss = torch.tanh(h).sum()
            return loss, torch.autograd.grad(loss, [ts[k] for k in names])

        _, grads = torch_eager()
        expected = {k: g.numpy() for k, g in zip(names, grads, strict=True)}
        contenders.append(Contender(TORCH, torch_eager))
    c = _guard(GS_CORE, core)
    if c.fn is not None and expected is not None:
        # float32 sums over a batch: compare on the scale of each gradient, not per element.
        grads = c.fn()[1]
        bad = [
            k for k, e in expected.items() if np.abs(grads[k] - e).max() > 1e-4 * np.abs(e).max()
        ]
        if bad:
            c = Contender(GS_CORE, None, f"wrong result ({', '.join(bad)}): not timed")
    contenders.insert(0, c)
    if torch is None:
        contenders.append(missing(TORCH))
    figures, spread, notes = time_interleaved(contenders, settings)
    row = Row(id_, what, "s", GS_CORE, TORCH, "none (measured)", None, figures=figures)
    row.spread, row.notes = spread, notes
    return row


def run(settings: Settings) -> list[Row]:
    return [
        _workload(
            "K1", "conv 5x5 layer gradient (x, w, b)", settings, (64, 6, 14, 14), (16, 6, 5, 5), {}
        ),
        _workload(
            "K2",
            "conv 3x3 same layer gradient (x, w, b)",
            settings,
            (8, 32, 32, 32),
            (32, 32, 3, 3),
            {"pads": [1, 1, 1, 1]},
        ),
        _workload(
            "K3",
            "max_pool 2x2 gradient",
            settings,
            (64, 16, 28, 28),
            None,
            {"kernel_shape": [2, 2], "strides": [2, 2]},
        ),
    ]
