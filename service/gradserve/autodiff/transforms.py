"""Differentiation as program transformation: `vjp` and `jvp` turn a Program into a Program.

The result is an ordinary Program, run by the same executor and itself differentiable, so
second derivatives come by composition. Results are cached by (program, of, wrt, batch), in
the byte-bounded program cache (`cache.py`).
Both passes are loops over the topologically ordered node list: no recursion anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gradserve.autodiff.cache import cached
from gradserve.autodiff.ir import (
    Cancel,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    TensorType,
    check_cancel,
)
from gradserve.autodiff.registry import OPS
from gradserve.autodiff.simplify import needed_by, simplified
from gradserve.autodiff.symbolic import Emitter, Sym, broadcast_to, lift, sum_to, zeros


@dataclass(frozen=True, slots=True)
class Derivative:
    """A derivative program and the names of its extra inputs and of its outputs.

    `program` takes the original inputs plus `seeds` (one per `of` for a VJP, one per `wrt` for
    a JVP) and returns the `values` of `of` followed by the `results` (gradients per `wrt` for a
    VJP, tangents per `of` for a JVP).
    """

    program: Program
    seeds: tuple[str, ...]
    values: tuple[str, ...]
    results: tuple[str, ...]


def check_targets(program: Program, of: Sequence[str], wrt: Sequence[str]) -> None:
    inputs = set(program.input_names)
    for field, names, known, what in (
        ("of", of, program.types, "a value"),
        ("wrt", wrt, inputs, "an input"),
    ):
        for name in names:
            if name not in known:
                raise GraphError(name, field, f"not {what} of the graph")
            if not program.types[name].is_float:
                dtype = program.types[name].dtype
                raise GraphError(name, field, f"is {dtype}: only floats have derivatives")


def _depends_on(program: Program, sources: Iterable[str]) -> set[str]:
    """The values reached from `sources` through differentiable ops."""
    active = set(sources)
    for node in program.nodes:
        if OPS[node.op].differentiable and any(s in active for s in node.inputs):
            active.add(node.name)
    return active


def active_values(program: Program, of: Iterable[str], wrt: Iterable[str]) -> set[str]:
    """The values on a path from `wrt` to `of`: those that carry (co)tangents."""
    return _depends_on(program, wrt) & needed_by(program.nodes, of)


def _finish(program: Program, em: Emitter, seeds: list[InputDef], outputs: list[str]) -> Program:
    """Assemble primal + emitted nodes, simplified (`simplify.py`: rules written one operand
    at a time repeat work) and without what the outputs do not need."""
    return simplified(
        program.inputs + tuple(seeds), (*program.nodes, *em.nodes), tuple(outputs), em.types
    )


def _distinct(em: Emitter, syms: list[Sym], taken: Iterable[str]) -> list[str]:
    """Output names, copying a value that would otherwise be listed twice."""
    seen = set(taken)
    names = []
    for sym in syms:
        if sym.name in seen:
            sym = em.emit("reshape", (sym,), {"shape": sym.shape})
        seen.add(sym.name)
        names.append(sym.name)
    return names


def _derivative(
    program: Program,
    em: Emitter,
    seeds: list[InputDef],
    of: tuple[str, ...],
    results: list[Sym | None],
    like: Sequence[str],
) -> Derivative:
    """The Derivative whose outputs are the values of `of`, then `results` (a symbolic zero,
    None, becomes zeros shaped like the matching value of `like`)."""
    syms = [
        r if r is not None else zeros(em.sym(n), program.types[n].shape)
        for r, n in zip(results, like, strict=True)
    ]
    names = _distinct(em, syms, of)
    return Derivative(
        _finish(program, em, seeds, [*of, *names]), tuple(s.name for s in seeds), of, tuple(names)
    )


def _check_rule_shape(value: Sym, expected: tuple[int, ...], name: str) -> None:
    # A rule returning the wrong shape would be broadcast silently when cotangents add up.
    if value.shape != expected:
        raise AssertionError(f"derivative rule bug at {name}: {value.shape} != {expected}")


def _missing_rule(node: NodeDef, mode: str) -> GraphError:
    return GraphError(
        node.name, "op", f"{node.op} has no {mode} rule (it cannot be differentiated)"
    )


@cached
def vjp(
    program: Program,
    of: tuple[str, ...],
    wrt: tuple[str, ...],
    batch: int | None = None,
    *,
    cancel: Cancel = None,
) -> Derivative:
    """Reverse mode: cotangents for `of` in, gradients for `wrt` out.

    With `batch`, every cotangent and gradient has a leading axis of that size (one row of a
    Jacobian per entry). Raises Cancelled when ``cancel`` (asked every CANCEL_EVERY_NODES
    nodes) says so.
    """
    check_targets(program, of, wrt)
    em = Emitter(dict(program.types), (batch,) if batch else ())
    active = active_values(program, of, wrt)
    seeds = [
        InputDef(em.fresh(f"ct_{o}_"), program.types[o].dtype, em.batch + program.types[o].shape)
        for o in of
    ]
    cotangents: dict[str, Sym] = {}

    def accumulate(name: str, ct: Sym) -> None:
        _check_rule_shape(ct, em.batch + program.types[name].shape, name)
        cotangents[name] = ct if name not in cotangents else cotangents[name] + ct

    for seed, name in zip(seeds, of, strict=True):
        em.types[seed.name] = TensorType(seed.shape, seed.dtype)
        if name in active or name in wrt:
            accumulate(name, em.sym(seed.name))
    for i, node in enumerate(reversed(program.nodes)):
        check_cancel(cancel, i)
        g = cotangents.pop(node.name, None)
        if g is None or node.name not in active:
            continue
        opdef = OPS[node.op]
        em.source = node.source
        xs = [em.sym(s) for s in node.inputs]
        ans = em.sym(node.name)
        needs = [s in active for s in node.inputs]
        if opdef.partials is not None:
            for x, need, partial in zip(xs, needs, opdef.partials, strict=True):
                if need and partial is not None:
                    ct = partial(g, ans, *xs, **node.attrs)
                    if ct is not None:
                        accumulate(x.name, sum_to(ct, x.shape))
            continue
        if opdef.vjp is None:
            raise _missing_rule(node, "VJP")
        for x, need, ct in zip(xs, needs, opdef.vjp(g, ans, *xs, **node.attrs), strict=True):
            if need and ct is not None:
                accumulate(x.name, ct)
    return _derivative(program, em, seeds, of, [cotangents.get(w) for w in wrt], wrt)


@cached
def jvp(
    program: Program,
    wrt: tuple[str, ...],
    of: tuple[str, ...],
    batch: int | None = None,
    *,
    cancel: Cancel = None,
) -> Derivative:
    """Forward mode: tangents for `wrt` in, tangents of `of` out (with an optional batch axis).
    Raises Cancelled when ``cancel`` (asked every CANCEL_EVERY_NODES nodes) says so."""
    check_targets(program, of, wrt)
    em = Emitter(dict(program.types), (batch,) if batch else ())
    needed = needed_by(program.nodes, of)
    seeds = [
        InputDef(em.fresh(f"tan_{w}_"), program.types[w].dtype, em.batch + program.types[w].shape)
        for w in wrt
    ]
    tangents: dict[str, Sym] = {}
    for seed, name in zip(seeds, wrt, strict=True):
        em.types[seed.name] = TensorType(seed.shape, seed.dtype)
        tangents[name] = em.sym(seed.name)
    for i, node in enumerate(program.nodes):
        check_cancel(cancel, i)
        if node.name not in needed:
            continue
        ts = [tangents.get(s) for s in node.inputs]
        if all(t is None for t in ts):
            continue
        opdef = OPS[node.op]
        if not opdef.differentiable:
            continue
        em.source = node.source
        xs = [em.sym(s) for s in node.inputs]
        ans = em.sym(node.name)
        if opdef.partials is not None:
            out = None
            for t, partial in zip(ts, opdef.partials, strict=True):
                if t is not None and partial is not None:
                    term = partial(lift(t, ans.ndim), ans, *xs, **node.attrs)
                    if term is not None:
                        out = term if out is None else out + term
            if out is not None:
                tangents[node.name] = broadcast_to(out, ans.shape)
            continue
        if opdef.jvp is None:
            raise _missing_rule(node, "JVP")
        out = opdef.jvp(ts, ans, *xs, **node.attrs)
        if out is not None:
            _check_rule_shape(out, em.batch + ans.shape, node.name)
            tangents[node.name] = out
    return _derivative(program, em, seeds, of, [tangents.get(o) for o in of], of)


@cached
def select(program: Program, outputs: tuple[str, ...]) -> Program:
    """The program restricted to `outputs` (any values of it), without the work they don't need."""
    for name in outputs:
        if name not in program.types:
            raise GraphError(name, "outputs", "not a value of the graph")
    if outputs == program.outputs:
        return program
    em = Emitter(dict(program.types))
    return _finish(program, em, [], _distinct(em, [em.sym(o) for o in outputs], ()))


