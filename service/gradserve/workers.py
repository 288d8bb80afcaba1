"""``gradserve serve --workers N``: N server processes sharing one port, as grpc's
multiprocessing example does.

The parent reserves the port (a socket bound with SO_REUSEPORT, never listening; port 0 picks
a free one), forks the workers *before* anything of grpc is created in it, and each worker then
binds its own grpc server to that port with SO_REUSEPORT: the kernel spreads incoming
*connections* over the workers (so a single client channel stays on one worker; see
docs/operations.md on load balancing).

Metrics use prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be set
before prometheus_client is imported, which ``prepare_environment`` (called by ``python -m
gradserve serve`` before it imports the server) does, with a temporary directory if the user set
none. The parent empties the directory, serves ``/metrics`` (the sum over the workers) and marks
exited workers dead.

The parent forwards SIGTERM/SIGINT to the workers, waits for them to drain, and exits 0 when
they all did. A worker that exits while nobody asked it to is reported (logged at ERROR); the
parent then stops the others gracefully and exits 1, so that the supervisor (Kubernetes)
restarts the whole pod rather than leave it running with fewer workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator

from gradserve.config import Settings

log = logging.getLogger("gradserve.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the same as gradserve.metrics.MULTIPROC_ENV
_CREATED_DIR_ENV = "GRADSERVE_CREATED_MULTIPROC_DIR"


def prepare_environment(settings: Settings) -> None:
    """With several workers, make sure ``PROMETHEUS_MULTIPROC_DIR`` is set (a new temporary
    directory if the user gave none) and exists. Call it before anything imports
    prometheus_client."""
    if settings.workers <= 1:
        return
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        path = tempfile.mkdtemp(prefix="gradserve-metrics-")
        os.environ[MULTIPROC_ENV] = path
        os.environ[_CREATED_DIR_ENV] = path
    os.makedirs(path, exist_ok=True)


def _multiprocess_ready() -> str | None:
    """None if prometheus-client runs in multiprocess mode, else why not."""
    if not os.environ.get(MULTIPROC_ENV):
        return f"{MULTIPROC_ENV} is not set"
    from prometheus_client import values

    if "Mmap" not in getattr(values.ValueClass, "__name__", ""):
        return (
            f"prometheus_client was imported before {MULTIPROC_ENV} was set; "
            "set it in the environment, or start the server with `gradserve serve`"
        )
    return None


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (not listen) a SO_REUSEPORT socket on ``host:port``; yields the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0:
            raise OSError("SO_REUSEPORT is not supported here")
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _fork_worker(settings: Settings, index: int) -> tuple[int, int]:
    """Fork one worker; returns (pid, read end of its ready pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        rc = 1
        try:
            os.close(read)
            from gradserve.server import serve_one

            rc = serve_one(settings, worker=True, ready=write)
        except BaseException:  # report anything, then leave
            log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    os.close(write)
    return pid, read


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data.decode(errors="replace").strip()


def serve_workers(settings: Settings) -> int:
    """Fork ``settings.workers`` server processes; run until they have all exited."""
    problem = _multiprocess_ready()
    if problem is not None:
        print(f"gradserve serve: error: --workers: {problem}", file=sys.stderr, flush=True)
        return 1
    from gradserve import metrics

    created = os.environ.pop(_CREATED_DIR_ENV, None)
    metrics.clean_multiproc_dir()  # creates the directory too
    parent = os.getpid()
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def stop_children() -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if os.getpid() != parent:  # a worker that has not installed its own handler yet
            return
        if not stopping:
            log.info("signal %d: stopping %d workers", signum, len(children))
        stopping = True
        stop_children()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    rc = 0
    try:
        with reserve_port(settings.host, settings.port) as port:
            worker_settings = settings.model_copy(update={"port": port})
            pipes = {}
            for index in range(settings.workers):
                pid, ready = _fork_worker(worker_settings, index)
                children[pid] = index
                pipes[pid] = ready
            failed = [line for line in (_read_line(fd) for fd in pipes.values()) if line != "ok"]
            if failed:
                rc = 1
                stopping = True
                stop_children()
                print(
                    failed[0] or "gradserve serve: error: a worker did not start",
                    file=sys.stderr,
                    flush=True,
                )
                state = "failed"
            else:
                state = _start_metrics(settings)
                if state.startswith("gradserve serve: error"):
                    print(state, file=sys.stderr, flush=True)
                    rc, stopping = 1, True
                    stop_children()
            if rc == 0:
                pids = " ".join(str(p) for p in children)
                print(
                    f"gradserve listening on {settings.host}:{port} "
                    f"({state}; {settings.workers} workers, pids {pids})",
                    flush=True,
                )
            while children:
                pid, status = os.waitpid(-1, 0)
                index = children.pop(pid, None)
                if index is None:
                    continue
                metrics.mark_process_dead(pid)
                code = os.waitstatus_to_exitcode(status)
                if not stopping:
                    log.error(
                        "worker %d (pid %d) exited unexpectedly (%s); stopping the others",
                        index,
                        pid,
                        _describe(code),
                    )
                    rc, stopping = 1, True
                    stop_children()
                elif code != 0:
                    log.error("worker %d (pid %d) exited with %s", index, pid, _describe(code))
                    rc = 1
                else:
                    log.info("worker %d (pid %d) stopped", index, pid)
    except OSError as exc:
        stop_children()
        print(f"gradserve serve: error: {exc}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        if created:
            shutil.rmtree(created, ignore_errors=True)
    return rc


def _start_metrics(settings: Settings) -> str:
    from gradserve.server import _start_metrics as start
    from gradserve.server import stop_signals_blocked

    try:
        with stop_signals_blocked():  # signals reach the main thread, waiting in waitpid
            return start(settings)
    except OSError as exc:
        return f"gradserve serve: error: metrics port: {exc}"


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
