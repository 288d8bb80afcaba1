"""The server's stop signals (gradserve.process.StopSignals): SIGTERM or SIGINT, whichever
thread the kernel hands it to and whenever it comes after install, ends `wait`, and nothing
of ours runs in a Python signal handler (one that set a threading.Event could deadlock on the
Event's lock, held by the main thread inside wait(): a server that ignored SIGTERM)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from gradserve.process import STOP_SIGNALS, StopSignals, stop_signals_blocked


@pytest.fixture
def stop() -> Iterator[StopSignals]:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stop = StopSignals()
    # A watchdog: if a signal were lost, SIGINT in 10 s ends the wait (and the test fails).
    watchdog = threading.Timer(10, os.kill, (os.getpid(), signal.SIGINT))
    watchdog.start()
    yield stop
    watchdog.cancel()
    stop.close()
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
    assert signal.set_wakeup_fd(-1) == -1  # closed: no wakeup fd left behind


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_is_kept_for_the_wait(stop: StopSignals, sig) -> None:
    with stop_signals_blocked():  # as while the server starts its threads
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
    assert stop.wait() == sig


def test_a_signal_another_thread_receives_ends_the_wait_at_once(stop: StopSignals) -> None:
    """The main thread blocks SIGTERM, so the kernel hands it to the one thread that does not:
    its C handler writes the pipe the main thread reads (no 1 s poll to notice it)."""
    ready, done = threading.Event(), threading.Event()

    def receiver() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        ready.set()
        done.wait(10)

    thread = threading.Thread(target=receiver)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        thread.start()
        ready.wait(5)
        start = time.monotonic()
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        assert stop.wait() == signal.SIGTERM
        assert time.monotonic() - start < 0.6
    finally:
        done.set()
        thread.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_no_signal_is_lost_whenever_it_comes(stop: StopSignals) -> None:
    """300 signals, each at a random moment from before the wait to well into it, from
    another thread (so that it may land in any thread): every one ends one wait."""
    rng = random.Random(0)
    start = time.monotonic()
    for _ in range(300):
        sender = threading.Timer(rng.uniform(0, 0.002), os.kill, (os.getpid(), signal.SIGTERM))
        sender.start()
        if rng.random() < 0.5:
            time.sleep(0.002)  # now the signal mostly comes before the wait
        assert stop.wait() == signal.SIGTERM
        sender.join()
    assert time.monotonic() - start < 9  # none waited for the watchdog
