"""The executor: a Program compiled once into a flat plan of numpy calls over value slots.

Running a plan does no validation, no op lookups and no dict work per step: each step is a bound
numpy callable, the slots it reads, the slot it writes, and the slots that die after it (freed
at once, so peak memory follows the live values, not the whole program). Between steps it asks
the optional `cancel` callback whether to stop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np

from gradserve.autodiff.ir import Program
from gradserve.autodiff.registry import OPS


class Cancelled(Exception):
    """The caller's `cancel` callback asked the computation to stop."""


Step = tuple[Callable[..., np.ndarray], tuple[int, ...], int, tuple[int, ...]]


class Executable:
    """A compiled Program. `run` maps input arrays to the program's output arrays."""

    __slots__ = ("_constants", "_input_slots", "_output_slots", "_steps", "n_slots", "program")

    def __init__(self, program: Program) -> None:
        self.program = program
        slot: dict[str, int] = {}
        for spec in program.inputs:
            slot[spec.name] = len(slot)
        constants: list[tuple[int, np.ndarray]] = []
        calls: list[tuple[Callable[..., np.ndarray], tuple[int, ...], int]] = []
        for node in program.nodes:
            slot[node.name] = len(slot)
            fn = OPS[node.op].bind(node.attrs)
            if not node.inputs:  # nullary ops (constants, zeros) are computed once, here
                constants.append((slot[node.name], np.asarray(fn())))
            else:
                calls.append((fn, tuple(slot[s] for s in node.inputs), slot[node.name]))
        outputs = {slot[o] for o in program.outputs}
        last_use: dict[int, int] = {}
        for i, (_, args, _) in enumerate(calls):
            for a in args:
                last_use[a] = i
        dies: list[list[int]] = [[] for _ in calls]
        for s, i in last_use.items():
            if s not in outputs:
                dies[i].append(s)
        self._steps: tuple[Step, ...] = tuple(
            (fn, args, out, tuple(dies[i])) for i, (fn, args, out) in enumerate(calls)
        )
        self._constants = tuple(constants)
        self._input_slots = tuple(slot[spec.name] for spec in program.inputs)
        self._output_slots = tuple(slot[o] for o in program.outputs)
        self.n_slots = len(slot)

    def run(
        self, inputs: Mapping[str, np.ndarray], cancel: Callable[[], bool] | None = None
    ) -> list[np.ndarray]:
        """The outputs, in `program.outputs` order. `inputs` must already be checked."""
        slots: list = [None] * self.n_slots
        for spec, s in zip(self.program.inputs, self._input_slots, strict=True):
            slots[s] = inputs[spec.name]
        for s, value in self._constants:
            slots[s] = value
        # Singular points are expected (log(0) in an untaken where-branch): no warnings.
        with np.errstate(all="ignore"):
            if cancel is None:
                for fn, args, out, dead in self._steps:
                    slots[out] = fn(*[slots[a] for a in args])
                    for d in dead:
                        slots[d] = None
            else:
                for fn, args, out, dead in self._steps:
                    if cancel():
                        raise Cancelled
                    slots[out] = fn(*[slots[a] for a in args])
                    for d in dead:
                        slots[d] = None
        return [np.asarray(slots[s]) for s in self._output_slots]


@functools.lru_cache(maxsize=1024)
def compile_program(program: Program) -> Executable:
    """The Executable for `program`, compiled once per distinct program."""
    return Executable(program)
