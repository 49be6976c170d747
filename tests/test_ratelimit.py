"""The send-rate limit, driven by a clock the test controls (no sleeping, no timing)."""

from __future__ import annotations

from pipeline.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_second_spaces_sends_evenly_and_banks_nothing_while_idle() -> None:
    clock = Clock()
    limiter = RateLimiter(per_second=4, clock=clock)
    assert limiter.delay() == 0
    limiter.take()
    assert limiter.delay() == 0.25
    clock.now += 0.25
    assert limiter.delay() == 0
    limiter.take()
    clock.now += 60  # a long pause does not buy a burst afterwards
    limiter.take()
    assert limiter.delay() == 0.25


def test_per_hour_counts_a_sliding_window_seeded_with_earlier_sends() -> None:
    clock = Clock()
    limiter = RateLimiter(per_hour=3, recent=[clock.now - 3000, clock.now - 10], clock=clock)
    assert limiter.delay() == 0
    limiter.take()
    assert limiter.delay() == 600  # the send from 3000 s ago leaves the window in 600 s
    clock.now += 600
    assert limiter.delay() == 0


def test_no_limit_means_no_wait() -> None:
    limiter = RateLimiter()
    assert not limiter.limited
    assert limiter.delay() == 0
