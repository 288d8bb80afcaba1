"""16 concurrent clients of every kind of call, results checked: no errors, no memory growth,
no thread left behind."""

from __future__ import annotations

import threading
import time
from collections import Counter

import grpc
import numpy as np
from gradserve_client.proto import gradient_service_pb2_grpc as pb_grpc
from loadtools import duration, stats
from workload import CALLS

CLIENTS = 16
POOL = CLIENTS  # --worker-threads, with no concurrency limit: the pool's size exactly


def channel(address: str) -> grpc.Channel:
    # one connection per client, as separate client processes would have
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_mixed_load_from_16_clients(serve):
    proc = serve("--worker-threads", str(POOL), "--max-concurrent-rpcs", "0")
    pid = proc.proc.pid
    seconds = duration(6.0)
    warm_up = min(seconds / 4, 3.0)
    counts: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    phase = {"stop": 0.0}
    warm = threading.Barrier(CLIENTS + 1)

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        names = sorted(CALLS)
        with channel(proc.address) as ch:
            stub = pb_grpc.GradientStub(ch)

            def one(name: str, when: str) -> None:
                try:
                    CALLS[name](stub, rng)
                except Exception as exc:
                    with lock:
                        errors.append(f"{when} {name}: {type(exc).__name__}: {exc}")

            # warm-up: every kind once, then the mix; the pool grows to its size meanwhile
            calls, warm_until = 0, time.monotonic() + warm_up
            while calls < len(names) or time.monotonic() < warm_until:
                one(
                    names[calls] if calls < len(names) else names[rng.integers(len(names))],
                    "warm-up",
                )
                calls += 1
            warm.wait(60)
            warm.wait(60)  # the timed phase starts
            calls = 0
            while time.monotonic() < phase["stop"] and calls < 1_000_000:
                name = names[rng.integers(len(names))]
                one(name, "load")
                calls += 1
                with lock:
                    counts[name] += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in range(CLIENTS)]
    for t in threads:
        t.start()
    warm.wait(60)
    baseline = stats(pid)
    start = time.monotonic()
    phase["stop"] = start + seconds
    warm.wait(60)
    rss: list[int] = []
    while time.monotonic() < phase["stop"]:
        rss.append(stats(pid).rss)
        time.sleep(0.05)
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - start
    assert errors == [], errors[:5]
    assert set(counts) == set(CALLS), counts
    tenth = max(1, len(rss) // 10)
    first, last = np.mean(rss[:tenth]), np.mean(rss[-tenth:])
    growth = last / first - 1
    # Threads: the Train streams' pumps end with their streams, and nothing else is left.
    deadline = time.monotonic() + 15
    while stats(pid).threads > baseline.threads and time.monotonic() < deadline:
        time.sleep(0.1)
    after = stats(pid)
    total = sum(counts.values())
    print(
        f"\nmixed load: {total} calls in {elapsed:.1f} s ({total / elapsed:.0f}/s) from "
        f"{CLIENTS} clients, {dict(counts)}; RSS {first / 2**20:.1f} -> {last / 2**20:.1f} MiB "
        f"({growth:+.1%}); threads {baseline.threads} before, {after.threads} after"
    )
    assert growth < 0.10
    assert after.threads <= baseline.threads
