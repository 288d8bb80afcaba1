"""`tune_malloc`: freed arrays are reused by the next call instead of being faulted in afresh;
`huge_page_environment`: the buffers malloc maps are faulted in 2 MiB at a time."""

import subprocess
import sys
from pathlib import Path

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


def test_huge_pages_are_added_to_the_tunables_glibc_is_given() -> None:
    from gradserve.process import huge_page_environment

    assert huge_page_environment({"HOME": "/"}) == {
        "HOME": "/",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    others = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert huge_page_environment(others) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    }
    # The operator's own setting (0: off) is kept: no restart.
    assert huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    # A name that merely contains the tunable's is another tunable.
    assert huge_page_environment({"GLIBC_TUNABLES": "x.glibc.malloc.hugetlb=0"}) == {
        "GLIBC_TUNABLES": "x.glibc.malloc.hugetlb=0:glibc.malloc.hugetlb=1"
    }


@pytest.mark.parametrize(
    ("tunables", "on"),
    [
        ("glibc.malloc.hugetlb=1", True),
        ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", True),  # hugetlbfs pages
        ("glibc.malloc.hugetlb=0", False),
        ("glibc.malloc.arena_max=2", False),
        ("", False),
    ],
)
def test_the_log_says_whether_huge_pages_were_asked(
    monkeypatch: pytest.MonkeyPatch, tunables: str, on: bool
) -> None:
    from gradserve.process import huge_pages_on

    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
    assert huge_pages_on() is on


def test_huge_pages_are_not_asked_of_another_libc(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradserve import process

    def unknown(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(process.os, "confstr", unknown)
    assert process.huge_page_environment({}) is None


# A new 64 MiB buffer (over the mmap threshold, as a large tensor's bytes are), written once;
# prints the minor page faults that took.
NEW_BUFFER = """
import resource
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffer = b"x" * (64 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "never"


@pytest.mark.skipif(_thp_mode() == "never", reason="the kernel's transparent huge pages are off")
def test_with_huge_pages_a_large_buffer_is_faulted_in_2_mib_at_a_time() -> None:
    from gradserve.process import huge_page_environment

    def new_buffer_faults(env: dict[str, str]) -> int:
        out = subprocess.run(
            [sys.executable, "-c", NEW_BUFFER], capture_output=True, text=True, check=True, env=env
        )
        return int(out.stdout)

    plain = {"PATH": "/usr/bin:/bin", "GLIBC_TUNABLES": ""}
    huge = huge_page_environment(plain)
    assert huge is not None
    small_pages = new_buffer_faults(plain)
    assert small_pages > 10_000  # 4 KiB pages: 16,384 of them
    assert new_buffer_faults(huge) < small_pages / 4  # 2 MiB pages: 32 of them, and the rest
