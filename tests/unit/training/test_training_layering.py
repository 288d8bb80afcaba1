"""The training package knows nothing of gRPC, protobuf or (in this cut) the autodiff core."""

from __future__ import annotations

import subprocess
import sys


def test_training_imports_no_grpc_protobuf_or_core():
    code = (
        "import sys, gradserve.training\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')\n"
        "       or m.startswith(('gradserve.autodiff', 'gradserve.rpc', 'gradserve_client'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
