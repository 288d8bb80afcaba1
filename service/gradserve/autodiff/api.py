"""What the server, the trainer and `LocalClient` call: values, VJPs, JVPs and gradients.

Every function takes a validated Program and a mapping of input arrays, checks the inputs once
at this boundary, and runs cached compiled programs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gradserve.autodiff import memory
from gradserve.autodiff.cache import cached
from gradserve.autodiff.executor import compile_program
from gradserve.autodiff.ir import DTYPES, Cancel, GraphError, Program, TensorType
from gradserve.autodiff.transforms import Derivative, jvp, select, vjp

Arrays = Mapping[str, np.ndarray]


# dtype objects by name: comparing them is cheap, reading `dtype.name` is not (a property).
_NP_DTYPES = {name: np.dtype(name) for name in DTYPES}


def check_array(
    name: str, value: object, expected: TensorType, field: str = "inputs"
) -> np.ndarray:
    """`value` as an array of the expected type; lossless casts only (int to float, say)."""
    array = np.asarray(value)
    if array.dtype != _NP_DTYPES[expected.dtype]:
        if array.dtype.kind in "OSUVMmc" or not np.can_cast(array.dtype, expected.dtype, "safe"):
            raise GraphError(
                name,
                f"{field}.dtype",
                f"got {array.dtype.name}, the graph declares {expected.dtype}",
            )
        array = array.astype(expected.dtype)
    if array.shape != expected.shape:
        raise GraphError(
            name, f"{field}.shape", f"got {list(array.shape)}, expected {list(expected.shape)}"
        )
    return array


Signature = tuple[tuple[str, np.dtype, tuple[int, ...]], ...]


@cached
def _signature(program: Program) -> Signature:
    """(input name, numpy dtype, shape) of each input of `program`."""
    types = program.types
    return tuple(
        (i.name, _NP_DTYPES[types[i.name].dtype], types[i.name].shape) for i in program.inputs
    )


def _exact(sig: Signature, inputs: Arrays) -> bool:
    """True when `inputs` are exactly the inputs of the program of signature `sig`, as arrays of
    their dtypes and shapes (what the server's codec decodes): then there is nothing to cast or
    explain."""
    if len(inputs) != len(sig):
        return False
    for name, dtype, shape in sig:
        array = inputs.get(name)
        if type(array) is not np.ndarray or array.dtype != dtype or array.shape != shape:
            return False
    return True


def check_inputs(program: Program, inputs: Arrays) -> dict[str, np.ndarray]:
    """`inputs` as arrays of the program's input types; GraphError naming the one at fault."""
    if _exact(_signature(program), inputs):
        return dict(inputs)
    unknown = set(inputs) - set(program.input_names)
    if unknown:
        raise GraphError(sorted(unknown)[0], "inputs", "not an input of the graph")
    checked = {}
    for spec in program.inputs:
        if spec.name in inputs:
            value = check_array(spec.name, inputs[spec.name], program.types[spec.name])
        elif spec.default is not None:
            value = spec.default
        else:
            raise GraphError(spec.name, "inputs", "missing a value for this input")
        checked[spec.name] = value
    return checked


class Evaluation:
    """Evaluating some values of a program, set up once per (program, outputs): the plan that
    computes them (selected and compiled) and the bytes of the results, known from their types.

    The program cache keeps it (`evaluation`) and counts its ``program`` and ``folded_bytes``.
    """

    __slots__ = ("executable", "folded_bytes", "names", "program", "result_bytes", "signature")

    def __init__(self, program: Program, outputs: tuple[str, ...], cancel: Cancel) -> None:
        target = select(program, outputs) if outputs else program
        self.program = program
        self.names = outputs or program.outputs
        self.executable = compile_program(target, cancel=cancel)
        self.folded_bytes = self.executable.folded_bytes
        self.result_bytes = sum(memory.nbytes(program.types[n]) for n in self.names)
        self.signature = _signature(program)

    def run(self, inputs: Arrays, cancel: Cancel = None) -> dict[str, np.ndarray]:
        """The values, by name; GraphError naming an input that does not fit."""
        feeds = inputs if _exact(self.signature, inputs) else check_inputs(self.program, inputs)
        return dict(zip(self.names, self.executable.run(feeds, cancel), strict=True))


@cached
def evaluation(program: Program, outputs: tuple[str, ...], *, cancel: Cancel = None) -> Evaluation:
    """The Evaluation of `outputs` (any values of the program; () for its outputs), set up once
    per distinct (program, outputs). Raises GraphError for an output that is not a value of the
    program, and Cancelled when ``cancel`` says so while compiling: nothing is cached then."""
    return Evaluation(program, outputs, cancel)


def evaluate(
    program: Program, inputs: Arrays, outputs: Sequence[str] = (), cancel: Cancel = None
) -> dict[str, np.ndarray]:
    """The values of `outputs` (default: all of the program's outputs)."""
    return evaluation(program, tuple(outputs), cancel=cancel).run(inputs, cancel)


def vjp_values(
    program: Program,
    inputs: Arrays,
    cotangents: Arrays,
    wrt: Sequence[str],
    cancel: Cancel = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(values of the cotangents' outputs, gradients per `wrt`): one reverse pass."""
    of = tuple(cotangents)
    d = vjp(program, of, tuple(wrt), cancel=cancel)
    return _run_derivative(program, d, inputs, cotangents, "cotangents", wrt, cancel)


def jvp_values(
    program: Program,
    inputs: Arrays,
    tangents: Arrays,
    of: Sequence[str],
    cancel: Cancel = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(values of `of`, tangents of `of`): one forward pass."""
    d = jvp(program, tuple(tangents), tuple(of), cancel=cancel)
    return _run_derivative(program, d, inputs, tangents, "tangents", of, cancel)


def _run_derivative(
    program: Program,
    d: Derivative,
    inputs: Arrays,
    seeds: Arrays,
    field: str,
    results: Sequence[str],
    cancel: Cancel,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run a derivative program with `seeds` (by value name) fed to its seed inputs."""
    feeds = check_inputs(program, inputs)
    for name, seed in zip(seeds, d.seeds, strict=True):
        feeds[seed] = check_array(name, seeds[name], program.types[name], field)
    out = compile_program(d.program, cancel=cancel).run(feeds, cancel)
    n = len(d.values)
    return dict(zip(d.values, out, strict=False)), dict(zip(results, out[n:], strict=True))


def value_and_grad(
    program: Program, of: str, wrt: Sequence[str], *, cancel: Cancel = None
) -> Callable[[Arrays, Cancel], tuple[np.ndarray, dict[str, np.ndarray]]]:
    """A function of the inputs returning (scalar `of`, its gradients per `wrt`).

    The derivative program is built and compiled once (stopped by ``cancel``); each call is
    one run of it, with inputs trusted (the trainer checks them once up front).
    """
    t = program.types.get(of)
    if t is None or t.shape != ():
        raise GraphError(of, "loss", f"must be a scalar output, got {t}")
    d = vjp(program, (of,), tuple(wrt), cancel=cancel)
    run = compile_program(d.program, cancel=cancel).run
    seed = np.ones((), t.dtype)
    names = tuple(wrt)

    def call(inputs: Arrays, cancel: Cancel = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out = run({**inputs, d.seeds[0]: seed}, cancel)
        return out[0], dict(zip(names, out[1:], strict=True))

    return call
