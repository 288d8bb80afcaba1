"""`python -m bench [--only W1,W3] [--quick] [--json PATH] [--threads N]`: run, print the table.

Two things must happen before numpy (or torch, or jax) loads, so they happen here:
- OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine to keep old OpenBLAS builds
  correct; they slow a current numpy. The benchmark process (and the servers and children it
  starts) runs without them, so numpy uses the kernel it detects: the table reports which.
- Thread pools. On a 2-core shared machine the spinning worker threads of OpenBLAS, PyTorch's
  OpenMP and XLA's Eigen pool, all in one process, starve each other, and a contender's time
  then depends on who ran just before it (numpy's W4 went from 15 ms alone to 180 ms
  interleaved). So by default every library gets one thread (`--threads 1`), which compares
  the libraries' work, not their thread pools; `--threads 0` keeps each library's default.
"""

import os
import sys


def _threads(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_var, None)
_n = _threads(sys.argv[1:])
if _n > 0:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(_n)
    if _n == 1:
        _xla = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_xla}".strip()

from bench.cli import main  # noqa: E402  (after the environment is set)

if __name__ == "__main__":
    raise SystemExit(main())
