"""Fixtures for interop tests: a real ``python -m gradserve serve`` process on an ephemeral port.

A minimal copy of the ``server_process`` pattern of ``tests/integration/conftest.py``: the
port is parsed from the ``gradserve listening on HOST:PORT`` line; stderr goes to a file (so
a chatty server can never block on a full pipe) and is shown when start-up fails.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVE_FLAGS = ("--host", "127.0.0.1", "--port", "0", "--metrics-port", "0")
LISTENING = re.compile(r"gradserve listening on ([\d.]+):(\d+)\b")


class ServerProcess:
    """A gradserve server in a subprocess; ``.address`` is ``127.0.0.1:PORT``."""

    def __init__(self, *flags: str, timeout: float = 60.0) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+t")  # noqa: SIM115 (closed by the fixture)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gradserve", "serve", *SERVE_FLAGS, *flags],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.address = self._wait_listening(timeout)

    def _wait_listening(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:  # stdout closed: the server exited
                break
            match = LISTENING.search(line)
            if match:
                return f"{match.group(1)}:{match.group(2)}"
        self.stop()
        self.stderr.seek(0)
        raise RuntimeError(f"gradserve did not start:\n{self.stderr.read()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()


@pytest.fixture(scope="module")
def gradserve_process() -> Iterator[ServerProcess]:
    """One real server for the module, stopped (SIGTERM) at the end."""
    server = ServerProcess()
    yield server
    server.stop()
    server.stderr.close()
