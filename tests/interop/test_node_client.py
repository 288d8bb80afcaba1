"""The Node.js client (tests/interop/node: @grpc/grpc-js, @grpc/proto-loader) against a server.

The client loads protos/ at run time and checks every number against a closed form; see
``node/client.mjs``. Its dependencies are pinned by ``node/package-lock.json``; CI installs
them with ``npm ci --prefix tests/interop/node`` (in ``.ci/run``). If ``node_modules`` is
missing, this test runs that ``npm ci`` itself.

Without node, npm or the packages, the tests skip locally and FAIL in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT = NODE_DIR / "client.mjs"
MIN_NODE_MAJOR = 18
#: client.mjs exits 3 when all selected checks passed except Train, answered UNIMPLEMENTED.
EXIT_TRAIN_UNIMPLEMENTED = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally; in CI the Node.js tests must run, so fail."""
    if in_ci():
        pytest.fail(f"CI=true and the Node.js interop test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the client's packages installed (npm ci if needed)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not on PATH (install Node.js >= 18)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < MIN_NODE_MAJOR:
        unavailable(f"node {version or '?'} is too old: the client needs >= {MIN_NODE_MAJOR}")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            unavailable(f"{NODE_DIR}/node_modules is missing and npm is not on PATH")
        cmd = [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            unavailable(f"`{' '.join(cmd)}` timed out after 300 s")
        if done.returncode != 0:
            unavailable(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return node


def run_client(node: str, address: str, *checks: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(CLIENT), "--target", address, "--only", ",".join(checks)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def report(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {done.returncode}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"


def test_node_client_health_evaluate_jacobians(node: str, gradserve_process) -> None:
    done = run_client(
        node, gradserve_process.address, "health", "evaluate", "jacobian", "stream_jacobian"
    )
    print(done.stdout)
    assert done.returncode == 0, report(done)
    assert "4/4 passed" in done.stdout, report(done)


def test_node_client_train(node: str, gradserve_process) -> None:
    done = run_client(node, gradserve_process.address, "train")
    print(done.stdout)
    if done.returncode == EXIT_TRAIN_UNIMPLEMENTED:
        pytest.fail(
            "the server answered Train with UNIMPLEMENTED (service/gradserve/rpc/training.py)\n"
            + report(done),
            pytrace=False,
        )
    assert done.returncode == 0, report(done)
    assert "1/1 passed" in done.stdout, report(done)


def test_node_client_sends_an_onnx_file_as_the_graph_source(node: str, gradserve_process) -> None:
    done = run_client(node, gradserve_process.address, "onnx")
    print(done.stdout)
    assert done.returncode == 0, report(done)
    assert "1/1 passed" in done.stdout, report(done)
