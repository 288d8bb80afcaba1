"""Argument handling, shared by every client: the user's names and values checked and converted
once (no I/O) into a `Call`, which the request builders and decoders of `_methods` read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ._decode import Array, one_or_dict, select
from ._graphs import GraphLike, GraphMeta, graph_meta
from .errors import InvalidArgument
from .proto import gradient_service_pb2 as pb
from .proto import tensor_codec

#: Names of outputs or inputs: one name, a list of names, or None for the default set.
Names: TypeAlias = "str | Sequence[str] | None"

MODES = {
    "auto": pb.JACOBIAN_MODE_AUTO,
    "forward": pb.JACOBIAN_MODE_FORWARD,
    "reverse": pb.JACOBIAN_MODE_REVERSE,
}


class InvalidInput(InvalidArgument, TypeError):
    """A value the SDK refuses before any call (a string array, say): INVALID_ARGUMENT, and
    also a ``TypeError``."""


def names(value: Names, default: Sequence[str], what: str) -> tuple[tuple[str, ...], bool]:
    """(the names, whether one name was given as a str)."""
    if value is None:
        return tuple(default), False
    if isinstance(value, str):
        return (value,), True
    out = tuple(value)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what}: expected names (str), got {n!r}")
    return out, False


def as_array(name: str, value: npt.ArrayLike, dtype: np.dtype[Any] | None, field: str) -> Array:
    """``value`` as an array fit to send. Python scalars and lists (anything but an ndarray)
    take the declared ``dtype``; string, object and other unsupported arrays are refused."""
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise _refuse(name, field, f"cannot convert {type(value).__name__}: {exc}") from None
    if array.dtype is dtype:  # the common case: nothing to check or cast
        return array
    try:
        tensor_codec.dtype_from_numpy(array.dtype)
    except TypeError as exc:
        if dtype is None or array.dtype.kind in "OSUVMmc":
            raise _refuse(name, field, str(exc)) from None
    if dtype is not None and array.dtype != dtype and not isinstance(value, np.ndarray):
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise _refuse(name, field, f"cannot cast {array.dtype.name} values to {dtype.name}")
        array = array.astype(dtype)
    return array


def _refuse(name: str, field: str, reason: str) -> InvalidInput:
    where = f'{field}["{name}"]'
    return InvalidInput(f"{where}: {reason}", field_violations=[(where, reason)])


def arrays(
    values: Mapping[str, npt.ArrayLike], dtypes: Mapping[str, np.dtype[Any]], field: str
) -> dict[str, Array]:
    """`as_array` over a mapping (inputs by input name, cotangents by output name, ...)."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{field}: expected a dict of name -> value, got {type(values).__name__}")
    return {n: as_array(n, v, dtypes.get(n), field) for n, v in values.items()}


def scalar_output(meta: GraphMeta, of: str, what: str = "grad") -> np.dtype[Any]:
    """The dtype of output ``of``, checked to be a scalar where the shape is known."""
    shape = meta.output_shapes.get(of)
    if shape is not None and shape != () and all(d >= 0 for d in shape):
        reason = (
            f"{what} needs a scalar output, but {of!r} has shape {shape}; "
            "use jacobian() or vjp() for non-scalar outputs"
        )
        raise InvalidArgument(reason, field_violations=[("of", reason)])
    return meta.output_dtypes.get(of, np.dtype("float64"))


def the_output(meta: GraphMeta, of: str | None, field: str = "of", what: str = "grad") -> str:
    """``of``, or the graph's only output when None; InvalidArgument naming ``field`` (what the
    caller wrote, not the cotangent a request carries for it) when ``of`` names no value."""
    if of is not None:
        if of not in meta.outputs and not _names_a_value(meta, of):
            reason = f"{of!r} names no output of the graph (its outputs: {list(meta.outputs)})"
            raise InvalidArgument(f"{field}: {reason}", field_violations=[(field, reason)])
        return of
    if len(meta.outputs) != 1:
        raise TypeError(f"{what}: the graph has outputs {list(meta.outputs)}; say which with of=")
    return meta.outputs[0]


def _names_a_value(meta: GraphMeta, name: str) -> bool:
    graph = meta.proto
    return any(n.name == name for n in graph.nodes) or any(i.name == name for i in graph.inputs)


def mode_enum(mode: str) -> int:
    """The wire JacobianMode of "auto", "forward" or "reverse"."""
    try:
        return MODES[mode]
    except KeyError:
        reason = f"unknown mode {mode!r}; use one of {', '.join(MODES)}"
        raise InvalidArgument(reason, field_violations=[("mode", reason)]) from None


#: The derivative programs `derivative_program` returns, by name.
KINDS = {
    "vjp": pb.DERIVATIVE_KIND_VJP,
    "jvp": pb.DERIVATIVE_KIND_JVP,
    "hvp": pb.DERIVATIVE_KIND_HVP,
}


