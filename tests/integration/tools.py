"""Real tools the tests use (Prometheus, promtool): found, or skipped, except in CI (CI=true),
where a missing tool fails the test (``.ci/install-tools.sh`` installs them)."""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tool(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
    )
    if path is None:
        message = f"{name} is not installed (bash .ci/install-tools.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, timeout: float = 10.0) -> str:
    """The /metrics text on 127.0.0.1:port (retried until the server answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def samples(text: str, name: str) -> dict[str, float]:
    """``{'name{labels}': value}`` for the samples of ``name`` in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out
