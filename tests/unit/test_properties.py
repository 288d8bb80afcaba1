"""Hypothesis property tests on random programs.

A strategy builds random valid programs from smooth element-wise ops, numpy broadcasting,
reductions (sum, mean), reshape, transpose and matmul, on random shapes. The derivative
computations must agree with each other:
- ⟨u, J v⟩ is the same through `jvp_values` and through `vjp_values`;
- `jacobian(mode="forward")` equals `jacobian(mode="reverse")`;
- chunked Jacobians (`chunk_size=1`, `2`) equal unchunked ones, in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gradserve.autodiff import (
    GraphDef,
    InputDef,
    NodeDef,
    Program,
    evaluate,
    jacobian,
    jvp_values,
    vjp,
    vjp_values,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Smooth on the whole real line, and bounded or slowly growing, so chains stay finite.
UNARY = ["sin", "cos", "tanh", "sigmoid", "softplus", "arctan", "arcsinh", "negative", "square"]
BINARY = ["add", "subtract", "multiply", "logaddexp"]
KINDS = ["unary", "binary", "binary", "reduce", "reshape", "transpose", "matmul", "matmul_self"]
RTOL, ATOL = 1e-9, 1e-11
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Case:
    program: Program
    feeds: dict[str, np.ndarray]
    out: str

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return repr(self.program)


def _broadcast_variant(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts with `shape`: some dims set to 1, some leading dims dropped."""
    drop = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else d for d in shape[drop:])


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


@st.composite
def programs(draw) -> Case:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    shapes = {"x": base}
    if draw(st.booleans()):
        shapes["w"] = _broadcast_variant(draw, base)
    inputs = tuple(InputDef(n, "float64", s) for n, s in shapes.items())
    pool: dict[str, tuple[int, ...]] = dict(shapes)
    nodes: list[NodeDef] = []

    def add(op: str, operands: tuple[str, ...], out_shape: tuple[int, ...], **attrs) -> str:
        name = f"v{len(nodes)}"
        nodes.append(NodeDef(name, op, operands, attrs))
        pool[name] = out_shape
        return name

    last = draw(st.sampled_from(sorted(pool)))
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(KINDS))
        # Mostly extend the latest value, so that programs get deep, not only wide.
        a = last if draw(st.booleans()) else draw(st.sampled_from(sorted(pool)))
        sa = pool[a]
        if kind == "unary":
            last = add(draw(st.sampled_from(UNARY)), (a,), sa)
        elif kind == "binary":
            b = draw(st.sampled_from(sorted(pool)))
            if not _broadcasts(sa, pool[b]):
                b = a
            pair = (a, b) if draw(st.booleans()) else (b, a)
            shape = np.broadcast_shapes(pool[pair[0]], pool[pair[1]])
            last = add(draw(st.sampled_from(BINARY)), pair, tuple(shape))
        elif kind == "reduce" and sa:
            axis = draw(st.integers(-len(sa), len(sa) - 1))
            keep = draw(st.booleans())
            shape = tuple(
                1 if i == axis % len(sa) else d
                for i, d in enumerate(sa)
                if keep or i != axis % len(sa)
            )
            op = draw(st.sampled_from(["sum", "mean"]))
            last = add(op, (a,), shape, axis=(axis,), keepdims=int(keep))
        elif kind == "reshape":
            shape = draw(st.sampled_from([(int(np.prod(sa)),), sa[::-1], (1, *sa)]))
            last = add("reshape", (a,), shape, shape=shape)
        elif kind == "transpose" and len(sa) >= 2:
            perm = tuple(draw(st.permutations(range(len(sa)))))
            last = add("transpose", (a,), tuple(sa[p] for p in perm), axes=perm)
        elif kind == "matmul" and sa:
            k = draw(st.integers(1, 3))
            c = add("constant", (), (sa[-1], k), value=rng.uniform(-1, 1, (sa[-1], k)))
            shape = (*sa[:-1], k) if len(sa) >= 2 else (k,)
            last = add("matmul", (a, c), shape)
        elif kind == "matmul_self" and len(sa) == 2:
            # a @ aᵀ: both operands of matmul depend on the same value.
            t = add("transpose", (a,), sa[::-1])
            last = add("matmul", (a, t), (sa[0], sa[0]))
    program = Program.build(GraphDef(inputs, tuple(nodes), (last,)))
    # The shapes tracked above must be what the core infers.
    for name, shape in pool.items():
        assert program.types[name].shape == shape, (name, shape, program.types[name])
    feeds = {n: rng.uniform(-1.5, 1.5, s) for n, s in shapes.items()}
    return Case(program, feeds, last)


