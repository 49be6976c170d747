"""A send-rate limit shared by every connection of one delivery process.

Relays cap senders in two ways: a steady rate (messages per second) and a budget per hour.
The first is met by spacing sends evenly, which is kinder to a relay than bursts; the
second by a sliding one-hour window of past send times, seeded from the ledger so a run
started right after another does not overspend the same hour.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["RateLimiter"]

HOUR = 3600.0


class RateLimiter:
    """Admit at most ``per_second`` sends a second and ``per_hour`` an hour (0: no limit)."""

    def __init__(
        self,
        per_second: float = 0.0,
        per_hour: int = 0,
        *,
        recent: Iterable[float] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``recent`` are ``clock()`` times of sends already made in the past hour."""
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._per_hour = per_hour
        self._clock = clock
        self._next_slot = clock()
        self._window: deque[float] = deque(sorted(recent)[-per_hour:] if per_hour > 0 else ())
        self._lock = asyncio.Lock()

    @property
    def limited(self) -> bool:
        return self._interval > 0 or self._per_hour > 0

    def delay(self) -> float:
        """Seconds to wait before the next send may start; 0 when it may start now."""
        now = self._clock()
        wait = max(0.0, self._next_slot - now)
        if self._per_hour > 0:
            while self._window and self._window[0] <= now - HOUR:
                self._window.popleft()
            if len(self._window) >= self._per_hour:
                wait = max(wait, self._window[0] + HOUR - now)
        return wait

    def take(self) -> None:
        """Count a send as made now."""
        now = self._clock()
        # A slot is not banked while idle: after a pause the next send goes at once,
        # and the ones after it are spaced again.
        self._next_slot = max(self._next_slot, now) + self._interval
        if self._per_hour > 0:
            self._window.append(now)

    async def acquire(self) -> bool:
        """Wait until a send is allowed, then count it as made; True if it had to wait."""
        if not self.limited:
            return False
        waited = self._lock.locked()  # another connection is waiting its turn ahead of this
        async with self._lock:  # connections queue up in turn, none jumps ahead
            while (wait := self.delay()) > 0:
                waited = True
                await asyncio.sleep(wait)
            self.take()
        return waited
