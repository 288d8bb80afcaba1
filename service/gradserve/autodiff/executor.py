"""The executor: a Program compiled once into a flat plan of numpy calls over value slots.

Running a plan does no validation, no op lookups and no dict work per step: each step is a bound
numpy callable, the slots it reads, the slot it writes, and the slots that die after it (freed
at once, so peak memory follows the live values, not the whole program). Between steps it asks
the optional `cancel` callback whether to stop.

Buffer reuse: an element-wise ufunc step writes into the buffer of an operand that dies at that
step (`out=`), instead of allocating, when that operand is a writable array of the result's
shape and dtype over all of a buffer made by an earlier step of this run (a ufunc or matmul
result, or a reshape, transpose, expand_dims or squeeze of one), and no other live value aliases
it. Aliases are tracked at compile time: the result of any op other than a ufunc or matmul
(views: reshape, transpose, broadcast_to, slice, ...; and any op that might return an operand)
is taken to alias its operands.

Memory: the plan's peak (`memory.plan_peak`) is computed at compile time and checked against
the budget in force (`memory.set_limit`) before the first step of every run. Constant folding
computes only small values (`FOLD_MAX_ELEMENTS`), so compiling never allocates much and a
compiled plan holds little beyond its program's own constants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from gradserve.autodiff import memory
from gradserve.autodiff.cache import cached
from gradserve.autodiff.ir import Cancel, Cancelled, Program, at_node, check_cancel
from gradserve.autodiff.registry import OPS

# Larger values computed from constants alone (zeros too) are computed at every run, under the
# memory check.
FOLD_MAX_ELEMENTS = 1 << 16


# (bound numpy callable, argument slots, result slot, slots freed after it, slot whose buffer
# the result is written into or -1)
Step = tuple[Callable[..., np.ndarray], tuple[int, ...], int, tuple[int, ...], int]


def _fresh(op: str) -> bool:
    """The op's forward always returns a new array of the result's type, aliasing nothing."""
    return op == "matmul" or _ufunc(op)


def _ufunc(op: str) -> bool:
    return isinstance(OPS[op].forward, np.ufunc)


# Their result, from a whole buffer, is a writable array over all of it (a view, or a copy).
_WHOLE_VIEWS = frozenset({"reshape", "transpose", "expand_dims", "squeeze"})


class _Aliases:
    """Union-find over slots: slots in one set may share memory. `live` counts each set's
    values not yet freed; a set holding an input or a constant is never reused."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.live: dict[int, int] = {}
        self.pinned: set[int] = set()

    def find(self, s: int) -> int:
        root = s
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[s] != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def add(self, s: int, like: int | None = None, pinned: bool = False) -> None:
        self.parent[s] = s
        self.live[s] = 1
        if pinned:
            self.pinned.add(s)
        if like is not None:
            self.union(s, like)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.live[ra] += self.live.pop(rb)
            if rb in self.pinned:
                self.pinned.add(ra)


def _plan_reuse(
    program: Program,
    names: list[str],
    calls: list[tuple[Callable[..., np.ndarray], tuple[int, ...], int]],
    dies: list[list[int]],
    fixed: set[int],
) -> list[int]:
    """For each step, the dying operand whose buffer its result can be written into, or -1."""
    types = [program.types[n] for n in names]
    ops = {node.name: node.op for node in program.nodes}
    sets = _Aliases()
    for s in fixed:  # inputs and folded constants: never ours to overwrite
        sets.add(s, pinned=True)
    whole: set[int] = set()  # slots holding a writable array over all of a buffer of this run
    donors = []
    for (_, args, out), dead in zip(calls, dies, strict=True):
        op = ops[names[out]]
        donor = -1
        if _ufunc(op) and types[out].shape:
            for a in args:
                root = sets.find(a)
                if (
                    a in whole
                    and a in dead
                    and root not in sets.pinned
                    and types[a] == types[out]
                    and sets.live[root] == sum(sets.find(d) == root for d in dead)
                ):
                    donor = a
                    break
        if donor >= 0:
            sets.add(out, like=donor)
            whole.add(out)
        elif _fresh(op):
            sets.add(out)
            whole.add(out)
        else:
            sets.add(out)
            for a in args:
                sets.union(out, a)
            if op in _WHOLE_VIEWS and args[0] in whole:
                whole.add(out)
        for d in dead:
            sets.live[sets.find(d)] -= 1
        donors.append(donor)
    return donors


