"""Peak memory of a compiled plan, known from the shapes before anything is allocated.

Every value of a Program has a static type, and the executor's plan says at which step each
value is made, after which step it dies, which results are written into a dying operand's
buffer and which are views. `plan_peak` walks the plan once, at compile time, and finds the
most bytes live at once. `Executable.run` compares that peak with the budget in force in the
current context (`set_limit`; none by default) before its first step, and raises
`MemoryLimitExceeded`, naming the largest value live at the peak, instead of running into a
MemoryError halfway.

Counted: the inputs, the constants, and every value an op allocates, from its step to its last
use (outputs to the end). Not counted: views (`VIEW_OPS`), results written into a dying
operand's buffer, and an op's own scratch space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from gradserve.autodiff.ir import TensorType

# Ops whose result views their first operand's memory (numpy basic indexing and reshaping).
VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "expand_dims", "squeeze", "slice"})

# (argument slots, result slot, slots freed after it, slot whose buffer the result reuses or -1)
PlanStep = tuple[tuple[int, ...], int, tuple[int, ...], int]

_LIMIT: ContextVar[int | None] = ContextVar("gradserve_memory_limit", default=None)


def nbytes(t: TensorType) -> int:
    return t.size * np.dtype(t.dtype).itemsize


@dataclass(frozen=True, slots=True)
class Peak:
    """The most bytes a plan holds at once, and the largest value live at that moment."""

    nbytes: int
    node: str  # "" for a plan that holds nothing
    op: str  # "input" or "constant" when the largest value is one of those
    type: TensorType | None


class MemoryLimitExceeded(Exception):
    """A plan's peak is over the budget in force; raised before anything is allocated."""

    def __init__(self, peak: Peak, limit: int) -> None:
        super().__init__(
            f"needs {peak.nbytes} bytes at its peak, more than the limit of {limit}; the largest"
            f" value then is {peak.node} ({peak.op}) of type {peak.type}"
        )
        self.peak = peak
        self.limit = limit


def set_limit(max_bytes: int | None) -> None:
    """The budget of every plan run from now on in the current context (None: no budget).

    The server sets it for each request (grpc runs every RPC in a ``contextvars.Context`` of
    its own); a thread started for a request keeps it when it runs in a copy of the context
    (``contextvars.copy_context().run``).
    """
    _LIMIT.set(max_bytes)


def check(peak: Peak) -> None:
    """Raise MemoryLimitExceeded if ``peak`` is over the budget in force."""
    limit = _LIMIT.get()
    if limit is not None and peak.nbytes > limit:
        raise MemoryLimitExceeded(peak, limit)


class _Live:
    """The buffers alive while a plan runs: each owned by the slot whose step allocated it."""

    def __init__(self, types: Sequence[TensorType], fixed: Iterable[int]) -> None:
        self.types = types
        self.owner = {s: s for s in fixed}  # slot -> the slot that allocated its buffer
        self.users = {s: 1 for s in self.owner}  # buffer -> live slots over it
        self.pinned = set(self.owner)  # inputs and constants: held by the caller and the plan
        self.nbytes = sum(nbytes(types[s]) for s in self.owner)

    def make(self, step: PlanStep, ops: Sequence[str]) -> None:
        args, out, _, donor = step
        if donor >= 0:
            buffer = self.owner[donor]
        elif ops[out] in VIEW_OPS and args:
            buffer = self.owner[args[0]]
        else:
            buffer = out
            self.nbytes += nbytes(self.types[out])
        self.owner[out] = buffer
        self.users[buffer] = self.users.get(buffer, 0) + 1

    def free(self, step: PlanStep) -> None:
        for d in step[2]:
            buffer = self.owner.pop(d)
            self.users[buffer] -= 1
            if not self.users[buffer] and buffer not in self.pinned:
                del self.users[buffer]
                self.nbytes -= nbytes(self.types[buffer])

    def largest(self) -> int | None:
        """The largest live buffer; of equals, the one made last (nearest the peak)."""
        return max(reversed(self.users), key=lambda b: nbytes(self.types[b]), default=None)


def plan_peak(
    names: Sequence[str],
    types: Sequence[TensorType],
    ops: Sequence[str],
    fixed: Iterable[int],
    steps: Sequence[PlanStep],
) -> Peak:
    """The peak of a plan over slots named ``names``, typed ``types``, made by ``ops`` ("input"
    or "constant" for the ``fixed`` slots, set before the first step)."""
    fixed = tuple(fixed)
    live = _Live(types, fixed)
    top, top_step = live.nbytes, -1
    for i, step in enumerate(steps):
        live.make(step, ops)
        if live.nbytes > top:
            top, top_step = live.nbytes, i
        live.free(step)
    live = _Live(types, fixed)  # again, up to the peak, to see which values it holds
    for i, step in enumerate(steps[: top_step + 1]):
        live.make(step, ops)
        if i < top_step:
            live.free(step)
    largest = live.largest()
    if largest is None:
        return Peak(top, "", "", None)
    return Peak(top, names[largest], ops[largest], types[largest])
