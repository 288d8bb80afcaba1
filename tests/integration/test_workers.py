"""``gradserve serve --workers 2``: two processes share the port, one scrape sees their sum,
SIGTERM drains both and the parent exits 0; a worker that dies is replaced while the other keeps
serving, and a burst of deaths beyond --max-worker-restarts stops the server with exit 1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from gradserve_client.proto import gradient_service_pb2 as pb
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from tools import free_port, samples, scrape, tool

INFO = "/gradserve.v1.Gradient/GetServerInfo"
CHANNELS = 24


def banner_pids(banner: str) -> set[int]:
    match = re.search(r"2 workers, pids (\d+) (\d+)\)", banner)
    assert match, banner
    return {int(match.group(1)), int(match.group(2))}


def children(parent: int) -> set[int]:
    """The live child processes of ``parent`` (from /proc; zombies left out)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def info_on_a_new_connection(address: str, timeout: float = 1.0) -> None:
    """GetServerInfo over a connection of its own (so the kernel picks a worker for it)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(address, options=options) as channel:
        pb_grpc.GradientStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=timeout)


def seconds_until_served(address: str, limit: float = 10.0) -> float:
    """Seconds until 10 new connections in a row are served."""
    start = time.monotonic()
    streak = 0
    while streak < 10:
        assert time.monotonic() - start < limit, "not served again"
        try:
            info_on_a_new_connection(address)
            streak += 1
        except grpc.RpcError:
            streak = 0
            time.sleep(0.01)
    return time.monotonic() - start


def workers_after(parent: int, killed: set[int], limit: float = 10.0) -> set[int]:
    """The two workers of ``parent`` once none of ``killed`` is among them."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pids = children(parent)
        if len(pids) == 2 and not pids & killed:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"no replacements for {killed}: {children(parent)}")


def test_two_workers_share_the_port_and_the_metrics(server_process, tmp_path):
    port = free_port()
    proc = server_process(
        "--workers", "2", "--metrics-port", str(port), "--log-level", "debug",
        "--max-concurrent-rpcs", "10",
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
    )  # fmt: skip
    pids = banner_pids(proc.banner)
    assert children(proc.proc.pid) == pids
    # Separate connections (no shared subchannel pool), so the kernel spreads them.
    for _ in range(CHANNELS):
        info_on_a_new_connection(proc.address, timeout=10)
    text = scrape(port)
    requests = samples(text, "gradserve_requests_total")
    assert requests[f'gradserve_requests_total{{code="OK",method="{INFO}"}}'] == CHANNELS
    assert samples(text, "gradserve_max_concurrent_rpcs") == {
        "gradserve_max_concurrent_rpcs": 20.0  # 10 per live worker
    }
    check = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr

    assert proc.stop() == 0
    served_by = {
        int(m.group(1))
        for m in re.finditer(r"pid=(\d+) msg=rpc method=(\S+)", proc.stderr)
        if m.group(2) == INFO
    }
    assert served_by == pids, proc.stderr  # both workers served requests


def test_a_killed_worker_is_replaced_while_the_other_serves(server_process, tmp_path):
    port = free_port()
    proc = server_process(
        "--workers", "2", "--shutdown-grace", "5", "--log-level", "debug",
        "--metrics-port", str(port), "--max-concurrent-rpcs", "10",
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
    )  # fmt: skip
    parent = proc.proc.pid
    dead, alive = sorted(banner_pids(proc.banner))

    # One worker killed: the other goes on serving new connections, without a gap.
    os.kill(dead, signal.SIGKILL)
    one_down = seconds_until_served(proc.address)
    assert one_down < 2.0
    (first,) = workers_after(parent, {dead}) - {alive}

    # Both killed at once: nothing listens until the replacements serve, within 2 s.
    seconds_until_served(proc.address)
    os.kill(alive, signal.SIGKILL)
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    both_down = seconds_until_served(proc.address)
    assert both_down < 2.0, both_down
    replacements = workers_after(parent, {dead, alive, first})
    for _ in range(CHANNELS):
        info_on_a_new_connection(proc.address, timeout=10)
    # the metrics forget the dead: 10 per live worker
    assert samples(scrape(port), "gradserve_max_concurrent_rpcs") == {
        "gradserve_max_concurrent_rpcs": 20.0
    }
    assert proc.proc.poll() is None
    assert proc.stop() == 0  # SIGTERM drains the replacements, exit 0
    err = proc.stderr
    print(f"served again {one_down:.3f} s after one kill, {both_down:.3f} s after both "
          f"({time.monotonic() - killed:.1f} s ago)")  # fmt: skip
    assert f"pid {dead}) exited unexpectedly (signal SIGKILL); restarting it as pid {first}" in err
    assert "(restart 3 of at most 5 within 60s)" in err
    for pid in replacements:
        assert f"(pid {pid}) stopped" in err
    served_by = {int(m.group(1)) for m in re.finditer(r"pid=(\d+) msg=rpc method=", err)}
    assert replacements <= served_by, err  # the replacements served requests


