"""`python -m bench [--only W1,W3] [--quick] [--json PATH]`: run the benchmarks, print the table.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine to keep old OpenBLAS builds
correct; they slow a current numpy. The benchmark process (and the servers and children it
starts) runs without them, so numpy uses the kernel it detects: the table reports which.
"""

import os

for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_var, None)

from bench.cli import main  # noqa: E402  (after the environment is cleared)

if __name__ == "__main__":
    raise SystemExit(main())
