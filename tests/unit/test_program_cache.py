"""The program cache: compiled plans and derivative programs, bounded in bytes and entries."""

import numpy as np
import pytest
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


def test_an_evaluation_is_set_up_once_per_program_and_outputs():
    from gradserve.autodiff import GraphError, evaluation
    from gradserve.autodiff.cache import entry_bytes

    p = program({"x": (3,)}, [("y", "sin", ["x"]), ("z", "multiply", ["y", "x"])], ["z"])
    whole = evaluation(p, ())
    assert evaluation(p, ()) is whole and evaluation(p, ("y",)) is not whole
    x = np.array([0.1, 0.2, 0.3])
    values = whole.run({"x": x})
    assert list(values) == ["z"] and np.allclose(values["z"], np.sin(x) * x)
    assert whole.result_bytes == values["z"].nbytes == 24
    picked = evaluation(p, ("y", "z"))
    assert picked.result_bytes == 48 and list(picked.run({"x": x})) == ["y", "z"]
    assert entry_bytes(whole) == program_bytes(p) + whole.folded_bytes
    assert evaluate(p, {"x": [1, 2, 3]})["z"].dtype == np.float64  # cast, as check_inputs does
    with pytest.raises(GraphError, match="outputs") as info:
        evaluation(p, ("nope",))
    assert info.value.node == "nope"
