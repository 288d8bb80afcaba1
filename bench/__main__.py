"""`python -m bench [--only W1,W3] [--quick] [--json PATH] [--cores 1,all] [--threads N]`.

First the process re-executes itself with the servers' malloc tunable (huge pages for the large
buffers malloc maps: `gradserve.process.restart_with_huge_pages`), which glibc reads only as a
process starts. Every process of the benchmark inherits it: the in-process contenders, the
clients, the gradserve servers (which would set it for themselves) and the echo server alike.

Three things must happen before numpy (or torch, or jax) loads, so they happen here:
- OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine to keep old OpenBLAS builds
  correct; they slow a current numpy. The benchmark process (and the servers and children it
  starts) runs without them, so numpy uses the kernel it detects: the table reports which.
- Cores. Every contender runs pinned to the same cores (`--cores`: 1, N or all; the affinity
  mask is inherited by the servers and subprocesses the benchmark starts). XLA uses a second
  core even with one thread asked for (issue 11: jax.jit's W4 took 11.0 ms pinned to one core,
  6.0 ms free on two), so only pinning makes a single-core comparison fair. The default,
  `--cores 1,all`, runs the benchmark once per setting, each in its own process, and prints
  their ratios side by side.
- Threads. Each library gets one thread per pinned core (`--threads` overrides; 0 keeps each
  library's default): on one core, the spinning worker threads of OpenBLAS, PyTorch's OpenMP
  and XLA's Eigen pool, all in one process, would starve each other (numpy's W4 went from 15 ms
  alone to 180 ms interleaved); on all cores every library, gradserve's servers included
  (GRADSERVE_BLAS_THREADS), may use them all.
Then the process takes the servers' malloc settings (`gradserve.process.tune_malloc`: freed
arrays reused, not returned to the kernel), for every contender in it alike.
"""

import os
import sys

from gradserve.process import restart_with_huge_pages

restart_with_huge_pages()

from bench.harness import CORE_SETTINGS, pin_cores, thread_environment  # noqa: E402


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_var, None)
_argv = sys.argv[1:]
_settings = (_option(_argv, "--cores") or ",".join(CORE_SETTINGS)).split(",")
if len(_settings) > 1:
    from bench.cli import compare_cores

    raise SystemExit(compare_cores(_argv, _settings))
_cores = pin_cores(_settings[0])
_threads = int(_option(_argv, "--threads") or len(_cores))
if _threads > 0:
    os.environ.update(thread_environment(_threads))

from gradserve.process import tune_malloc  # noqa: E402  (after the environment is set)

tune_malloc()  # the servers' malloc settings, for every in-process contender alike

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
