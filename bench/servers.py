"""Servers for the RPC, training and workers benchmarks: gradserve and a bare grpcio echo.

Both run as subprocesses of the benchmark, on loopback, on a port the OS picks, with the same
thread-pool size and message limits, and are stopped when the benchmark ends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

MIB = 1 << 20
MAX_MESSAGE = 256 * MIB
WORKER_THREADS = max(4, 2 * (os.cpu_count() or 1))  # gradserve's default worker_threads
LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerUnavailable(RuntimeError):
    """The server could not be started (not written yet, or a flag it lacks)."""


@dataclass
class Started:
    """A running server: where it listens, its process, and what it printed so far."""

    target: str
    proc: subprocess.Popen
    lines: list[str]

    def descendants(self) -> list[int]:
        """The pids of the server's child processes, recursively (Linux /proc)."""
        found: list[int] = []
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                kids = []
            found += kids
            todo += kids
        return found


@contextmanager
def process_server(cmd: Sequence[str], timeout: float = 60.0) -> Iterator[str]:
    """Start `cmd`, wait for its 'listening on HOST:PORT' line, yield 'HOST:PORT', stop it."""
    with started_server(cmd, timeout) as started:
        yield started.target


@contextmanager
def started_server(cmd: Sequence[str], timeout: float = 60.0) -> Iterator[Started]:
    """As `process_server`, yielding the `Started` server."""
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading so the server never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(lines) < 200:
                lines.append(line.rstrip())
            m = LISTENING.search(line)
            if m and not found:
                host = "127.0.0.1" if m.group(1) in ("0.0.0.0", "[::]", "::") else m.group(1)
                found.append(f"{host}:{m.group(2)}")
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        ready.wait(timeout)
        if not found:
            tail = " | ".join(lines[-3:]) or f"exit code {proc.poll()}"
            raise ServerUnavailable(f"{' '.join(cmd[1:4])}: did not start: {tail}"[:300])
        yield Started(found[0], proc, lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def gradserve_command(*extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "gradserve", "serve", "--host", "127.0.0.1", "--port", "0"]
    return [*cmd, "--metrics-port", "0", *extra]


def gradserve_server(*extra: str) -> AbstractContextManager[str]:
    """The gradserve server on an ephemeral loopback port, metrics off."""
    return process_server(gradserve_command(*extra))


#: The server stacks `bench.aio_server` runs gradserve's servicer on.
STACKS = ("threads", "aio-pool", "aio-executor")


def stack_server(stack: str) -> AbstractContextManager[str]:
    """gradserve's servicer on another server stack (`bench.aio_server`), no interceptors; or,
    for `FLOOR`, the shipped server around a prebuilt Evaluate response."""
    return process_server([sys.executable, "-m", "bench.aio_server", "--stack", stack])


#: `bench.aio_server`'s floor of the RPC rows: the shipped server (`create_server`, its
#: interceptors) whose Evaluate answers a graph_id request with the response it gave first.
FLOOR = "floor"


def echo_server() -> AbstractContextManager[str]:
    return process_server([sys.executable, "-m", "bench.echo_server"])