def test_a_restart_storm_stops_the_server_with_exit_1(server_process):
    proc = server_process(
        "--workers", "2", "--max-worker-restarts", "2", "--worker-restart-window", "60",
        "--shutdown-grace", "5",
    )  # fmt: skip
    parent = proc.proc.pid
    for _ in range(2):  # two deaths: both replaced
        victim = min(children(parent))
        os.kill(victim, signal.SIGKILL)
        workers_after(parent, {victim})
        seconds_until_served(proc.address)
    victim = min(children(parent))
    os.kill(victim, signal.SIGKILL)  # the third within the window: the parent gives up
    assert proc.proc.wait(30) == 1
    proc.stop()
    assert (
        f"(pid {victim}) exited unexpectedly (signal SIGKILL), after 2 restarts within 60s"
        " (--max-worker-restarts, --worker-restart-window): giving up, stopping the others"
    ) in proc.stderr
    assert not children(parent)


def run_patched(script: str, hang: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a server started by ``script`` (`serve_workers` with a
    fault patched in), once it has exited with no worker left; its workers are killed and
    ``hang`` raised if it runs for 30 s."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the server did not exit: {hang}") from None
    assert not children(proc.pid)
    return proc.returncode, out, err


# The parent signals itself right after forking the first worker, before that worker can have
# installed its own handler: as a kubelet stopping a pod that is still starting.
STOPPED_WHILE_STARTING = """
import os, signal, sys
from gradserve import workers
from gradserve.config import Settings

settings = Settings(host="127.0.0.1", port=0, metrics_port=0, workers=2, shutdown_grace=1)
workers.prepare_environment(settings)
spawn = workers.Arbiter.spawn

def spawn_then_stop(self, index):
    worker = spawn(self, index)
    if index == 0:
        os.kill(os.getpid(), signal.SIGTERM)
    return worker

workers.Arbiter.spawn = spawn_then_stop
sys.exit(workers.serve_workers(settings))
"""


def test_a_sigterm_while_the_workers_start_stops_them_all():
    """No worker is forked after the stop, the one that was is signalled again once it serves
    (the first SIGTERM came before its handler), and the parent exits 0 without a banner."""
    rc, out, err = run_patched(STOPPED_WHILE_STARTING, "a SIGTERM while they started was ignored")
    assert rc == 0, err
    assert "listening" not in out


# Once both workers serve, one is killed and the fork of its replacement fails.
FORK_FAILS_ON_RESTART = """
import os, signal, sys
from gradserve import workers
from gradserve.config import Settings

settings = Settings(host="127.0.0.1", port=0, metrics_port=0, workers=2, shutdown_grace=1)
workers.prepare_environment(settings)
fork, start = workers._fork_worker, workers.Arbiter.start

def fork_once(settings, index, forked=[]):
    if len(forked) == 2:
        raise OSError(12, "Cannot allocate memory")
    forked.append(index)
    return fork(settings, index)

def start_then_kill_one(self):
    failed = start(self)
    os.kill(min(self.workers), signal.SIGKILL)
    return failed

workers._fork_worker = fork_once
workers.Arbiter.start = start_then_kill_one
sys.exit(workers.serve_workers(settings))
"""


def test_a_failed_restart_stops_the_other_worker_and_exits_1():
    """The parent stops the other worker, waits until it has drained, and exits 1."""
    rc, out, err = run_patched(FORK_FAILS_ON_RESTART, "it kept running after a restart failed")
    assert rc == 1, err
    assert "could not be restarted: [Errno 12] Cannot allocate memory; stopping the others" in err
    assert not [pid for pid in banner_pids(out) if Path(f"/proc/{pid}").exists()]
