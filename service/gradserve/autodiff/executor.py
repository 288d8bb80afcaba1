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
        known: dict[int, np.ndarray] = {}  # constant folding: values fixed at compile time
        calls: list[tuple[Callable[..., np.ndarray], tuple[int, ...], int]] = []
        with np.errstate(all="ignore"):
            for node in program.nodes:
                slot[node.name] = len(slot)
                fn = OPS[node.op].bind(node.attrs)
                args = tuple(slot[s] for s in node.inputs)
                if all(a in known for a in args):
                    known[slot[node.name]] = np.asarray(fn(*[known[a] for a in args]))
                else:
                    calls.append((fn, args, slot[node.name]))
        outputs = {slot[o] for o in program.outputs}
        used = outputs | {a for _, args, _ in calls for a in args}
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
        self._constants = tuple((s, v) for s, v in known.items() if s in used)
        self._input_slots = tuple(slot[spec.name] for spec in program.inputs)
        # A folded constant is shared by every run: hand out copies, never the cached array.
        self._output_slots = tuple((slot[o], slot[o] in known) for o in program.outputs)
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
        return [
            np.array(slots[s]) if shared else np.asarray(slots[s])
            for s, shared in self._output_slots
        ]


@functools.lru_cache(maxsize=1024)
def compile_program(program: Program) -> Executable:
    """The Executable for `program`, compiled once per distinct program."""
    return Executable(program)