class Executable:
    """A compiled Program. `run` maps input arrays to the program's output arrays."""

    __slots__ = (
        "_constants",
        "_inputs",
        "_output_slots",
        "_steps",
        "folded_bytes",
        "n_slots",
        "peak",
        "program",
    )

    def __init__(self, program: Program, cancel: Cancel = None) -> None:
        self.program = program
        slot: dict[str, int] = {}
        for spec in program.inputs:
            slot[spec.name] = len(slot)
        known: dict[int, np.ndarray] = {}  # constant folding: values fixed at compile time
        ops = ["input"] * len(slot)
        # Bytes of the values computed by folding (constants' own arrays belong to the program).
        self.folded_bytes = 0
        calls: list[tuple[Callable[..., np.ndarray], tuple[int, ...], int]] = []
        with np.errstate(all="ignore"):
            for i, node in enumerate(program.nodes):
                check_cancel(cancel, i)
                slot[node.name] = len(slot)
                fn = OPS[node.op].bind(node.attrs)
                args = tuple(slot[s] for s in node.inputs)
                # A constant's value is its attribute; other values are made by folding.
                small = node.op == "constant" or program.types[node.name].size <= FOLD_MAX_ELEMENTS
                if small and all(a in known for a in args):
                    value = np.asarray(fn(*[known[a] for a in args]))
                    if not value.flags.c_contiguous:  # a view (a slice of a Jacobian's seeds):
                        value = value.copy()  # every run reads it, faster whole
                    known[slot[node.name]] = value
                    ops.append("constant")
                    if args:
                        self.folded_bytes += value.nbytes
                else:
                    calls.append((fn, args, slot[node.name]))
                    ops.append(node.op)
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
        fixed = set(known) | {slot[spec.name] for spec in program.inputs}
        donors = _plan_reuse(program, list(slot), calls, dies, fixed)
        self._steps: tuple[Step, ...] = tuple(
            (fn, args, out, tuple(dies[i]), donors[i]) for i, (fn, args, out) in enumerate(calls)
        )
        self._constants = tuple((s, v) for s, v in known.items() if s in used)
        self._inputs = tuple((spec.name, slot[spec.name]) for spec in program.inputs)
        self.peak = memory.plan_peak(
            list(slot),
            [program.types[n] for n in slot],
            ops,
            (*(s for _, s in self._inputs), *(s for s, _ in self._constants)),
            [step[1:] for step in self._steps],
        )
        # A folded constant is shared by every run: hand out copies, never the cached array.
        self._output_slots = tuple((slot[o], slot[o] in known) for o in program.outputs)
        self.n_slots = len(slot)

    def run(
        self, inputs: Mapping[str, np.ndarray], cancel: Callable[[], bool] | None = None
    ) -> list[np.ndarray]:
        """The outputs, in `program.outputs` order. `inputs` must already be checked.

        Raises `memory.MemoryLimitExceeded`, before any step, if the plan's peak is over the
        budget in force. An exception a step raises carries a note naming its node and where
        the client built it (`ir.at_node`)."""
        memory.check(self.peak)
        slots: list = [None] * self.n_slots
        for name, s in self._inputs:
            slots[s] = inputs[name]
        for s, value in self._constants:
            slots[s] = value
        # `map`, not a list comprehension: most steps are small numpy calls, and building the
        # argument list would cost about as much as the call.
        get = slots.__getitem__
        # Singular points are expected (log(0) in an untaken where-branch): no warnings.
        with np.errstate(all="ignore"):
            for fn, args, out, dead, donor in self._steps:
                if cancel is not None and cancel():
                    raise Cancelled
                try:  # free when nothing is raised (Python 3.11)
                    if donor < 0:
                        slots[out] = fn(*map(get, args))
                    else:
                        slots[out] = fn(*map(get, args), out=slots[donor])
                except Exception as exc:
                    # Slots are the inputs, then the nodes in order: `out` is the node's slot.
                    at_node(exc, self.program.nodes[out - len(self._inputs)])
                    raise
                for d in dead:
                    slots[d] = None
        return [
            np.array(slots[s]) if shared else np.asarray(slots[s])
            for s, shared in self._output_slots
        ]


@cached
def compile_program(program: Program, *, cancel: Cancel = None) -> Executable:
    """The Executable for `program`, compiled once per distinct program. Raises Cancelled
    when ``cancel`` (asked every CANCEL_EVERY_NODES nodes) says so: nothing is cached then."""
    return Executable(program, cancel)
