"""WK and SH: one Jacobian of about a second shared among server processes (``parallel=K``).

The Jacobian is that of y = f(f(...f(x))), LAYERS times the block f(x) = tanh(W2 tanh(W1 x)),
x and y of 768 and a hidden layer of 2304, the two weights constants of the graph shared by
every block (sent once, then its graph_id): 768 cotangents through 2 x LAYERS 768x2304 layers,
12 chunks of 64 rows for the server, 4.5 MiB of result. LAYERS makes a plain call take about a
second on one quiet core (one block takes 0.1-0.16 s). One `gs.Client` in
this process makes the calls, timed in interleaved rounds (`time_interleaved`).

- WK: `c.jacobian(..., parallel=2)` to `gradserve serve --workers 2` against the same call to
  `--workers 1` (both servers run throughout; an idle one costs nothing). The shares go over
  two connections, on different processes of --workers 2. Also timed: the plain call
  (parallel=1) to --workers 1.
- SH: `parallel=3` over a round_robin channel to three replicas (three `gradserve serve`, an
  ``ipv4:`` list of their addresses) against the plain call to one of them.
- WKc: what `--workers` is for, many concurrent calls whose time is Python: CLIENTS threads,
  each with a `gs.Client` of its own connection, call small Jacobians (`ode_graph`) for a
  fixed time, to `--workers 2` and to `--workers 1`; requests per second. Also timed: the same
  clients without connections of their own, which gRPC's global subchannel pool makes one
  connection (so one worker), as Clients to one address in one process are by default.

The servers keep their own BLAS policy (`--blas-threads 0`: cores / workers / concurrent
RPCs, one thread each here), not the benchmark's GRADSERVE_BLAS_THREADS, because the rows
compare server configurations as deployed: with two BLAS threads in each of two processes
the cores would be oversubscribed. So a call computes on one core; on this 2-core machine two
processes can at best halve the time, and three replicas cannot do better than two. One
process with parallel=2 also runs its two shares at once, on two RPC threads (numpy releases
the GIL in its loops and GEMMs), so `--workers 1, parallel=2` is about as fast as
`--workers 2`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from bench.harness import (
    Contender,
    Row,
    Settings,
    relative_iqr,
    threaded_rate,
    time_interleaved,
)
from bench.servers import ServerUnavailable, Started, gradserve_command, started_server

N, HIDDEN, LAYERS = 768, 2304, 6
OWN_BLAS = ("--blas-threads", "0")
ODE_STATES, ODE_STEPS, CLIENTS = 4, 200, 8


def graph() -> Any:
    import gradserve_client as gs

    rng = np.random.default_rng(7)
    g = gs.Graph()
    x = g.input("x", shape=(N,))
    W1 = g.constant(rng.standard_normal((HIDDEN, N)) / np.sqrt(N))
    W2 = g.constant(rng.standard_normal((N, HIDDEN)) / np.sqrt(HIDDEN))
    y = x
    for _ in range(LAYERS):
        y = gs.tanh(W2 @ gs.tanh(W1 @ y))
    g.output("y", y)
    return g


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes(servers: list[Started]) -> list[int]:
    return [pid for s in servers for pid in (s.proc.pid, *s.descendants())]


def _timed(
    row: Row, contenders: list[Contender], servers: list[Started], settings: Settings
) -> None:
    """Time the contenders into the row, with each server process's CPU seconds meanwhile."""
    long_calls = dataclasses.replace(settings, rounds=min(settings.rounds, 9), warmup=1)
    with _server_cpu(row, servers):
        row.figures, row.spread, row.notes = time_interleaved(contenders, long_calls)


@contextmanager
def _server_cpu(row: Row, servers: list[Started]) -> Iterator[None]:
    """Put into the row each server process's CPU seconds while the block runs."""
    pids = _processes(servers)
    before = {pid: _cpu_seconds(pid) for pid in pids}
    yield
    row.extra["server_cpu_seconds"] = {p: round(_cpu_seconds(p) - before[p], 2) for p in pids}


def ode_graph() -> Any:
    """ODE_STEPS explicit Euler steps of x' = tanh(A x) with ODE_STATES states: about 800 nodes
    of 4 elements each, so that a Jacobian (the solution's sensitivity to its initial state)
    spends its time in the executor's Python, which one process runs on one core at a time."""
    import gradserve_client as gs

    g = gs.Graph()
    x = g.input("x", shape=(ODE_STATES,))
    A = g.constant(np.random.default_rng(3).standard_normal((ODE_STATES, ODE_STATES)) / 2)
    y = x
    for _ in range(ODE_STEPS):
        y = y + 0.05 * gs.tanh(A @ y)
    g.output("y", y)
    return g


