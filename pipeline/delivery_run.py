"""One delivery run's terms and outcome: ``DeliveryOptions`` (how a drain sends:
connections, retries, rate limits, leases, from ``[send]`` split between processes and
workers) and ``DeliveryReport`` (what it did: sent, deferred, failed, held, pending).

Plain values, shared by the drains (:mod:`pipeline.drain`), the workers and the command
line; the transports that send are :mod:`pipeline.delivery`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.config_sections import BounceSettings, SendSettings

__all__ = ["DeliveryOptions", "DeliveryReport"]


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How one drain sends: connections, retry budget, rate limits, claiming."""

    connections: int = 4
    max_attempts: int = 5
    rate_per_second: float = 0.0  # across this drain's connections; 0: no limit
    rate_per_hour: int = 0
    retry_base: float = 60.0  # seconds before the first retry; doubles with each attempt
    retry_cap: float = 6 * 3600.0
    lease: float = 120.0  # seconds a claim holds rows; renewed while the drain runs
    batch: int = 200  # rows claimed at a time
    history_share: tuple[int, int] = (0, 1)  # (index, of) of past sends this drain counts
    bounces: BounceSettings = field(default_factory=BounceSettings)  # scores, breaker

    @classmethod
    def from_settings(
        cls,
        send: SendSettings,
        *,
        share: int = 0,
        shares: int = 1,
        bounces: BounceSettings | None = None,
    ) -> DeliveryOptions:
        """``[send]`` settings, split evenly when ``shares`` processes send in parallel.

        The rate limits are also divided by ``[send] workers``: that many deliverers (``pipeline
        worker`` on several machines) each take their part of the relay's limits, so together
        they stay within them. Connections are per machine and only split between processes.
        """
        parts = shares * send.workers
        return cls(
            bounces=bounces or BounceSettings(),
            connections=max(1, send.connections // shares),
            max_attempts=send.max_attempts,
            rate_per_second=send.rate_per_second / parts,
            rate_per_hour=-(-send.rate_per_hour // parts),
            retry_base=send.retry_after,
            lease=send.lease,
            history_share=(share, parts),
        )


@dataclass(slots=True)
class DeliveryReport:
    """What a delivery run did. Partial failure is a value; only a total failure raises."""

    total: int = 0  # rows due when the run started
    sent: int = 0
    deferred: int = 0  # still deferred at the end (a later run retries them)
    failed: int = 0
    suppressed: int = 0  # addresses suppressed: their bounce score reached the threshold
    held: int = 0  # rows left pending: refused for a reason of the sender or relay
    skipped: int = 0  # rows not sent because their address was suppressed meanwhile
    retried: int = 0  # failed rows made pending again on request
    reactivated: int = 0  # addresses an older pipeline suppressed wrongly, brought back
    pending: int = 0  # rows still pending at the end (interrupted, or held by another run)
    released: int = 0  # rows this run claimed and handed back unsent (stopped or interrupted)
    seconds: float = 0.0
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped early, if the server went away
    waiting: int = 0  # deferred rows whose next try had not come when the run ended
    next_try: datetime | None = None  # the earliest of those tries

    @property
    def done(self) -> int:
        """Rows this run settled, one way or another."""
        return self.sent + self.deferred + self.failed

    @property
    def rate(self) -> float:
        """Messages accepted per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every due message was accepted: nothing deferred, failed or left pending."""
        return not (self.deferred or self.failed or self.pending or self.stopped)

    def add(self, other: DeliveryReport) -> None:
        """Fold in the report of a parallel run over the same outbox."""
        for name in ("sent", "deferred", "failed", "suppressed", "skipped", "held", "released"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.interrupted = self.interrupted or other.interrupted
        self.stopped = self.stopped or other.stopped
