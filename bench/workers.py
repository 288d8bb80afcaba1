"""WK: a server with `--workers 1` against `--workers 2`, under concurrent Jacobian requests.

Several client processes (each its own `gs.Client`, so each its own connection, which
SO_REUSEPORT spreads over the server processes) send Jacobian requests of a two-layer tanh net
whose weights are constants of the graph (the graph travels once, then its graph_id; each
request carries x and returns the 256x256 Jacobian). Figure: requests per second over all
clients; the row reports the speed-up of 2 workers over 1. Rounds alternate 1 and 2 workers.

Note: on this 2-core machine the clients share the cores with the server processes, and numpy's
BLAS may use 2 threads per process, so the speed-up is bounded well below 2.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench.harness import Row, Settings
from bench.servers import ServerUnavailable, gradserve_command, started_server

N, HIDDEN = 256, 1024


def graph() -> Any:
    """y = tanh(W2 tanh(W1 x)): a 256x256 Jacobian (512 KiB) that costs the server far more
    than its transport (256 cotangents through two 1024x256 layers)."""
    import gradserve_client as gs

    rng = np.random.default_rng(7)
    g = gs.Graph()
    x = g.input("x", shape=(N,))
    W1 = g.constant(rng.standard_normal((HIDDEN, N)) / np.sqrt(N))
    W2 = g.constant(rng.standard_normal((N, HIDDEN)) / np.sqrt(HIDDEN))
    g.output("y", gs.tanh(W2 @ gs.tanh(W1 @ x)))
    return g


def client_main(target: str, calls: int) -> None:
    """A client process: connect, warm up, say ready, wait for 'go', make `calls` requests."""
    import gradserve_client as gs

    g = graph()
    x = np.random.default_rng(8).standard_normal(N)
    with gs.Client(target) as c:
        c.jacobian(g, {"x": x}, of="y", wrt="x")
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        for _ in range(calls):
            c.jacobian(g, {"x": x}, of="y", wrt="x")
        print(json.dumps({"seconds": time.perf_counter() - t0, "calls": calls}), flush=True)


def measure(target: str, clients: int, calls: int) -> float:
    """Requests per second of `clients` processes together, from 'go' to the last reply."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.workers", "client", target, str(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                err = p.stderr.read() if p.stderr else ""
                raise RuntimeError(f"client did not start: {line!r} {err[-300:]}")
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"client failed: {err[-300:]}")
        return clients * calls / (time.perf_counter() - t0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _forked(server: Any, wait: float = 3.0) -> bool:
    """True once the server has child processes (the extra workers)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if server.descendants():
            return True
        time.sleep(0.1)
    return False


def run(settings: Settings) -> Row:
    clients = 2 if settings.quick else 4
    row = Row(
        "WK",
        f"Jacobian req/s, --workers 2 vs 1 ({clients} client processes)",
        "req/s",
        "gradserve --workers 2",
        "gradserve --workers 1",
        "report the speed-up",
        None,
        higher_is_better=True,
    )
    row.figures = {"gradserve --workers 2": None, "gradserve --workers 1": None}
    calls = 3 if settings.quick else 25
    rounds = 1 if settings.quick else 3
    samples: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[list[float]]] = {1: [], 2: []}
    try:
        for _ in range(rounds):
            for workers in (1, 2):
                with started_server(gradserve_command("--workers", str(workers))) as server:
                    if workers > 1 and not _forked(server):
                        said = " | ".join(ln for ln in server.lines if "worker" in ln.lower())
                        row.notes["gradserve --workers 2"] = (
                            f"--workers 2 did not fork: the server stayed one process. {said}"
                        )[:300]
                        return row
                    pids = [server.proc.pid, *server.descendants()]
                    before = {pid: _cpu_seconds(pid) for pid in pids}
                    samples[workers].append(measure(server.target, clients, calls))
                    cpu[workers].append(sorted(round(_cpu_seconds(p) - before[p], 2) for p in pids))
    except ServerUnavailable as exc:
        row.notes["gradserve --workers 2"] = f"--workers not available: {exc}"[:200]
        return row
    for workers, values in samples.items():
        row.figures[f"gradserve --workers {workers}"] = statistics.median(values)
    row.extra = {
        "samples": samples,
        "server_cpu_seconds_per_process": cpu,
        "clients": clients,
        "calls_per_client": calls,
    }
    for workers in (1, 2):
        row.notes[f"gradserve --workers {workers}"] = (
            f"server CPU s per process, per round: {cpu[workers]}"
        )
    return row


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "client":
        client_main(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m bench.workers client HOST:PORT CALLS")