def _started(stack: ExitStack, row: Row, *commands: list[str]) -> list[Started] | None:
    """A server for each command, stopped with `stack`; None, said in the row's notes, if one
    cannot start."""
    try:
        return [stack.enter_context(started_server(command)) for command in commands]
    except ServerUnavailable as exc:
        row.notes[row.gradserve] = str(exc)[:200]
        return None


def _workers_2_and_1(stack: ExitStack, row: Row) -> list[Started] | None:
    """`gradserve serve --workers 2` and `--workers 1`, each with its own BLAS policy."""
    commands = [gradserve_command("--workers", str(n), *OWN_BLAS) for n in (2, 1)]
    return _started(stack, row, *commands)


def _jacobian(client: Any, parallel: int) -> Callable[[], Any]:
    g = graph()
    inputs = {"x": np.random.default_rng(8).standard_normal(N)}
    return lambda: client.jacobian(g, inputs, of="y", wrt="x", parallel=parallel)


def wk(settings: Settings) -> Row:
    import gradserve_client as gs

    row = Row(
        "WK",
        "1 s Jacobian, parallel=2: --workers 2 vs --workers 1",
        "s",
        "--workers 2, parallel=2",
        "--workers 1, parallel=2",
        ">= 1.6x faster",
        1 / 1.6,
    )
    with ExitStack() as stack:
        servers = _workers_2_and_1(stack, row)
        if servers is None:
            return row
        two, one = servers
        c2 = stack.enter_context(gs.Client(two.target))
        c1 = stack.enter_context(gs.Client(one.target))
        contenders = [
            Contender("--workers 2, parallel=2", _jacobian(c2, 2)),
            Contender("--workers 1, parallel=2", _jacobian(c1, 2)),
            Contender("--workers 1, parallel=1", _jacobian(c1, 1)),
        ]
        _timed(row, contenders, [two, one], settings)
        row.extra["lane_processes"] = list(c2._lane_processes)
    return row


def sh(settings: Settings) -> Row:
    import gradserve_client as gs

    row = Row(
        "SH",
        "1 s Jacobian, parallel=3 on 3 replicas (round_robin) vs 1 replica",
        "s",
        "3 replicas, parallel=3",
        "1 replica, parallel=1",
        "<= 0.75x the time",
        0.75,
    )
    with ExitStack() as stack:
        replicas = _started(stack, row, *[gradserve_command(*OWN_BLAS)] * 3)
        if replicas is None:
            return row
        target = "ipv4:" + ",".join(r.target for r in replicas)
        shared = stack.enter_context(gs.Client(target, load_balancing="round_robin"))
        shared.health()  # round_robin connects to every replica
        single = stack.enter_context(gs.Client(replicas[0].target))
        contenders = [
            Contender("3 replicas, parallel=3", _jacobian(shared, 3)),
            Contender("1 replica, parallel=1", _jacobian(single, 1)),
            Contender("1 replica, parallel=3", _jacobian(single, 3)),
        ]
        _timed(row, contenders, replicas, settings)
    return row


def wkc(settings: Settings) -> Row:
    import gradserve_client as gs

    row = Row(
        "WKc",
        f"{CLIENTS} clients' small Jacobians ({ODE_STEPS}-step ODE): --workers 2 vs --workers 1",
        "req/s",
        "--workers 2",
        "--workers 1",
        "none (measured)",
        None,
        higher_is_better=True,
    )
    with ExitStack() as stack:
        servers = _workers_2_and_1(stack, row)
        if servers is None:
            return row
        two, one = servers

        g, inputs = ode_graph(), {"x": np.ones(ODE_STATES)}

        def calls(server: Started, *options: tuple[str, Any]) -> list[Callable[[], Any]]:
            """CLIENTS Jacobian calls, each through a Client of its own."""
            clients = [
                stack.enter_context(gs.Client(server.target, options=options))
                for _ in range(CLIENTS)
            ]
            return [functools.partial(c.jacobian, g, inputs, of="y", wrt="x") for c in clients]

        contenders = {
            "--workers 2": calls(two, gs.OWN_CONNECTION),
            "--workers 1": calls(one, gs.OWN_CONNECTION),
            "--workers 2, the Clients sharing one connection": calls(two),
        }
        seconds, rounds = (0.2, 1) if settings.quick else (1.0, 5)
        for fns in contenders.values():
            threaded_rate(fns, seconds=seconds / 2)  # compiles, and opens every connection
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        with _server_cpu(row, [two, one]):
            for _ in range(rounds):
                for name, fns in contenders.items():
                    samples[name].append(threaded_rate(fns, seconds=seconds))
    for name, values in samples.items():
        row.figures[name] = statistics.median(values)
        row.spread[name] = relative_iqr(values)
    return row


def run(settings: Settings) -> list[Row]:
    return [wk(settings), sh(settings), wkc(settings)]