class Call:
    """One call's arguments, resolved once for every client (no I/O): the graph, the inputs and
    the seeds (cotangents, tangents or the vectors of an HVP) as arrays, the names asked for,
    and how the result is shaped (an array when the names were given as a str, else a dict
    ordered as asked, of scipy sparse arrays with ``sparse``). ``mode`` is the Jacobian mode,
    or the kind of derivative program."""

    __slots__ = ("feeds", "meta", "mode", "of", "seeds", "single", "sparse", "wrt")

    def __init__(
        self,
        meta: GraphMeta,
        feeds: dict[str, Array],
        seeds: dict[str, Array],
        of: tuple[str, ...],
        wrt: tuple[str, ...],
        single: bool,
        mode: str = "auto",
        sparse: bool = False,
    ) -> None:
        self.meta, self.feeds, self.seeds = meta, feeds, seeds
        self.of, self.wrt, self.single, self.mode = of, wrt, single, mode
        self.sparse = bool(sparse)

    @property
    def wire_mode(self) -> int:
        """The wire JacobianMode of ``mode``."""
        return MODES[self.mode]

    def by_of(self, values: dict[str, Array]) -> Any:
        """Values by output name (jvp), shaped as asked."""
        return one_or_dict(values, self.of, self.single)

    def by_wrt(self, values: dict[str, Array]) -> Any:
        """Values by input name (grad, vjp), shaped as asked."""
        return one_or_dict(values, self.wrt, self.single)

    def jacobians(self, result: dict[str, dict[str, Any]]) -> Any:
        """J[of][wrt], shaped as asked."""
        return select(result, self.of, self.wrt, self.single)

    def hessians(self, result: dict[str, dict[str, Any]]) -> Any:
        """H[wrt][wrt], shaped as asked."""
        return select(result, self.wrt, self.wrt, self.single)


def evaluate_call(graph: GraphLike, inputs: Mapping[str, npt.ArrayLike], outputs: Names) -> Call:
    """The arguments of ``evaluate``; ``of`` holds the outputs asked for (() for all)."""
    meta = graph_meta(graph)
    wanted, _ = names(outputs, (), "outputs")
    return Call(meta, arrays(inputs, meta.input_dtypes, "inputs"), {}, wanted, (), False)


def jacobian_call(
    graph: GraphLike,
    inputs: Mapping[str, npt.ArrayLike] | None,
    of: Names,
    wrt: Names,
    mode: str = "auto",
    sparse: bool = False,
) -> Call:
    """The arguments of ``jacobian`` (``mode`` checked), and of ``jacobian_sparsity`` (whose
    inputs, only their shapes used, may be None)."""
    meta = graph_meta(graph)
    of_names, one_of = names(of, meta.outputs, "of")
    wrt_names, one_wrt = names(wrt, meta.float_inputs, "wrt")
    feeds = arrays(inputs or {}, meta.input_dtypes, "inputs")
    mode_enum(mode)
    return Call(meta, feeds, {}, of_names, wrt_names, one_of and one_wrt, mode, sparse)


def hessian_call(
    graph: GraphLike,
    inputs: Mapping[str, npt.ArrayLike],
    of: str | None,
    wrt: Names,
    sparse: bool = False,
    v: Mapping[str, npt.ArrayLike] | npt.ArrayLike | None = None,
) -> Call:
    """The arguments of ``hessian``, and of ``hvp`` (with ``v``: one array when ``wrt`` is one
    name, else a dict by input name; they are the seeds)."""
    meta = graph_meta(graph)
    of = the_output(meta, of, what="hessian")
    scalar_output(meta, of, "a second derivative")
    wrt_names, single = names(wrt, meta.float_inputs, "wrt")
    feeds = arrays(inputs, meta.input_dtypes, "inputs")
    if v is not None and single and not isinstance(v, Mapping):
        v = {wrt_names[0]: v}
    seeds = {} if v is None else arrays(v, meta.input_dtypes, "v")  # type: ignore[arg-type]
    return Call(meta, feeds, seeds, (of,), wrt_names, single, sparse=sparse)


def derivative_call(graph: GraphLike, of: Names, wrt: Names, kind: str) -> Call:
    """The arguments of ``derivative_program`` (``kind`` checked)."""
    if kind not in KINDS:
        reason = f"unknown kind {kind!r}; use one of {', '.join(KINDS)}"
        raise InvalidArgument(reason, field_violations=[("kind", reason)])
    meta = graph_meta(graph)
    of_names, _ = names(of, meta.outputs, "of")
    wrt_names, _ = names(wrt, meta.float_inputs, "wrt")
    return Call(meta, {}, {}, of_names, wrt_names, False, kind)


def grad_call(
    graph: GraphLike, inputs: Mapping[str, npt.ArrayLike], of: str | None, wrt: Names
) -> Call:
    """The arguments of ``grad``: a vjp of the scalar output ``of`` seeded with 1."""
    meta = graph_meta(graph)
    of = the_output(meta, of)
    seed = np.ones((), scalar_output(meta, of))
    return _vjp_call(meta, inputs, {of: seed}, wrt)


def vjp_call(
    graph: GraphLike,
    inputs: Mapping[str, npt.ArrayLike],
    cotangents: Mapping[str, npt.ArrayLike],
    wrt: Names,
) -> Call:
    """The arguments of ``vjp``: the cotangents are the seeds."""
    return _vjp_call(graph_meta(graph), inputs, cotangents, wrt)


def _vjp_call(
    meta: GraphMeta,
    inputs: Mapping[str, npt.ArrayLike],
    cotangents: Mapping[str, npt.ArrayLike],
    wrt: Names,
) -> Call:
    wrt_names, single = names(wrt, meta.float_inputs, "wrt")
    feeds = arrays(inputs, meta.input_dtypes, "inputs")
    seeds = arrays(cotangents, meta.output_dtypes, "cotangents")
    return Call(meta, feeds, seeds, (), wrt_names, single)


def jvp_call(
    graph: GraphLike,
    inputs: Mapping[str, npt.ArrayLike],
    tangents: Mapping[str, npt.ArrayLike],
    of: Names,
) -> Call:
    """The arguments of ``jvp``: the tangents are the seeds."""
    meta = graph_meta(graph)
    of_names, single = names(of, meta.outputs, "of")
    feeds = arrays(inputs, meta.input_dtypes, "inputs")
    seeds = arrays(tangents, meta.input_dtypes, "tangents")
    return Call(meta, feeds, seeds, of_names, (), single)