def gradient(program: Program, of: str, wrt: Sequence[str], *, cancel: Cancel = None) -> Derivative:
    """The VJP of the scalar `of`: its one seed is fed 1 for the gradient."""
    check_targets(program, (of,), tuple(wrt))
    if program.types[of].shape != ():
        raise GraphError(of, "of", f"must be a scalar, got {program.types[of]}")
    return vjp(program, (of,), tuple(wrt), cancel=cancel)


def hvp_transform(
    program: Program, of: str, wrt: Sequence[str], *, cancel: Cancel = None
) -> Derivative:
    """Forward over reverse: the JVP of `gradient(program, of, wrt)`, whose seeds are the
    vectors v (one per `wrt`; the gradient's seed stays an input) and whose results are the
    tangents of `of` (the directional derivative) and of the gradients (H v)."""
    d = gradient(program, of, wrt, cancel=cancel)
    return jvp(d.program, tuple(wrt), (*d.values, *d.results), cancel=cancel)


KINDS = ("vjp", "jvp", "hvp")


def derivative_program(
    program: Program,
    of: str | Sequence[str],
    wrt: str | Sequence[str],
    kind: str,
    *,
    cancel: Cancel = None,
) -> Program:
    """The derivative as a Program of its own, to inspect or to run.

    - "vjp": the original inputs plus one cotangent per `of`; outputs the values of `of`, then
      the gradients per `wrt`;
    - "jvp": the original inputs plus one tangent per `wrt`; outputs the values of `of`, then
      their tangents;
    - "hvp" (a scalar `of`): the original inputs plus the gradient's seed (feed 1) and one
      vector v per `wrt`; outputs the value of `of` and its gradients, then the tangents of
      both: the directional derivative and H v per `wrt` (forward over reverse).
    """
    of = (of,) if isinstance(of, str) else tuple(of)
    wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    if kind == "vjp":
        return vjp(program, of, wrt, cancel=cancel).program
    if kind == "jvp":
        return jvp(program, wrt, of, cancel=cancel).program
    if kind == "hvp":
        if len(of) != 1:
            raise GraphError(",".join(of), "of", "an HVP needs one scalar output")
        return hvp_transform(program, of[0], wrt, cancel=cancel).program
    raise GraphError("", "kind", f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
