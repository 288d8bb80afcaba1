"""`tune_malloc`: freed arrays are reused by the next call instead of being faulted in afresh."""

import subprocess
import sys

import pytest

# One "call": arrays of 0.1-1 MiB made, used and freed, as an executor's plan does; prints the
# minor page faults of 100 calls after a warm-up.
CALLS = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from gradserve.process import tune_malloc
    assert tune_malloc()
def call():
    a = np.ones((512, 256)); b = np.tanh(a); c = b * a; d = np.exp(c) + b; del a, b
    e = d @ np.ones((256, 256)); del c, d
    return e.sum()
for _ in range(10):
    call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    call()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, **env: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CALLS, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_malloc_reuses_freed_arrays() -> None:
    plain, tuned = faults("plain"), faults("tuned")
    assert plain > 10_000  # glibc's default hands the freed top of the heap back each call
    assert tuned < plain / 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_thresholds_set_in_the_environment_are_kept() -> None:
    # The operator's setting wins: with glibc's small default trim threshold given explicitly,
    # the pages go back to the kernel as without tune_malloc.
    assert faults("tuned", MALLOC_TRIM_THRESHOLD_=str(128 << 10)) > 10_000
