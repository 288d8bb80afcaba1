"""Shared test helpers: build small programs and check derivatives against central differences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from gradserve.autodiff import (
    GraphDef,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    evaluate,
    jacobian,
    jvp_values,
    vjp,
    vjp_values,
)
from gradserve.autodiff.executor import compile_program


def program(
    inputs: Mapping[str, tuple[Sequence[int], str] | Sequence[int]],
    nodes: Sequence[tuple[str, str, Sequence[str]] | tuple[str, str, Sequence[str], dict]],
    outputs: Sequence[str],
) -> Program:
    """Program.build from compact literals: inputs {name: shape or (shape, dtype)}."""
    specs = []
    for name, spec in inputs.items():
        if len(spec) == 2 and isinstance(spec[1], str):
            shape, dtype = spec
        else:
            shape, dtype = spec, "float64"
        specs.append(InputDef(name, dtype, tuple(shape)))
    defs = [NodeDef(n[0], n[1], tuple(n[2]), n[3] if len(n) > 3 else {}) for n in nodes]
    return Program.build(GraphDef(tuple(specs), tuple(defs), tuple(outputs)))


def op_program(
    op: str,
    shapes: Sequence[Sequence[int]],
    attrs: dict[str, Any] | None = None,
    dtype: str = "float64",
) -> Program:
    """One op applied to inputs x0, x1, ... of the given shapes; output 'y'."""
    names = [f"x{i}" for i in range(len(shapes))]
    return program(
        {n: (tuple(s), dtype) for n, s in zip(names, shapes, strict=True)},
        [("y", op, names, attrs or {})],
        ["y"],
    )


def check_graph_error(
    op: str,
    shapes: Sequence[Sequence[int]],
    attrs: dict[str, Any],
    field: str,
    dtype: str = "float64",
) -> None:
    """Building op_program(op, shapes, attrs) fails with a GraphError naming node y and field."""
    with pytest.raises(GraphError) as info:
        op_program(op, shapes, attrs, dtype)
    assert info.value.node == "y" and info.value.field == field, info.value


def numerical_jacobian(
    p: Program, feeds: Mapping[str, np.ndarray], of: str, wrt: str, eps: float = 1e-6
) -> np.ndarray:
    """Central differences, one input element at a time: shape of.shape + wrt.shape."""
    x = np.asarray(feeds[wrt], dtype=np.float64)
    out_shape = p.types[of].shape
    jac = np.zeros((*out_shape, x.size))
    for j in range(x.size):
        step = eps * max(1.0, abs(x.flat[j]))
        hi, lo = x.copy(), x.copy()
        hi.flat[j] += step
        lo.flat[j] -= step
        f_hi = evaluate(p, {**feeds, wrt: hi}, [of])[of]
        f_lo = evaluate(p, {**feeds, wrt: lo}, [of])[of]
        jac[..., j] = (f_hi - f_lo) / (2 * step)
    return jac.reshape(out_shape + x.shape)


def check_derivatives(
    p: Program,
    feeds: Mapping[str, np.ndarray],
    of: str = "y",
    wrt: Sequence[str] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    seed: int = 0,
) -> None:
    """VJP and JVP (plain and batched, i.e. both Jacobian modes) against central differences."""
    rng = np.random.default_rng(seed)
    wrt = [w for w in (wrt or p.input_names) if p.types[w].is_float]
    y_shape = p.types[of].shape
    for w in wrt:
        expected = numerical_jacobian(p, feeds, of, w)
        for mode in ("forward", "reverse"):
            _, jac = jacobian(p, feeds, [of], [w], mode=mode)
            np.testing.assert_allclose(
                jac[of][w], expected, rtol=rtol, atol=atol, err_msg=f"{mode} J d{of}/d{w}"
            )
        u = rng.standard_normal(y_shape)
        v = rng.standard_normal(p.types[w].shape)
        _, grads = vjp_values(p, feeds, {of: u}, [w])
        _, tangents = jvp_values(p, feeds, {w: v}, [of])
        flat = expected.reshape(int(np.prod(y_shape)), -1)
        np.testing.assert_allclose(
            grads[w].ravel(), u.ravel() @ flat, rtol=rtol, atol=atol, err_msg=f"vjp {w}"
        )
        np.testing.assert_allclose(
            tangents[of].ravel(), flat @ v.ravel(), rtol=rtol, atol=atol, err_msg=f"jvp {w}"
        )


def check_second_derivatives(
    p: Program,
    feeds: Mapping[str, np.ndarray],
    of: str = "y",
    wrt: str = "x0",
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Differentiate the derivative program: the Hessian of sum(of) w.r.t. `wrt`, both by
    reverse-over-reverse and forward-over-reverse, against central differences of the gradient."""
    y_shape = p.types[of].shape
    ones = np.ones(y_shape)
    first = vjp(p, (of,), (wrt,))
    grad_name = first.results[0]
    grad_feeds = {**feeds, first.seeds[0]: ones}

    def grad_at(x: np.ndarray) -> np.ndarray:
        return compile_program(first.program).run({**grad_feeds, wrt: x})[1]

    x = np.asarray(feeds[wrt], dtype=np.float64)
    expected = np.zeros(x.shape + x.shape)
    for j in range(x.size):
        step = 1e-5 * max(1.0, abs(x.flat[j]))
        hi, lo = x.copy(), x.copy()
        hi.flat[j] += step
        lo.flat[j] -= step
        expected.reshape((*x.shape, x.size))[..., j] = (grad_at(hi) - grad_at(lo)) / (2 * step)
    for mode in ("reverse", "forward"):
        _, hess = jacobian(first.program, grad_feeds, [grad_name], [wrt], mode=mode)
        np.testing.assert_allclose(
            hess[grad_name][wrt], expected, rtol=rtol, atol=atol, err_msg=f"{mode}-over-reverse"
        )
