"""The servicer's cancel callback (what the core polls between nodes) against a fake call
context: true once the deadline passed (as grpc sees it) or the client went away, with the
client polled at most once per interval. The servers' side is in
tests/integration/test_server_load.py (`..._frees_the_worker`)."""

from __future__ import annotations

import time

from gradserve.rpc.requests import cancel_callback


class Context:
    """A grpc.ServicerContext with a deadline ``remaining`` seconds away (None: none)."""

    def __init__(self, remaining: float | None = None, grpc_says_left: float | None = None):
        self.deadline = None if remaining is None else time.monotonic() + remaining
        self.grpc_says_left = grpc_says_left  # what time_remaining answers once it has passed
        self.active = True
        self.polls = 0
        self.deadline_reads = 0

    def time_remaining(self) -> float | None:
        self.deadline_reads += 1
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        return left if left > 0 or self.grpc_says_left is None else self.grpc_says_left

    def is_active(self) -> bool:
        self.polls += 1
        return self.active


def test_an_active_call_without_deadline_is_never_cancelled() -> None:
    context = Context()
    cancelled = cancel_callback(context, interval=0)
    assert [cancelled() for _ in range(5)] == [False] * 5
    assert context.polls == 5


def test_a_client_that_went_away_cancels_at_the_next_poll() -> None:
    context = Context()
    cancelled = cancel_callback(context, interval=0.5)
    assert not cancelled()
    context.active = False
    assert not cancelled()  # within the interval: not asked again
    assert context.polls == 0
    time.sleep(0.55)
    assert cancelled()
    assert context.polls == 1


def test_the_client_is_polled_at_most_once_per_interval() -> None:
    context = Context()
    cancelled = cancel_callback(context, interval=0.05)
    stop = time.monotonic() + 0.13
    calls = 0
    while time.monotonic() < stop:
        assert not cancelled()
        calls += 1
    assert calls > 10 and 1 <= context.polls <= 2  # at 0.05 and 0.10 s, unless stalled


def test_a_passed_deadline_cancels_without_polling_the_client() -> None:
    context = Context(remaining=0.3)
    cancelled = cancel_callback(context, interval=10)
    assert not cancelled()
    time.sleep(0.35)
    assert cancelled() and cancelled()
    assert context.polls == 0


def test_the_deadline_is_read_once_while_it_is_ahead() -> None:
    context = Context(remaining=30)
    cancelled = cancel_callback(context, interval=10)
    assert [cancelled() for _ in range(5)] == [False] * 5
    assert context.deadline_reads == 1  # at creation; then only the clock is compared


def test_grpc_s_view_of_the_deadline_wins() -> None:
    # The local clock says the deadline passed; grpc still gives the call time (its status
    # reports the outcome, so its word counts): not cancelled.
    context = Context(remaining=0.3, grpc_says_left=0.5)
    cancelled = cancel_callback(context, interval=10)
    time.sleep(0.35)
    assert not cancelled()
    context.grpc_says_left = 0.0
    assert cancelled()


class Clock:
    """time.monotonic, set by hand: the boundaries are reached exactly."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FixedContext:
    """A call context whose deadline is ``left`` seconds away by ``clock``."""

    def __init__(self, clock: Clock, left: float | None) -> None:
        self.clock = clock
        self.deadline = None if left is None else clock.now + left
        self.active = True

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock.now

    def is_active(self) -> bool:
        return self.active


def test_the_call_is_over_at_its_deadline_exactly(monkeypatch) -> None:
    clock = Clock(100.0)
    monkeypatch.setattr(time, "monotonic", clock)
    context = FixedContext(clock, left=1.0)
    cancelled = cancel_callback(context, interval=10)
    clock.now = 100.5
    assert not cancelled()
    clock.now = 101.0  # grpc says 0 s remain: the deadline has come
    assert cancelled()


def test_the_client_is_polled_when_its_interval_is_up_exactly(monkeypatch) -> None:
    clock = Clock(100.0)
    monkeypatch.setattr(time, "monotonic", clock)
    context = FixedContext(clock, left=None)
    cancelled = cancel_callback(context, interval=10)
    context.active = False
    clock.now = 109.5
    assert not cancelled()  # not polled yet
    clock.now = 110.0
    assert cancelled()
