"""The program cache: one LRU, bounded in bytes and in entries, for what the core derives from
Programs (compiled plans, derivative and selected programs, input signatures, sparsity patterns
and colourings).

Every entry is keyed by Programs and keeps them alive, so its size counts the Programs in its
key and in its value (their constants' bytes plus `NODE_BYTES` a node), for a compiled plan the
values folded at compile time, and the arrays a value holds (a pattern, a colouring). Shared
constants are counted once per entry: the bound errs on the safe side. `set_limits` sets the
bounds (the server: --program-cache-bytes).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from gradserve.autodiff.ir import NodeDef, Program

# A rough size of one node of a Program in memory (its NodeDef, type, attrs dict, slot), bytes.
NODE_BYTES = 512
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_ENTRIES = 4096

F = TypeVar("F", bound=Callable[..., Any])


def constant_bytes(nodes: Iterable[NodeDef]) -> int:
    """The bytes of the tensor attributes (constants) of ``nodes``."""
    return sum(v.nbytes for n in nodes for v in n.attrs.values() if isinstance(v, np.ndarray))


def program_bytes(program: Program) -> int:
    """What a Program holds: its constants' bytes and NODE_BYTES per node."""
    return constant_bytes(program.nodes) + NODE_BYTES * (len(program.nodes) + len(program.inputs))


def entry_bytes(value: Any) -> int:
    """The bytes an argument or result keeps alive: Programs, the Program of a Derivative or an
    Executable (and an Executable's folded values), arrays, CSR arrays, anything with an
    `nbytes` (a colouring plan), tuples of them; 0 for anything else."""
    if isinstance(value, Program):
        return program_bytes(value)
    if isinstance(value, tuple):
        return sum(entry_bytes(v) for v in value)
    if isinstance(value, sp.csr_array):
        return value.data.nbytes + value.indices.nbytes + value.indptr.nbytes
    if isinstance(getattr(value, "nbytes", None), int):
        return value.nbytes
    program = getattr(value, "program", None)
    if isinstance(program, Program):
        return program_bytes(program) + getattr(value, "folded_bytes", 0)
    return 0


class ProgramCache:
    """A thread-safe LRU of results by (function, arguments), bounded in bytes and entries.

    Each memoized function has its own dict, keyed by its argument (or argument tuple), whose
    values carry a ticket: the key of the entry in the one recency order all functions share.
    A hit is one dict lookup and one move of an int, without a lock (both atomic under the
    GIL); adding and evicting take the lock.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.nbytes = 0
        # ticket -> (the function's dict, key, size), least recently used first
        self._order: OrderedDict[int, tuple[dict, Any, int]] = OrderedDict()
        self._tickets = itertools.count()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def memoize(self, fn: F) -> F:
        """``fn`` (positional arguments, hashable), its results kept in this cache. Keyword
        arguments are context, not key (a cancel callback): passed on, never hashed."""
        store: dict[Any, tuple[Any, int]] = {}  # key -> (result, ticket)
        order = self._order

        @functools.wraps(fn)
        def cached(*args: Any, **context: Any) -> Any:
            key = args[0] if len(args) == 1 else args
            hit = store.get(key)
            if hit is not None:
                try:  # noqa: SIM105 (contextlib.suppress costs more than the lookup)
                    order.move_to_end(hit[1])
                except KeyError:  # evicted by another thread just now
                    pass
                return hit[0]
            value = fn(*args, **context)
            self._add(store, key, value, entry_bytes(args) + entry_bytes(value))
            return value

        return cached  # type: ignore[return-value]

    def _add(self, store: dict, key: Any, value: Any, size: int) -> None:
        with self._lock:
            old = store.get(key)
            if old is not None:  # computed twice at once: keep the first
                return
            ticket = next(self._tickets)
            store[key] = (value, ticket)
            self._order[ticket] = (store, key, size)
            self.nbytes += size
            self._evict()

    def _evict(self) -> None:
        # Keeps the newest entry even when it alone is over the budget: its caller uses it.
        while len(self._order) > 1 and (
            self.nbytes > self.max_bytes or len(self._order) > self.max_entries
        ):
            _, (store, key, size) = self._order.popitem(last=False)
            del store[key]
            self.nbytes -= size

    def clear(self) -> None:
        """Forget everything (a cold start, for benchmarks and tests)."""
        with self._lock:
            for store, key, _ in self._order.values():
                del store[key]
            self._order.clear()
            self.nbytes = 0

    def set_limits(self, max_bytes: int, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        """New bounds, applied at once."""
        with self._lock:
            self.max_bytes, self.max_entries = max_bytes, max_entries
            self._evict()


PROGRAM_CACHE = ProgramCache()
cached = PROGRAM_CACHE.memoize