def _wrt(case: Case) -> list[str]:
    return list(case.program.input_names)


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_jvp_and_vjp_agree_on_u_J_v(case, seed):
    p, feeds, out = case.program, case.feeds, case.out
    rng = np.random.default_rng(seed)
    value = evaluate(p, feeds)[out]
    assert np.all(np.isfinite(value))
    u = rng.standard_normal(p.types[out].shape)
    v = {w: rng.standard_normal(p.types[w].shape) for w in _wrt(case)}
    _, tangents = jvp_values(p, feeds, v, [out])
    _, grads = vjp_values(p, feeds, {out: u}, _wrt(case))
    lhs = np.sum(u * tangents[out])
    rhs = sum(np.sum(grads[w] * v[w]) for w in _wrt(case))
    scale = np.sum(np.abs(u) * np.abs(tangents[out])) + 1.0
    assert abs(lhs - rhs) <= RTOL * scale, (lhs, rhs)
    for w in _wrt(case):
        assert grads[w].shape == p.types[w].shape


@SETTINGS
@given(programs())
def test_forward_mode_equals_reverse_mode(case):
    p, feeds, out = case.program, case.feeds, case.out
    _, fwd = jacobian(p, feeds, [out], _wrt(case), mode="forward")
    _, rev = jacobian(p, feeds, [out], _wrt(case), mode="reverse")
    _, auto = jacobian(p, feeds, [out], _wrt(case))
    for w in _wrt(case):
        expected_shape = p.types[out].shape + p.types[w].shape
        assert fwd[out][w].shape == rev[out][w].shape == expected_shape
        np.testing.assert_allclose(fwd[out][w], rev[out][w], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(auto[out][w], rev[out][w], rtol=RTOL, atol=ATOL)


@SETTINGS
@given(programs(), st.sampled_from(["forward", "reverse"]))
def test_chunked_jacobian_equals_unchunked(case, mode):
    p, feeds, out = case.program, case.feeds, case.out
    _, whole = jacobian(p, feeds, [out], _wrt(case), mode=mode)
    for chunk in (1, 2):
        _, chunked = jacobian(p, feeds, [out], _wrt(case), mode=mode, chunk_size=chunk)
        for w in _wrt(case):
            np.testing.assert_allclose(
                chunked[out][w], whole[out][w], rtol=RTOL, atol=ATOL, err_msg=f"chunk {chunk}"
            )


@SETTINGS
@given(programs())
def test_jacobian_matches_vjp_rows(case):
    # Row i of J is the VJP of the i-th one-hot cotangent: ties jacobian() to vjp_values().
    p, feeds, out = case.program, case.feeds, case.out
    _, jac = jacobian(p, feeds, [out], _wrt(case), mode="forward")
    y_shape = p.types[out].shape
    m = int(np.prod(y_shape))
    for i in range(min(m, 4)):
        u = np.zeros(m)
        u[i] = 1
        _, grads = vjp_values(p, feeds, {out: u.reshape(y_shape)}, _wrt(case))
        for w in _wrt(case):
            row = jac[out][w].reshape(m, -1)[i]
            np.testing.assert_allclose(row, grads[w].ravel(), rtol=RTOL, atol=ATOL)


@SETTINGS
@given(programs())
def test_hessian_is_symmetric_and_both_modes_agree(case):
    # Second derivatives by composition: the Jacobian of the gradient program of sum(out).
    p, feeds, out = case.program, case.feeds, case.out
    nodes = (*p.nodes, NodeDef("total", "sum", (out,)))
    q = Program.build(GraphDef(p.inputs, nodes, ("total",)))
    first = vjp(q, ("total",), ("x",))
    grad = first.results[0]
    gfeeds = {**feeds, first.seeds[0]: np.array(1.0)}
    _, fwd = jacobian(first.program, gfeeds, [grad], ["x"], mode="forward")
    _, rev = jacobian(first.program, gfeeds, [grad], ["x"], mode="reverse")
    n = int(np.prod(p.types["x"].shape))
    h = fwd[grad]["x"].reshape(n, n)
    np.testing.assert_allclose(h, rev[grad]["x"].reshape(n, n), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(h, h.T, rtol=1e-8, atol=1e-10)
