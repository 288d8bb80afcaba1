"""Core workloads W1-W4 and M1, in-process, float64, against JAX, PyTorch, autograd and numpy.

gradserve runs through `gs.LocalClient` (the SDK's in-process client, the core alone) and, as a
second row, through the raw core API (`gradserve.autodiff.value_and_grad` / `jacobian`) with the
program built and compiled once. Every contender computes the same quantity from the same
inputs, and is checked once against hand-written numpy before it is timed.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.harness import Contender, Row, Settings, time_interleaved

GS = "gradserve LocalClient"
GS_CORE = "gradserve core API"


# ----------------------------------------------------------------------------------------------
# Optional anchors


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _jax() -> Any:
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy
    except ImportError:
        return None
    return jax


def _autograd() -> Any:
    try:
        import autograd
        import autograd.numpy
    except ImportError:
        return None
    return autograd


def missing(name: str) -> Contender:
    return Contender(name, None, "not installed")


# ----------------------------------------------------------------------------------------------
# gradserve: the SDK graph, LocalClient, and the same graph as a core Program


def sdk() -> Any:
    import gradserve_client as gs

    return gs


def local_client() -> tuple[Any, str]:
    """(a LocalClient, "") or (None, why not)."""
    try:
        gs = sdk()
    except Exception as exc:  # report, don't crash
        return None, f"SDK import failed: {exc}"
    try:
        return gs.LocalClient(), ""
    except Exception as exc:
        return None, f"LocalClient() failed: {type(exc).__name__}: {exc}"


def to_program(graph: Any) -> Any:
    """The core Program of an SDK graph, through its wire message (what the server does)."""
    from gradserve.autodiff import GraphDef, InputDef, NodeDef, Program
    from gradserve_client.proto import tensor_codec
    from gradserve_client.proto.attr_codec import attr_from_proto

    proto = graph.to_proto()
    inputs = tuple(
        InputDef(i.name, tensor_codec.dtype_name(i.dtype), tuple(i.shape)) for i in proto.inputs
    )
    nodes = tuple(
        NodeDef(n.name, n.op, tuple(n.inputs), {k: attr_from_proto(v) for k, v in n.attrs.items()})
        for n in proto.nodes
    )
    return Program.build(GraphDef(inputs, nodes, tuple(proto.outputs)))


def _guard(name: str, make: Callable[[], Callable[[], Any]]) -> Contender:
    """A contender whose set-up may fail: report why."""
    try:
        return Contender(name, make())
    except Exception as exc:
        return Contender(name, None, f"set-up failed: {type(exc).__name__}: {exc}"[:200])


def _checked(
    name: str, fn: Callable[[], Any], extract: Callable[[Any], Any], expected: Any, rtol: float
) -> Contender:
    """`fn` as a contender, after one call whose result must match `expected`."""
    try:
        got = extract(fn())
        if isinstance(expected, dict):
            bad = [k for k in expected if not np.allclose(np.asarray(got[k]), expected[k], rtol)]
        else:
            bad = [] if np.allclose(np.asarray(got), expected, rtol=rtol) else ["result"]
        if bad:
            return Contender(name, None, f"wrong result ({', '.join(bad)}): not timed")
    except Exception as exc:
        return Contender(name, None, f"failed: {type(exc).__name__}: {exc}"[:200])
    return Contender(name, fn)


def _row(
    id_: str,
    workload: str,
    contenders: list[Contender],
    settings: Settings,
    target_anchor: str,
    target: str,
    limit: float,
) -> Row:
    figures, spread, notes = time_interleaved(contenders, settings)
    gs_name = GS if figures.get(GS) is not None else GS_CORE
    row = Row(
        id_, workload, "s", gs_name, target_anchor, target, limit, figures=figures, spread=spread
    )
    row.notes = notes
    return row


# ----------------------------------------------------------------------------------------------
# W1: d/dx ln(sin(x^3)^2) at x = 0.7


def w1(settings: Settings) -> Row:
    x0 = 0.7
    expected = 6 * x0**2 * np.cos(x0**3) / np.sin(x0**3)
    contenders: list[Contender] = []

    def graph() -> Any:
        gs = sdk()
        g = gs.Graph()
        x = g.input("x", shape=())
        g.output("y", gs.log(gs.sin(x**3) ** 2))
        return g

    lc, why = local_client()
    if lc is not None:
        g = graph()
        contenders.append(
            _checked(
                GS, lambda: lc.grad(g, {"x": x0}, of="y", wrt="x"), lambda r: r, expected, 1e-9
            )
        )
    else:
        contenders.append(Contender(GS, None, why))

    def core() -> Callable[[], Any]:
        from gradserve.autodiff import value_and_grad

        vg = value_and_grad(to_program(graph()), "y", ["x"])
        return lambda: vg({"x": np.asarray(x0)})

    c = _guard(GS_CORE, core)
    if c.fn is not None:
        c = _checked(GS_CORE, c.fn, lambda r: r[1]["x"], expected, 1e-9)
    contenders.append(c)

    torch = _torch()
    if torch is not None:

        def torch_eager() -> Any:
            x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
            y = torch.log(torch.sin(x**3) ** 2)
            (gx,) = torch.autograd.grad(y, x)
            return y, gx

        contenders.append(
            _checked("torch eager", torch_eager, lambda r: r[1].item(), expected, 1e-9)
        )
    else:
        contenders.append(missing("torch eager"))

    jax = _jax()
    if jax is not None:
        jnp = jax.numpy

        def f(x: Any) -> Any:
            return jnp.log(jnp.sin(x**3) ** 2)

        jit_vg = jax.jit(jax.value_and_grad(f))
        eager_vg = jax.value_and_grad(f)
        contenders.append(
            _checked(
                "jax jit",
                lambda: jit_vg(x0)[1].block_until_ready(),
                float,
                expected,
                1e-9,
            )
        )
        contenders.append(
            _checked(
                "jax eager", lambda: eager_vg(x0)[1].block_until_ready(), float, expected, 1e-9
            )
        )
    else:
        contenders += [missing("jax jit"), missing("jax eager")]

    ag = _autograd()
    if ag is not None:
        anp = ag.numpy
        ag_vg = ag.value_and_grad(lambda x: anp.log(anp.sin(x**3) ** 2))
        contenders.append(_checked("autograd", lambda: ag_vg(x0), lambda r: r[1], expected, 1e-9))
    else:
        contenders.append(missing("autograd"))

    def numpy_hand() -> Any:
        x = np.float64(x0)
        s, c3 = np.sin(x**3), np.cos(x**3)
        return np.log(s**2), 6 * x**2 * c3 / s

    contenders.append(_checked("numpy (hand)", numpy_hand, lambda r: r[1], expected, 1e-9))
    return _row(
        "W1",
        "d/dx ln(sin(x³)²), x=0.7",
        contenders,
        settings,
        "torch eager",
        "≤ 1.0× torch eager",
        1.0,
    )


# ----------------------------------------------------------------------------------------------
# W2: dense Jacobian of sin(x)*exp(x) + x^2, x of size 2000


def w2(settings: Settings, n: int = 2000) -> Row:
    x0 = np.random.default_rng(0).uniform(-1, 1, n)
    expected = np.diag(np.cos(x0) * np.exp(x0) + np.sin(x0) * np.exp(x0) + 2 * x0)
    contenders: list[Contender] = []

    def graph() -> Any:
        gs = sdk()
        g = gs.Graph()
        x = g.input("x", shape=(n,))
        g.output("y", gs.sin(x) * gs.exp(x) + x**2)
        return g

    lc, why = local_client()
    if lc is not None:
        g = graph()
        contenders.append(
            _checked(
                GS, lambda: lc.jacobian(g, {"x": x0}, of="y", wrt="x"), lambda r: r, expected, 1e-9
            )
        )
    else:
        contenders.append(Contender(GS, None, why))

    def core() -> Callable[[], Any]:
        from gradserve.autodiff import jacobian

        prog = to_program(graph())
        return lambda: jacobian(prog, {"x": x0}, ["y"], ["x"])

    c = _guard(GS_CORE, core)
    if c.fn is not None:
        c = _checked(GS_CORE, c.fn, lambda r: r[1]["y"]["x"], expected, 1e-9)
    contenders.append(c)

    torch = _torch()
    target = "torch jacobian fwd-vec"
    if torch is not None:
        xt = torch.from_numpy(x0)

        def ft(x: Any) -> Any:
            return torch.sin(x) * torch.exp(x) + x**2

        def torch_fwd() -> Any:
            return torch.autograd.functional.jacobian(
                ft, xt, vectorize=True, strategy="forward-mode"
            )

        def torch_rev() -> Any:
            return torch.autograd.functional.jacobian(ft, xt, vectorize=True)

        contenders.append(_checked(target, torch_fwd, lambda r: r.numpy(), expected, 1e-9))
        contenders.append(
            _checked("torch jacobian rev-vec", torch_rev, lambda r: r.numpy(), expected, 1e-9)
        )
    else:
        contenders.append(missing(target))

    jax = _jax()
    if jax is not None:
        jnp = jax.numpy

        def fj(x: Any) -> Any:
            return jnp.sin(x) * jnp.exp(x) + x**2

        xj = jnp.asarray(x0)
        jit_j = jax.jit(jax.jacfwd(fj))
        eager_j = jax.jacfwd(fj)
        contenders.append(
            _checked(
                "jax jit jacfwd", lambda: jit_j(xj).block_until_ready(), np.asarray, expected, 1e-9
            )
        )
        contenders.append(
            _checked(
                "jax eager jacfwd",
                lambda: eager_j(xj).block_until_ready(),
                np.asarray,
                expected,
                1e-9,
            )
        )
    else:
        contenders += [missing("jax jit jacfwd")]

    ag = _autograd()
    if ag is not None and not settings.quick:
        anp = ag.numpy
        ag_j = ag.jacobian(lambda x: anp.sin(x) * anp.exp(x) + x**2)
        contenders.append(
            _checked("autograd jacobian", lambda: ag_j(x0), lambda r: r, expected, 1e-9)
        )

    def numpy_hand() -> Any:
        return np.diag(np.cos(x0) * np.exp(x0) + np.sin(x0) * np.exp(x0) + 2 * x0)

    contenders.append(_checked("numpy (hand)", numpy_hand, lambda r: r, expected, 1e-9))
    return _row(
        "W2",
        f"dense Jacobian of sin(x)·exp(x)+x², n={n}",
        contenders,
        settings,
        target,
        "≤ 1.0× torch jacobian (vectorize, forward-mode)",
        1.0,
    )


# ----------------------------------------------------------------------------------------------
# W3: Jacobian of relu(W x + b) with respect to x, W 256x512


def w3(settings: Settings, m: int = 256, n: int = 512) -> Row:
    rng = np.random.default_rng(1)
    W0, b0, x0 = rng.standard_normal((m, n)), rng.standard_normal(m), rng.standard_normal(n)
    expected = ((W0 @ x0 + b0) > 0)[:, None] * W0
    feeds = {"W": W0, "b": b0, "x": x0}
    contenders: list[Contender] = []

    def graph() -> Any:
        gs = sdk()
        g = gs.Graph()
        W = g.input("W", shape=(m, n))
        b = g.input("b", shape=(m,))
        x = g.input("x", shape=(n,))
        g.output("y", gs.relu(W @ x + b))
        return g

    lc, why = local_client()
    if lc is not None:
        g = graph()
        contenders.append(
            _checked(
                GS, lambda: lc.jacobian(g, feeds, of="y", wrt="x"), lambda r: r, expected, 1e-9
            )
        )
    else:
        contenders.append(Contender(GS, None, why))

    def core() -> Callable[[], Any]:
        from gradserve.autodiff import jacobian

        prog = to_program(graph())
        return lambda: jacobian(prog, feeds, ["y"], ["x"])

    c = _guard(GS_CORE, core)
    if c.fn is not None:
        c = _checked(GS_CORE, c.fn, lambda r: r[1]["y"]["x"], expected, 1e-9)
    contenders.append(c)

    target = "jax jit jacrev"
    jax = _jax()
    if jax is not None:
        jnp = jax.numpy
        Wj, bj, xj = jnp.asarray(W0), jnp.asarray(b0), jnp.asarray(x0)

        def fj(x: Any, W: Any, b: Any) -> Any:
            return jax.nn.relu(W @ x + b)

        jit_j = jax.jit(jax.jacrev(fj))
        eager_j = jax.jacrev(fj)
        contenders.append(
            _checked(
                target, lambda: jit_j(xj, Wj, bj).block_until_ready(), np.asarray, expected, 1e-9
            )
        )
        contenders.append(
            _checked(
                "jax eager jacrev",
                lambda: eager_j(xj, Wj, bj).block_until_ready(),
                np.asarray,
                expected,
                1e-9,
            )
        )
    else:
        contenders.append(missing(target))

    torch = _torch()
    if torch is not None:
        Wt, bt, xt = (torch.from_numpy(a) for a in (W0, b0, x0))

        def torch_rev() -> Any:
            return torch.autograd.functional.jacobian(
                lambda x: torch.relu(Wt @ x + bt), xt, vectorize=True
            )

        contenders.append(
            _checked("torch jacobian rev-vec", torch_rev, lambda r: r.numpy(), expected, 1e-9)
        )

    ag = _autograd()
    if ag is not None:
        anp = ag.numpy
        ag_j = ag.jacobian(lambda x: anp.maximum(W0 @ x + b0, 0.0))
        contenders.append(
            _checked("autograd jacobian", lambda: ag_j(x0), lambda r: r, expected, 1e-9)
        )

    def numpy_hand() -> Any:
        return ((W0 @ x0 + b0) > 0)[:, None] * W0

    contenders.append(_checked("numpy (hand)", numpy_hand, lambda r: r, expected, 1e-9))
    return _row(
        "W3",
        f"Jacobian of relu(Wx+b) wrt x, W {m}×{n}",
        contenders,
        settings,
        target,
        "≤ 1.5× jax.jit(jax.jacrev)",
        1.5,
    )


# ----------------------------------------------------------------------------------------------
# W4: gradient of the MSE loss of an MLP 64-256-256-1 (tanh), batch 512, wrt six parameters

PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")


def mlp_data(batch: int = 512, sizes: tuple[int, ...] = (64, 256, 256, 1)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    data = {
        "X": rng.standard_normal((batch, sizes[0])),
        "Y": rng.standard_normal((batch, sizes[-1])),
    }
    for i, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
        data[f"W{i}"] = rng.standard_normal((a, b)) / np.sqrt(a)
        data[f"b{i}"] = rng.standard_normal(b) * 0.1
    return data


def mlp_grad_numpy(d: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    h1 = np.tanh(d["X"] @ d["W1"] + d["b1"])
    h2 = np.tanh(h1 @ d["W2"] + d["b2"])
    pred = h2 @ d["W3"] + d["b3"]
    diff = pred - d["Y"]
    loss = np.mean(diff**2)
    g_pred = 2 * diff / diff.size
    g = {"W3": h2.T @ g_pred, "b3": g_pred.sum(0)}
    g_h2 = (g_pred @ d["W3"].T) * (1 - h2**2)
    g["W2"], g["b2"] = h1.T @ g_h2, g_h2.sum(0)
    g_h1 = (g_h2 @ d["W2"].T) * (1 - h1**2)
    g["W1"], g["b1"] = d["X"].T @ g_h1, g_h1.sum(0)
    return loss, g


def w4(settings: Settings) -> list[Row]:
    data = mlp_data()
    _, expected = mlp_grad_numpy(data)
    contenders: list[Contender] = []

    def graph() -> Any:
        gs = sdk()
        g = gs.Graph()
        v = {k: g.input(k, shape=a.shape) for k, a in data.items()}
        h1 = gs.tanh(v["X"] @ v["W1"] + v["b1"])
        h2 = gs.tanh(h1 @ v["W2"] + v["b2"])
        g.output("loss", gs.mse(h2 @ v["W3"] + v["b3"], v["Y"]))
        return g

    lc, why = local_client()
    if lc is not None:
        g = graph()
        contenders.append(
            _checked(
                GS,
                lambda: lc.grad(g, data, of="loss", wrt=list(PARAMS)),
                lambda r: r,
                expected,
                1e-8,
            )
        )
    else:
        contenders.append(Contender(GS, None, why))

    def core() -> Callable[[], Any]:
        from gradserve.autodiff import value_and_grad

        vg = value_and_grad(to_program(graph()), "loss", list(PARAMS))
        return lambda: vg(data)

    c = _guard(GS_CORE, core)
    if c.fn is not None:
        c = _checked(GS_CORE, c.fn, lambda r: r[1], expected, 1e-8)
    contenders.append(c)

    torch = _torch()
    if torch is not None:
        td = {k: torch.from_numpy(a) for k, a in data.items()}
        tparams = [td[k].clone().requires_grad_(True) for k in PARAMS]

        def torch_eager() -> Any:
            W1, b1, W2, b2, W3, b3 = tparams
            h1 = torch.tanh(td["X"] @ W1 + b1)
            h2 = torch.tanh(h1 @ W2 + b2)
            loss = torch.mean((h2 @ W3 + b3 - td["Y"]) ** 2)
            return loss, dict(zip(PARAMS, torch.autograd.grad(loss, tparams), strict=True))

        contenders.append(
            _checked(
                "torch eager",
                torch_eager,
                lambda r: {k: v.numpy() for k, v in r[1].items()},
                expected,
                1e-8,
            )
        )
    else:
        contenders.append(missing("torch eager"))

    jax = _jax()
    if jax is not None:
        jnp = jax.numpy
        jd = {k: jnp.asarray(a) for k, a in data.items()}
        jparams = {k: jd[k] for k in PARAMS}

        def loss_j(p: dict[str, Any], X: Any, Y: Any) -> Any:
            h1 = jnp.tanh(X @ p["W1"] + p["b1"])
            h2 = jnp.tanh(h1 @ p["W2"] + p["b2"])
            return jnp.mean((h2 @ p["W3"] + p["b3"] - Y) ** 2)

        jit_vg = jax.jit(jax.value_and_grad(loss_j))
        eager_vg = jax.value_and_grad(loss_j)

        def run_jit() -> Any:
            return jax.block_until_ready(jit_vg(jparams, jd["X"], jd["Y"]))

        def run_eager() -> Any:
            return jax.block_until_ready(eager_vg(jparams, jd["X"], jd["Y"]))

        extract = lambda r: {k: np.asarray(v) for k, v in r[1].items()}  # noqa: E731
        contenders.append(_checked("jax jit", run_jit, extract, expected, 1e-8))
        contenders.append(_checked("jax eager", run_eager, extract, expected, 1e-8))
    else:
        contenders += [missing("jax jit"), missing("jax eager")]

    ag = _autograd()
    if ag is not None:
        anp = ag.numpy

        def loss_ag(p: dict[str, Any]) -> Any:
            h1 = anp.tanh(data["X"] @ p["W1"] + p["b1"])
            h2 = anp.tanh(h1 @ p["W2"] + p["b2"])
            return anp.mean((h2 @ p["W3"] + p["b3"] - data["Y"]) ** 2)

        ag_vg = ag.value_and_grad(loss_ag)
        aparams = {k: data[k] for k in PARAMS}
        contenders.append(
            _checked("autograd", lambda: ag_vg(aparams), lambda r: r[1], expected, 1e-8)
        )
    else:
        contenders.append(missing("autograd"))

    contenders.append(
        _checked("numpy (hand)", lambda: mlp_grad_numpy(data), lambda r: r[1], expected, 1e-12)
    )
    row = _row(
        "W4",
        "MSE grad, MLP 64-256-256-1 tanh, batch 512",
        contenders,
        settings,
        "torch eager",
        "≤ 1.0× torch eager",
        1.0,
    )
    # The second target of W4 shares the same measurements.
    row_jax = Row(
        "W4b",
        "  (same run) vs jax.jit(jax.grad)",
        "s",
        row.gradserve,
        "jax jit",
        "≤ 1.5× jax.jit(jax.grad)",
        1.5,
        figures={k: row.figures[k] for k in (row.gradserve, "jax jit") if k in row.figures},
        notes={k: v for k, v in row.notes.items() if k in (row.gradserve, "jax jit")},
    )
    return [row, row_jax]


# ----------------------------------------------------------------------------------------------
# M1: peak memory of the 20000x20 Jacobian of a tall function, measured in fresh subprocesses

M1_M, M1_N = 20000, 20


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def m1_child(contender: str) -> dict[str, Any]:
    """Runs in a fresh process: the peak memory of one Jacobian call above the start."""
    import resource
    import tracemalloc

    rng = np.random.default_rng(3)
    A0 = rng.standard_normal((M1_M, M1_N)) / np.sqrt(M1_N)
    x0 = rng.standard_normal(M1_N)
    expected = (1 - np.tanh(A0 @ x0) ** 2)[:, None] * A0

    if contender in (GS, GS_CORE):
        gs = sdk()
        g = gs.Graph()
        A = g.input("A", shape=(M1_M, M1_N))
        x = g.input("x", shape=(M1_N,))
        g.output("y", gs.tanh(A @ x))
        if contender == GS:
            lc, why = local_client()
            if lc is None:
                return {"error": why}
            call = lambda: lc.jacobian(g, {"A": A0, "x": x0}, of="y", wrt="x")  # noqa: E731
            extract = lambda r: r  # noqa: E731
        else:
            from gradserve.autodiff import jacobian

            prog = to_program(g)
            call = lambda: jacobian(prog, {"A": A0, "x": x0}, ["y"], ["x"], mode="auto")  # noqa: E731
            extract = lambda r: r[1]["y"]["x"]  # noqa: E731
    elif contender == "torch jacobian fwd-vec":
        import torch

        At, xt = torch.from_numpy(A0), torch.from_numpy(x0)

        def call() -> Any:
            return torch.autograd.functional.jacobian(
                lambda x: torch.tanh(At @ x), xt, vectorize=True, strategy="forward-mode"
            )

        extract = lambda r: r.numpy()  # noqa: E731
    elif contender == "jax jit jacfwd":
        jax = _jax()
        jnp = jax.numpy
        Aj, xj = jnp.asarray(A0), jnp.asarray(x0)
        f = jax.jit(jax.jacfwd(lambda x, A: jnp.tanh(A @ x)))
        f(xj, Aj).block_until_ready()  # compile outside the measurement
        call = lambda: f(xj, Aj).block_until_ready()  # noqa: E731
        extract = np.asarray
    elif contender == "numpy (hand)":
        call = lambda: (1 - np.tanh(A0 @ x0) ** 2)[:, None] * A0  # noqa: E731
        extract = lambda r: r  # noqa: E731
    else:
        return {"error": f"unknown contender {contender}"}

    gc.collect()
    start = _rss_kib("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - t0
    peak = _rss_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ok = bool(np.allclose(extract(result), expected, rtol=1e-9))
    del result
    gc.collect()
    tracemalloc.start()
    call()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rss_above_start": (peak - start) * 1024,
        "tracemalloc_peak": traced_peak,
        "hwm_reset": reset,
        "seconds": elapsed,
        "correct": ok,
    }


def m1(settings: Settings) -> Row:
    result_bytes = M1_M * M1_N * 8
    names = [GS, GS_CORE, "torch jacobian fwd-vec", "jax jit jacfwd", "numpy (hand)"]
    figures: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    extra: dict[str, Any] = {"result_bytes": result_bytes}
    reps = 1 if settings.quick else 3
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(reps):  # interleaved, as everywhere
        for name in names:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.core", "m1-child", name],
                capture_output=True,
                text=True,
                timeout=300,
                env=os.environ.copy(),
            )
            try:
                out = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                out = {"error": err[:200]}
            runs[name].append(out)
    for name in names:
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            figures[name] = None
            notes[name] = runs[name][0].get("error", "failed")
            continue
        rss = sorted(r["rss_above_start"] for r in good)[len(good) // 2]
        traced = sorted(r["tracemalloc_peak"] for r in good)[len(good) // 2]
        figures[name] = float(rss)
        notes[name] = f"tracemalloc peak {traced / 2**20:.2f} MiB" + (
            "" if all(r["correct"] for r in good) else "; WRONG RESULT"
        )
        extra[name] = good
    gs_name = GS if figures.get(GS) is not None else GS_CORE
    gs_peak = figures.get(gs_name)
    row = Row(
        "M1",
        f"peak memory above start, {M1_M}×{M1_N} Jacobian, auto mode",
        "B",
        gs_name,
        None,
        f"≤ 2× result ({result_bytes / 2**20:.2f} MiB)",
        2.0,
        figures=figures,
        notes=notes,
        extra=extra,
    )
    if gs_peak is not None:
        row.ratio_override = gs_peak / result_bytes
    return row


WORKLOADS: dict[str, Callable[[Settings], Row | list[Row]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "M1": m1,
}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "m1-child":
        try:
            print(json.dumps(m1_child(sys.argv[2])))
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:200]}))
    else:
        sys.exit("usage: python -m bench.core m1-child CONTENDER")
