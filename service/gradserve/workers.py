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

The parent supervises the workers as gunicorn's arbiter does. A worker that exits while nobody
asked it to is reported (logged at ERROR) and replaced by a new process on the same port, while
the others keep serving. Restarts are bounded: a death beyond ``--max-worker-restarts`` within
``--worker-restart-window`` seconds is taken as a fault that restarting will not cure, and the
parent stops the others gracefully and exits 1, so that the supervisor (Kubernetes) sees it; so
does a replacement that cannot be forked. The parent forwards SIGTERM/SIGINT to the workers
(again to a worker that starts serving after it, whose own handler was not installed yet),
waits for them to drain, and exits 0 when they all did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from gradserve.config import Settings
from gradserve.process import start_metrics

log = logging.getLogger("gradserve.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the same as gradserve.metrics.MULTIPROC_ENV
_CREATED_DIR_ENV = "GRADSERVE_CREATED_MULTIPROC_DIR"

# How often the parent looks for exited workers and for replacements that are ready.
POLL_SECONDS = 0.05


def prepare_environment(settings: Settings) -> None:
    """With several workers, make sure ``PROMETHEUS_MULTIPROC_DIR`` is set (a new temporary
    directory if the user gave none) and exists. Call it before anything imports
    prometheus_client."""
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


@dataclass
class Worker:
    """One worker process: its index (0..N-1, kept by its replacements), its pid, and the read
    end of its ready pipe until the worker has written its line there."""

    index: int
    pid: int
    ready: int | None


def _fork_worker(settings: Settings, index: int) -> Worker:
    """Fork one worker: a grpc server is created only in the child, never in the parent."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        rc = 1
        try:
            os.close(read)
            from gradserve.server import serve

            rc = serve(settings, worker=True, ready=write)
        except BaseException:  # report anything, then leave
            log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    os.close(write)
    return Worker(index, pid, read)


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data.decode(errors="replace").strip()


class Arbiter:
    """The parent's bookkeeping: the live workers, the recent restarts, the exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings  # with the reserved port
        self.workers: dict[int, Worker] = {}  # pid -> worker
        self.restarts: deque[float] = deque()  # monotonic times of the restarts in the window
        self.stopping = False
        self.rc = 0

    def spawn(self, index: int) -> Worker:
        worker = _fork_worker(self.settings, index)
        self.workers[worker.pid] = worker
        return worker

    def stop(self, rc: int | None = None) -> None:
        """SIGTERM to every worker (they drain); the exit code becomes ``rc`` if given."""
        if rc is not None:
            self.rc = rc
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def start(self) -> str | None:
        """Fork the workers and wait until each serves; None, or the first error. Once a stop
        is asked for (SIGTERM while they start), no more are forked, and a worker that stopped
        before it served is no error."""
        for index in range(self.settings.workers):
            if self.stopping:
                break
            self.spawn(index)
        failed = None
        for worker in list(self.workers.values()):
            line = self._started(worker)
            if line != "ok" and failed is None and not self.stopping:
                failed = line or "gradserve serve: error: a worker did not start"
        return failed

    def _started(self, worker: Worker) -> str:
        """The line a worker wrote to its ready pipe ("ok", or why it did not start). A worker
        that serves after a stop was asked for is sent SIGTERM again: one that came before the
        worker had its own handler was ignored (it still ran the parent's)."""
        assert worker.ready is not None
        line, worker.ready = _read_line(worker.ready), None
        if line == "ok" and self.stopping:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        return line

    def run(self) -> None:
        """Until every worker has exited: replace those that die, within the bound."""
        while self.workers:
            self._read_ready_lines()
            self._reap()

    def _read_ready_lines(self) -> None:
        pending = {w.ready: w for w in self.workers.values() if w.ready is not None}
        if not pending:
            time.sleep(POLL_SECONDS)
            return
        readable, _, _ = select.select(list(pending), [], [], POLL_SECONDS)
        for fd in readable:
            worker = pending[fd]
            line = self._started(worker)
            if line != "ok":  # it exits next, and is reaped as a death
                log.error("worker %d (pid %d) did not start: %s", worker.index, worker.pid, line)
            elif not self.stopping:
                log.info("worker %d (pid %d) serving", worker.index, worker.pid)

    def _reap(self) -> None:
        from gradserve import metrics

        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.ready is not None:
                os.close(worker.ready)
            metrics.mark_process_dead(pid)
            how = _describe(os.waitstatus_to_exitcode(status))
            if not self.stopping:
                self._replace(worker, how)
            elif how != "exit code 0":
                log.error("worker %d (pid %d) exited with %s", worker.index, pid, how)
                self.rc = 1
            else:
                log.info("worker %d (pid %d) stopped", worker.index, pid)

    def _replace(self, dead: Worker, how: str) -> None:
        s = self.settings
        now = time.monotonic()
        while self.restarts and self.restarts[0] <= now - s.worker_restart_window:
            self.restarts.popleft()
        if len(self.restarts) >= s.max_worker_restarts:
            log.error(
                "worker %d (pid %d) exited unexpectedly (%s), after %d restarts within %gs"
                " (--max-worker-restarts, --worker-restart-window): giving up, stopping the"
                " others",
                dead.index, dead.pid, how, len(self.restarts), s.worker_restart_window,
            )  # fmt: skip
            self.stop(rc=1)
            return
        self.restarts.append(now)
        try:
            new = self.spawn(dead.index)
        except OSError as exc:  # fork failed (ENOMEM, say): stop the others, as after a storm
            log.error(
                "worker %d (pid %d) exited unexpectedly (%s), and could not be restarted: %s;"
                " stopping the others",
                dead.index, dead.pid, how, exc,
            )  # fmt: skip
            self.stop(rc=1)
            return
        log.error(
            "worker %d (pid %d) exited unexpectedly (%s); restarting it as pid %d"
            " (restart %d of at most %d within %gs)",
            dead.index, dead.pid, how, new.pid, len(self.restarts), s.max_worker_restarts,
            s.worker_restart_window,
        )  # fmt: skip


def serve_workers(settings: Settings) -> int:
    """Fork ``settings.workers`` server processes and supervise them until they have all
    exited; the exit code (0 after a drain on SIGTERM/SIGINT, 1 after a failure)."""
    problem = _multiprocess_ready()
    if problem is not None:
        print(f"gradserve serve: error: --workers: {problem}", file=sys.stderr, flush=True)
        return 1
    from gradserve import metrics
    from gradserve import server as _preloaded  # noqa: F401

    # The server's modules (grpc, numpy, the core) are imported here, once, rather than in
    # every worker after the fork, as gunicorn's --preload does: a replacement then serves in
    # milliseconds instead of seconds. Importing grpc is safe before fork(); creating a grpc
    # object would not be, and only the workers do.
    created = os.environ.pop(_CREATED_DIR_ENV, None)
    metrics.clean_multiproc_dir()  # creates the directory too
    parent = os.getpid()
    arbiter: Arbiter | None = None

    def on_signal(signum: int, _frame: object) -> None:
        if os.getpid() != parent or arbiter is None:  # a worker before its own handler
            return
        if not arbiter.stopping:
            log.info("signal %d: stopping %d workers", signum, len(arbiter.workers))
        arbiter.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        with reserve_port(settings.host, settings.port) as port:
            arbiter = Arbiter(settings.model_copy(update={"port": port}))
            failed = arbiter.start()
            if failed is None and not arbiter.stopping:
                try:
                    state = start_metrics(settings)
                except OSError as exc:
                    failed = f"gradserve serve: error: metrics port: {exc}"
            if failed is not None:
                print(failed, file=sys.stderr, flush=True)
                arbiter.stop(rc=1)
            elif not arbiter.stopping:  # stopped while starting: drain, no banner
                pids = " ".join(str(p) for p in arbiter.workers)
                print(
                    f"gradserve listening on {settings.host}:{port} "
                    f"({state}; {settings.workers} workers, pids {pids})",
                    flush=True,
                )
            arbiter.run()
            return arbiter.rc
    except OSError as exc:  # the port, or a fork while starting
        print(f"gradserve serve: error: {exc}", file=sys.stderr, flush=True)
        if arbiter is not None:  # the workers already forked drain before the parent exits
            arbiter.stop()
            arbiter.run()
        return 1
    finally:
        if created:
            shutil.rmtree(created, ignore_errors=True)


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
