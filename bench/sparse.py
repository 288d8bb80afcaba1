"""Structured and second-order workloads S1-S3, H1-H2, float64, against JAX, sparsejac, PyTorch.

gradserve runs through the core API (`jacobian`, `hessian`, `hvp`) with the program built
once; "warm" means the pattern, the colouring and the compiled passes are cached (a second
call of the same request), which is what a server sees from the second request on. The
cold figures (detection plus colouring on a fresh program) are rows of their own.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.core import GS_CORE, _checked, _guard, _jax, _row, _torch, missing, mlp_data
from bench.harness import Contender, Row, Settings, time_interleaved

# ----------------------------------------------------------------------------------------------
# The problems, as core Programs (the tests use them too)


def _program(inputs: dict[str, tuple[int, ...]], nodes: list[tuple], outputs: tuple) -> Any:
    from gradserve.autodiff import GraphDef, InputDef, NodeDef, Program

    return Program.build(
        GraphDef(
            tuple(InputDef(n, "float64", s) for n, s in inputs.items()),
            tuple(NodeDef(n[0], n[1], n[2], n[3] if len(n) > 3 else {}) for n in nodes),
            outputs,
        )
    )


def _const(name: str, value: float) -> tuple:
    return (name, "constant", (), {"value": np.array(value)})


def tridiagonal(n: int) -> Any:
    """y_i = x_{i-1} - 2 x_i + x_{i+1} + sin(x_i) x_{i+1}, zero beyond the ends."""
    nodes = [
        ("left", "slice", ("x",), {"index": ":-1"}),
        ("right", "slice", ("x",), {"index": "1:"}),
        ("z", "zeros", (), {"shape": (1,), "dtype": "float64"}),
        ("prev", "concatenate", ("z", "left")),
        ("next", "concatenate", ("right", "z")),
        _const("two", -2.0),
        ("mid", "multiply", ("x", "two")),
        ("s", "sin", ("x",)),
        ("sn", "multiply", ("s", "next")),
        ("a", "add", ("prev", "mid")),
        ("b", "add", ("a", "next")),
        ("y", "add", ("b", "sn")),
    ]
    return _program({"x": (n,)}, nodes, ("y",))


def tridiagonal_numpy(x: np.ndarray) -> np.ndarray:
    nxt = np.r_[x[1:], 0.0]
    return np.r_[0.0, x[:-1]] - 2 * x + nxt + np.sin(x) * nxt


BRUSSELATOR_ALPHA = 0.02


def brusselator(n: int) -> Any:
    """The 2-D Brusselator residual on an n x n periodic grid, x = (u, v) of shape (2, n, n):
    f_u = 1 + u^2 v - 4.4 u + a lap(u),  f_v = 3.4 u - u^2 v + a lap(v), a = 0.02 (n + 1)^2."""
    nodes: list[tuple] = []

    def roll(src: str, shift: int, axis: int) -> str:
        """numpy.roll by +-1 along `axis`: two slices, concatenated."""
        items = ["-1:", ":-1"] if shift > 0 else ["1:", ":1"]
        parts = []
        for k, item in enumerate(items):
            parts.append(f"{src}_r{shift}{axis}_{k}")
            nodes.append((parts[-1], "slice", (src,), {"index": ",".join([":"] * axis + [item])}))
        nodes.append((f"{src}_roll{shift}{axis}", "concatenate", tuple(parts), {"axis": axis}))
        return nodes[-1][0]

    def scaled_laplacian(src: str) -> str:
        r = [roll(src, s, a) for s in (1, -1) for a in (0, 1)]
        nodes.extend(
            [
                (f"{src}_s1", "add", (r[0], r[1])),
                (f"{src}_s2", "add", (r[2], r[3])),
                (f"{src}_s", "add", (f"{src}_s1", f"{src}_s2")),
                (f"{src}_4", "multiply", (src, "minus4")),
                (f"{src}_lap", "add", (f"{src}_s", f"{src}_4")),
                (f"{src}_alap", "multiply", (f"{src}_lap", "alpha")),
            ]
        )
        return nodes[-1][0]

    nodes += [
        ("u", "slice", ("x",), {"index": "0"}),
        ("v", "slice", ("x",), {"index": "1"}),
        _const("minus4", -4.0),
        _const("alpha", BRUSSELATOR_ALPHA * (n + 1) ** 2),
        _const("c44", 4.4),
        _const("c34", 3.4),
        _const("one", 1.0),
        ("uu", "multiply", ("u", "u")),
        ("uuv", "multiply", ("uu", "v")),
        ("fu0", "multiply", ("u", "c44")),
        ("fu1", "subtract", ("uuv", "fu0")),
        ("fu2", "add", ("fu1", "one")),
        ("fv0", "multiply", ("u", "c34")),
        ("fv1", "subtract", ("fv0", "uuv")),
    ]
    lu, lv = scaled_laplacian("u"), scaled_laplacian("v")
    nodes += [("fu", "add", ("fu2", lu)), ("fv", "add", ("fv1", lv)), ("f", "stack", ("fu", "fv"))]
    return _program({"x": (2, n, n)}, nodes, ("f",))


def brusselator_numpy(x: np.ndarray, xp: Any = np) -> Any:
    """The same residual for a flat x, in numpy or jax.numpy."""
    n = math.isqrt(x.size // 2)
    u, v = x.reshape(2, n, n)
    a = BRUSSELATOR_ALPHA * (n + 1) ** 2

    def lap(w: Any) -> Any:
        rolls = [xp.roll(w, s, axis) for s in (1, -1) for axis in (0, 1)]
        return rolls[0] + rolls[1] + rolls[2] + rolls[3] - 4 * w

    uuv = u * u * v
    return xp.stack([1 + uuv - 4.4 * u + a * lap(u), 3.4 * u - uuv + a * lap(v)]).reshape(-1)


def rosenbrock(n: int) -> Any:
    """f = sum(100 (x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2): a tridiagonal Hessian."""
    nodes = [
        ("a", "slice", ("x",), {"index": "1:"}),
        ("b", "slice", ("x",), {"index": ":-1"}),
        ("b2", "square", ("b",)),
        ("d", "subtract", ("a", "b2")),
        ("d2", "square", ("d",)),
        _const("k", 100.0),
        ("t1", "multiply", ("d2", "k")),
        _const("one", 1.0),
        ("e", "subtract", ("one", "b")),
        ("e2", "square", ("e",)),
        ("t", "add", ("t1", "e2")),
        ("f", "sum", ("t",)),
    ]
    return _program({"x": (n,)}, nodes, ("f",))


def rosenbrock_hessian(x: np.ndarray) -> np.ndarray:
    n = x.size
    h = np.zeros((n, n))
    i = np.arange(n - 1)
    h[i, i] += 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
    h[i + 1, i + 1] += 200
    h[i, i + 1] = h[i + 1, i] = -400 * x[:-1]
    return h


MLP = ("X", "Y", "W1", "b1", "W2", "b2", "W3", "b3")


def mlp_loss() -> Any:
    """W4's loss: mse(tanh(tanh(X W1 + b1) W2 + b2) W3 + b3, Y), batch 512, 64-256-256-1."""
    d = mlp_data()
    nodes = [
        ("z1", "matmul", ("X", "W1")),
        ("a1", "add", ("z1", "b1")),
        ("h1", "tanh", ("a1",)),
        ("z2", "matmul", ("h1", "W2")),
        ("a2", "add", ("z2", "b2")),
        ("h2", "tanh", ("a2",)),
        ("z3", "matmul", ("h2", "W3")),
        ("pred", "add", ("z3", "b3")),
        ("loss", "mse", ("pred", "Y")),
    ]
    return _program({k: d[k].shape for k in MLP}, nodes, ("loss",))


# ----------------------------------------------------------------------------------------------
# Helpers


def _cold(make: Callable[[], Any], run: Callable[[Any], Any], repeats: int = 3) -> float:
    """Median seconds of `run(make())` on fresh programs: nothing cached (detection, colouring,
    transforms and compilation all included)."""
    times = []
    for _ in range(repeats):
        _clear_caches()
        program = make()
        t0 = time.perf_counter()
        run(program)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _clear_caches() -> None:
    from gradserve.autodiff.cache import PROGRAM_CACHE

    PROGRAM_CACHE.clear()  # compiled plans, derivative programs, patterns and colourings


def _warm_under_a_second(id_: str, what: str, call: Callable[[], Any], settings: Settings) -> Row:
    """A row timing gradserve alone (warm) against the absolute target of one second."""
    figures, spread, notes = time_interleaved([Contender(GS_CORE, call)], settings)
    return Row(
        id_, what, "s", GS_CORE, None, "< 1 s", 1.0, figures=figures, spread=spread, notes=notes
    )


def _plan_seconds(make: Callable[[], Any], of: str, wrt: str) -> tuple[float, int]:
    """(median seconds of detection plus colouring alone, cold; the number of colours)."""
    import sys

    jac = sys.modules["gradserve.autodiff.jacobian"]
    holder: dict[str, Any] = {}

    def run(program: Any) -> None:
        holder["plan"] = jac.colour_plan(program, of, wrt)

    seconds = _cold(make, run)
    return seconds, holder["plan"].count


def _absolute(id_: str, workload: str, seconds: float, target: str, limit: float | None) -> Row:
    return Row(id_, workload, "s", GS_CORE, None, target, limit, figures={GS_CORE: seconds})


def _csr_bytes(a: Any) -> int:
    return a.data.nbytes + a.indices.nbytes + a.indptr.nbytes


# ----------------------------------------------------------------------------------------------
# S1: Brusselator residual, N = 32 (2048 x 2048): sparse Jacobian, warm


def s1(settings: Settings, n: int = 32) -> list[Row]:
    from gradserve.autodiff import jacobian, jacobian_sparsity

    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 1, 2 * n * n)
    program = brusselator(n)
    feeds = {"x": x0.reshape(2, n, n)}
    _, dense = jacobian(program, feeds, ["f"], ["x"], mode="forward")
    expected = dense["f"]["x"].reshape(x0.size, x0.size)
    contenders = [
        _checked(
            GS_CORE,
            lambda: jacobian(program, feeds, ["f"], ["x"], sparse=True),
            lambda r: r[1]["f"]["x"].toarray(),
            expected,
            1e-12,
        )
    ]
    dense_anchor, sparse_anchor = "jax jit jacfwd (dense)", "sparsejac jacfwd (true pattern)"
    jax = _jax()
    if jax is not None:
        xj = jax.numpy.asarray(x0)

        def f(x: Any) -> Any:
            return brusselator_numpy(x, jax.numpy)

        jit_fwd = jax.jit(jax.jacfwd(f))
        contenders.append(
            _checked(
                dense_anchor, lambda: jit_fwd(xj).block_until_ready(), np.asarray, expected, 1e-12
            )
        )
        contenders.append(
            _guard(
                sparse_anchor, lambda: _sparsejac(jax, f, xj, jacobian_sparsity(program, "f", "x"))
            )
        )
        if contenders[-1].fn is not None:
            contenders[-1] = _checked(
                sparse_anchor, contenders[-1].fn, lambda r: np.asarray(r.todense()), expected, 1e-12
            )
    else:
        contenders += [missing(dense_anchor), missing(sparse_anchor)]
    workload = f"Brusselator {n}×{n} periodic, sparse J ({expected.shape[0]}², warm)"
    row = _row(
        "S1", workload, contenders, settings, dense_anchor, "≤ 0.1× jax.jit(jax.jacfwd)", 0.1
    )
    row_sparse = Row(
        "S1b",
        "  (same run) vs sparsejac given the pattern",
        "s",
        GS_CORE,
        sparse_anchor,
        "≤ 3× sparsejac",
        3.0,
        figures={k: row.figures.get(k) for k in (GS_CORE, sparse_anchor)},
        notes={k: v for k, v in row.notes.items() if k in (GS_CORE, sparse_anchor)},
    )
    seconds, colours = _plan_seconds(lambda: brusselator(n), "f", "x")
    cold = _absolute(
        "S1c", f"  detection + colouring, cold ({colours} colours)", seconds, "-", None
    )
    return [row, row_sparse, cold]


