"""The program cache: compiled plans and derivative programs, bounded in bytes and entries."""

import numpy as np
from gradcheck import program
from gradserve.autodiff import evaluate
from gradserve.autodiff.cache import NODE_BYTES, PROGRAM_CACHE, ProgramCache, program_bytes
from gradserve.autodiff.executor import Executable

MIB = 1 << 20


def with_constant(seed: int, elements: int = MIB // 8):
    """A Program holding a 1 MiB constant (distinct per seed)."""
    return program(
        {"x": (1,)},
        [
            ("k", "constant", [], {"value": np.full(elements, float(seed))}),
            ("y", "add", ["k", "x"]),
        ],
        ["y"],
    )


def test_program_bytes_count_constants_and_nodes():
    p = with_constant(0)
    assert program_bytes(p) == MIB + NODE_BYTES * 3


def test_the_cache_is_bounded_in_bytes_oldest_first_and_keeps_the_newest():
    cache = ProgramCache(max_bytes=5 * MIB, max_entries=100)
    compile_ = cache.memoize(Executable)  # an entry holds its key and its plan's Program: 2 MiB
    programs = [with_constant(i) for i in range(4)]
    plans = [compile_(p) for p in programs]
    assert len(cache) == 2 and 4 * MIB < cache.nbytes <= 5 * MIB
    assert compile_(programs[3]) is plans[3] and compile_(programs[2]) is plans[2]  # hits
    assert compile_(programs[0]) is not plans[0]  # evicted, compiled again
    huge = with_constant(9, elements=MIB)  # 8 MiB alone: kept (its caller uses it), others go
    assert compile_(huge) is compile_(huge)
    assert len(cache) == 1


def test_the_cache_is_bounded_in_entries():
    cache = ProgramCache(max_bytes=1 << 40, max_entries=3)
    square = cache.memoize(lambda n: n * n)
    for n in range(10):
        assert square(n) == n * n
    assert len(cache) == 3


def test_the_core_uses_it_and_set_limits_applies_at_once():
    before = (PROGRAM_CACHE.max_bytes, PROGRAM_CACHE.max_entries)
    try:
        for i in range(3):
            np.testing.assert_array_equal(
                evaluate(with_constant(100 + i), {"x": np.zeros(1)})["y"],
                np.full(MIB // 8, 100.0 + i),
            )
        assert PROGRAM_CACHE.nbytes >= 3 * MIB
        PROGRAM_CACHE.set_limits(2 * MIB)
        assert PROGRAM_CACHE.nbytes <= 2 * MIB or len(PROGRAM_CACHE) == 1
    finally:
        PROGRAM_CACHE.set_limits(*before)


def test_clear_forgets_every_entry_and_its_bytes():
    cache = ProgramCache(max_bytes=50 * MIB, max_entries=100)
    compile_ = cache.memoize(Executable)
    p = with_constant(5)
    plan = compile_(p)
    assert len(cache) == 1 and cache.nbytes > MIB
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    assert compile_(p) is not plan  # computed again
    assert len(cache) == 1
