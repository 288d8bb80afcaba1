"""The peak memory of compiled plans (autodiff/memory.py), checked before any step runs."""

import contextvars
import tracemalloc

import numpy as np
import pytest
from gradcheck import program
from gradserve.autodiff import vjp
from gradserve.autodiff.executor import FOLD_MAX_ELEMENTS, compile_program
from gradserve.autodiff.memory import MemoryLimitExceeded, check, set_limit

KIB8 = 1024 * 8  # a float64[1024]


def peak(p):
    return compile_program(p).peak


def in_context(fn, *args):
    """Run ``fn`` in a fresh context, as grpc runs each RPC: a limit set there stays there."""
    return contextvars.Context().run(fn, *args)


def test_values_are_freed_after_their_last_use():
    # x -> a -> b -> c, each of 8 KiB; c is an output. Reuse would write b into a and c into b,
    # so the plan holds x plus one buffer at a time.
    p = program(
        {"x": (1024,)}, [("a", "exp", ["x"]), ("b", "sin", ["a"]), ("c", "cos", ["b"])], ["c"]
    )
    assert peak(p).nbytes == 2 * KIB8


def test_without_reuse_a_dying_value_is_freed_after_the_step():
    # matmul cannot write into an operand: at its step x, a and m are live.
    p = program(
        {"x": (32, 32)},
        [("a", "exp", ["x"]), ("m", "matmul", ["a", "a"]), ("s", "sum", ["m"])],
        ["s"],
    )
    result = peak(p)
    assert result.nbytes == 3 * KIB8
    assert (result.node, result.op, str(result.type)) == ("m", "matmul", "float64[32, 32]")


def test_outputs_live_to_the_end():
    p = program(
        {"x": (1024,)}, [("a", "exp", ["x"]), ("b", "sin", ["a"]), ("c", "cos", ["b"])], ["a", "c"]
    )
    assert peak(p).nbytes == 3 * KIB8  # a is kept, so b cannot reuse it


def test_views_hold_no_memory_of_their_own():
    p = program(
        {"x": (1,)},
        [
            ("w", "broadcast_to", ["x"], {"shape": [1 << 20]}),
            ("r", "reshape", ["w"], {"shape": [1024, 1024]}),
            ("t", "transpose", ["r"]),
            ("s", "sum", ["t"]),
        ],
        ["s"],
    )
    assert peak(p).nbytes == 8 + 8


def test_a_view_keeps_its_buffer_alive():
    # a's own last use is v, but v and w view its buffer until c: at b's step x, a and b live.
    p = program(
        {"x": (1024,)},
        [
            ("a", "exp", ["x"]),
            ("v", "reshape", ["a"], {"shape": [32, 32]}),
            ("b", "sin", ["x"]),
            ("w", "reshape", ["v"], {"shape": [1024]}),
            ("c", "multiply", ["b", "w"]),
        ],
        ["c"],
    )
    assert peak(p).nbytes == 3 * KIB8


def test_the_derivative_plan_of_a_batch_is_checked_with_its_batch():
    p = program({"x": (1000,)}, [("y", "outer", ["x", "x"])], ["y"])
    d = vjp(p, ("y",), ("x",), 1000)  # 1000 cotangents of 1000 x 1000
    assert peak(d.program).nbytes >= 1000 * 1000 * 1000 * 8


def test_run_refuses_before_allocating_and_the_limit_is_per_context():
    p = program({"x": (20_000,)}, [("y", "outer", ["x", "x"]), ("s", "sum", ["y"])], ["s"])
    x = np.ones(20_000)

    def limited():
        set_limit(1 << 30)
        tracemalloc.start()
        try:
            compile_program(p).run({"x": x})
        finally:
            allocated = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return allocated

    with pytest.raises(MemoryLimitExceeded) as info:
        in_context(limited)
    assert info.value.peak.node == "y" and info.value.limit == 1 << 30
    assert info.value.peak.nbytes > 20_000 * 20_000 * 8
    check(compile_program(p).peak)  # no limit in this context: nothing raised


def test_compiling_folds_only_small_constant_values():
    big = FOLD_MAX_ELEMENTS * 4
    p = program(
        {"x": (1,)},
        [
            ("k", "constant", [], {"value": np.ones(big)}),
            ("e", "exp", ["k"]),  # large: computed at run time, under the check
            ("one", "constant", [], {"value": np.ones(3)}),
            ("f", "exp", ["one"]),  # small: folded
            ("s", "sum", ["e"]),
            ("t", "sum", ["f"]),
            ("y", "add", ["s", "t"]),
            ("z", "add", ["y", "x"]),
        ],
        ["z"],
    )
    ex = compile_program(p)
    assert ex.folded_bytes == 3 * 8 + 8  # f and t (s, y depend on e; z on x)
    assert ex.peak.nbytes >= 2 * big * 8  # k and e
    np.testing.assert_allclose(ex.run({"x": np.zeros(1)})[0], [big * np.e + 3 * np.e])


def test_compiling_never_makes_large_zeros():
    """An op without operands other than constant (zeros, which derivative rules emit) is not
    folded when large: compiling allocates nothing, and the run is checked."""
    p = program(
        {"x": (1,)},
        [
            ("z", "zeros", [], {"shape": [100_000, 100_000], "dtype": "float64"}),
            ("s", "sum", ["z"]),
        ],
        ["s"],
    )
    tracemalloc.start()
    try:
        ex = compile_program(p)
        allocated = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert allocated < 1 << 20 and ex.folded_bytes == 0
    assert ex.peak.node == "z" and ex.peak.nbytes >= 8 * 10**10
    with pytest.raises(MemoryLimitExceeded):
        in_context(lambda: (set_limit(1 << 30), ex.run({"x": np.zeros(1)})))