def _sparsejac(jax: Any, f: Callable[[Any], Any], x: Any, pattern: Any) -> Callable[[], Any]:
    import sparsejac
    from jax.experimental import sparse as jsparse

    sparsity = jsparse.BCOO.from_scipy_sparse(pattern.astype(np.float64))
    fn = jax.jit(sparsejac.jacfwd(f, sparsity=sparsity))
    return lambda: fn(x).block_until_ready()


# ----------------------------------------------------------------------------------------------
# S2: tridiagonal function, n = 10^5 (time) and 10^6 (peak memory)


def s2(settings: Settings) -> list[Row]:
    from gradserve.autodiff import jacobian

    rows = []
    n = 10**4 if settings.quick else 10**5
    x = np.random.default_rng(1).uniform(-1, 1, n)
    program = tridiagonal(n)
    call = lambda: jacobian(program, {"x": x}, ["y"], ["x"], sparse=True)  # noqa: E731
    rows.append(
        _warm_under_a_second("S2", f"tridiagonal n={n:.0e}, sparse J (warm)", call, settings)
    )
    cold = _cold(lambda: tridiagonal(n), lambda p: jacobian(p, {"x": x}, ["y"], ["x"], sparse=True))
    rows.append(_absolute("S2c", f"  first call, cold (n={n:.0e})", cold, "< 1 s", 1.0))
    seconds, colours = _plan_seconds(lambda: tridiagonal(n), "y", "x")
    rows.append(
        _absolute("S2d", f"  detection + colouring, cold ({colours} colours)", seconds, "-", None)
    )

    big = 10**5 if settings.quick else 10**6
    xb = np.random.default_rng(2).uniform(-1, 1, big)
    pb = tridiagonal(big)
    for label, warm in (("warm", True), ("cold", False)):
        if warm:
            jacobian(pb, {"x": xb}, ["y"], ["x"], sparse=True)
        else:
            _clear_caches()
            pb = tridiagonal(big)
        tracemalloc.start()
        _, jac = jacobian(pb, {"x": xb}, ["y"], ["x"], sparse=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = _csr_bytes(jac["y"]["x"])
        row = Row(
            f"S2m{label[0]}",
            f"  n={big:.0e}: peak traced memory / CSR result ({label})",
            "x",
            GS_CORE,
            None,
            "≤ 3× the CSR result",
            3.0,
            figures={GS_CORE: peak / size},
            ratio_override=peak / size,
        )
        row.notes[GS_CORE] = f"peak {peak / 2**20:.0f} MiB, CSR {size / 2**20:.0f} MiB"
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# S3: W3 (Jacobian of relu(W x + b) wrt x, W 256x512), through the structured seed


def s3(settings: Settings, m: int = 256, n: int = 512) -> Row:
    from gradserve.autodiff import jacobian

    rng = np.random.default_rng(1)
    W0, b0, x0 = rng.standard_normal((m, n)), rng.standard_normal(m), rng.standard_normal(n)
    expected = ((W0 @ x0 + b0) > 0)[:, None] * W0
    program = _program(
        {"W": (m, n), "b": (m,), "x": (n,)},
        [("h", "matmul", ("W", "x")), ("z", "add", ("h", "b")), ("y", "relu", ("z",))],
        ("y",),
    )
    feeds = {"W": W0, "b": b0, "x": x0}
    contenders = [
        _checked(
            GS_CORE,
            lambda: jacobian(program, feeds, ["y"], ["x"]),
            lambda r: r[1]["y"]["x"],
            expected,
            1e-12,
        )
    ]
    target = "jax jit jacrev"
    jax = _jax()
    if jax is not None:
        Wj, bj, xj = (jax.numpy.asarray(a) for a in (W0, b0, x0))
        jit_j = jax.jit(jax.jacrev(lambda x, W, b: jax.nn.relu(W @ x + b)))
        contenders.append(
            _checked(
                target, lambda: jit_j(xj, Wj, bj).block_until_ready(), np.asarray, expected, 1e-12
            )
        )
    else:
        contenders.append(missing(target))
    contenders.append(
        _checked(
            "numpy (hand)", lambda: ((W0 @ x0 + b0) > 0)[:, None] * W0, lambda r: r, expected, 0
        )
    )
    return _row(
        "S3",
        f"W3 with structure: J of relu(Wx+b), W {m}×{n}",
        contenders,
        settings,
        target,
        "≤ 0.5× jax.jit(jax.jacrev)",
        0.5,
    )


# ----------------------------------------------------------------------------------------------
# H1: Rosenbrock Hessians, n = 1000 dense and n = 10^5 sparse


def h1(settings: Settings, n: int = 1000) -> list[Row]:
    from gradserve.autodiff import hessian

    x0 = np.random.default_rng(3).uniform(-2, 2, n)
    program = rosenbrock(n)
    expected = rosenbrock_hessian(x0)
    contenders = [
        _checked(
            GS_CORE,
            lambda: hessian(program, {"x": x0}, "f", ["x"]),
            lambda r: r[1]["x"]["x"],
            expected,
            1e-10,
        )
    ]
    target = "jax jit hessian"
    jax = _jax()
    if jax is not None:
        jnp = jax.numpy

        def f(x: Any) -> Any:
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

        jit_h = jax.jit(jax.hessian(f))
        xj = jnp.asarray(x0)
        contenders.append(
            _checked(target, lambda: jit_h(xj).block_until_ready(), np.asarray, expected, 1e-10)
        )
    else:
        contenders.append(missing(target))
    row = _row(
        "H1",
        f"Rosenbrock n={n}, dense Hessian",
        contenders,
        settings,
        target,
        "≤ 1.5× jax.jit(jax.hessian)",
        1.5,
    )

    big = 10**4 if settings.quick else 10**5
    xb = np.random.default_rng(4).uniform(-2, 2, big)
    pb = rosenbrock(big)
    call = lambda: hessian(pb, {"x": xb}, "f", ["x"], sparse=True)  # noqa: E731
    warm = _warm_under_a_second(
        "H1s", f"Rosenbrock n={big:.0e}, sparse Hessian (warm)", call, settings
    )
    cold = _cold(lambda: rosenbrock(big), lambda p: hessian(p, {"x": xb}, "f", ["x"], sparse=True))
    return [row, warm, _absolute("H1c", "  first call, cold", cold, "< 1 s", 1.0)]


# ----------------------------------------------------------------------------------------------
# H2: HVP of the W4 MLP loss with respect to the 256x256 weight


# On a loaded machine two OpenBLAS threads spin on each other inside each 512x256x256 GEMM
# (the HVP's CPU time grows 4x): the same call on one BLAS thread shows what that costs.
GS_ONE_BLAS_THREAD = "gradserve core API, 1 BLAS thread"


def _one_blas_thread(call: Callable[[], Any]) -> Any:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return call()


def h2(settings: Settings) -> list[Row]:
    from gradserve.autodiff import hvp

    data = mlp_data()
    v0 = np.random.default_rng(5).standard_normal(data["W2"].shape)
    program = mlp_loss()
    contenders: list[Contender] = []
    torch_name, jax_name = "torch double backward", "jax jit jvp(grad)"
    torch = _torch()
    expected = None
    if torch is not None:
        t = {k: torch.from_numpy(data[k]) for k in MLP}
        tv = torch.from_numpy(v0)
        W2 = t["W2"].clone().requires_grad_(True)

        def torch_hvp() -> Any:
            h1_ = torch.tanh(t["X"] @ t["W1"] + t["b1"])
            h2_ = torch.tanh(h1_ @ W2 + t["b2"])
            loss = torch.mean((h2_ @ t["W3"] + t["b3"] - t["Y"]) ** 2)
            (g,) = torch.autograd.grad(loss, W2, create_graph=True)
            (hv,) = torch.autograd.grad(g, W2, grad_outputs=tv)
            return hv

        expected = torch_hvp().numpy()
    jax = _jax()
    if jax is not None:
        jnp = jax.numpy
        jd = {k: jnp.asarray(data[k]) for k in MLP}

        def loss_w2(W2: Any) -> Any:
            h1_ = jnp.tanh(jd["X"] @ jd["W1"] + jd["b1"])
            h2_ = jnp.tanh(h1_ @ W2 + jd["b2"])
            return jnp.mean((h2_ @ jd["W3"] + jd["b3"] - jd["Y"]) ** 2)

        jit_hvp = jax.jit(lambda W2, v: jax.jvp(jax.grad(loss_w2), (W2,), (v,))[1])
        vj = jnp.asarray(v0)
        if expected is None:
            expected = np.asarray(jit_hvp(jd["W2"], vj))
    feeds = {k: data[k] for k in MLP}
    gs_call = lambda: hvp(program, feeds, "loss", ["W2"], {"W2": v0})  # noqa: E731
    if expected is None:
        expected = gs_call()[1]["W2"]
    contenders.append(_checked(GS_CORE, gs_call, lambda r: r[1]["W2"], expected, 1e-9))
    contenders.append(
        _checked(
            GS_ONE_BLAS_THREAD,
            lambda: _one_blas_thread(gs_call),
            lambda r: r[1]["W2"],
            expected,
            1e-9,
        )
    )
    contenders.append(
        _checked(torch_name, torch_hvp, lambda r: r.numpy(), expected, 1e-9)
        if torch is not None
        else missing(torch_name)
    )
    if jax is not None:
        contenders.append(
            _checked(
                jax_name,
                lambda: jit_hvp(jd["W2"], vj).block_until_ready(),
                np.asarray,
                expected,
                1e-9,
            )
        )
    else:
        contenders.append(missing(jax_name))
    row = _row(
        "H2",
        "HVP of the W4 MLP loss wrt W2 (256×256)",
        contenders,
        settings,
        torch_name,
        "≤ 1.0× torch double backward",
        1.0,
    )
    row_jax = Row(
        "H2b",
        "  (same run) vs jax.jit(jvp(grad))",
        "s",
        GS_CORE,
        jax_name,
        "≤ 2× jax.jit(jvp(grad))",
        2.0,
        figures={k: row.figures.get(k) for k in (GS_CORE, jax_name)},
        notes={k: v for k, v in row.notes.items() if k in (GS_CORE, jax_name)},
    )
    return [row, row_jax]


WORKLOADS = {"S1": s1, "S2": s2, "S3": s3, "H1": h1, "H2": h2}
