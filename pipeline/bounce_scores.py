"""Bounce scores, as Mailman 3 keeps them: many bounces over time suppress, not one.

``record_bounce`` is the one way a bounce reaches a subscriber, whatever noticed it (a
refusal during a run, a DSN read later, a relay's webhook):

- a hard bounce (the address does not exist) adds ``hard_score``, a soft one (mailbox
  full, message too large, a temporary refusal about the mailbox) ``soft_score``;
- each UTC day counts once, by its worst bounce, so retries within a day and the DSNs
  that echo them do not pile up;
- a score whose last bounce is older than ``stale_after`` starts again from zero, and a
  delivered message clears it (``clear_on_delivery``);
- reaching ``threshold`` suppresses the address (status ``bounced``) with the reason
  kept; a soft bounce alone never reaches it (``BouncePolicy`` refuses such settings).

Every bounce is kept as an event with its cause, reply, digest and time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pipeline.addresses import email_key
from pipeline.config_sections import BounceSettings
from pipeline.errors import SubscriberError
from pipeline.store import Ledger
from pipeline.store.bounces import BounceEvent, BounceScore

__all__ = [
    "BounceKind",
    "BouncePolicy",
    "Reactivation",
    "clear_on_delivery",
    "next_score",
    "reactivate",
    "record_bounce",
]


class BounceKind(StrEnum):
    """What a bounce says about the address: gone for good, or not now."""

    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True)
class BouncePolicy:
    """The scoring rules, from ``[bounces]`` (see ``BounceSettings`` for the defaults)."""

    hard_score: float = 5.0
    soft_score: float = 1.0
    threshold: float = 5.0
    stale_after: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if not 0 < self.soft_score < self.threshold or self.hard_score <= 0:
            raise ValueError("a bounce policy needs 0 < soft_score < threshold, hard_score > 0")

    @classmethod
    def from_settings(cls, bounces: BounceSettings) -> BouncePolicy:
        return cls(
            hard_score=bounces.hard_score,
            soft_score=bounces.soft_score,
            threshold=bounces.threshold,
            stale_after=timedelta(days=bounces.stale_after_days),
        )

    def points(self, kind: BounceKind) -> float:
        return self.hard_score if kind is BounceKind.HARD else self.soft_score


def next_score(
    current: BounceScore | None,
    key: str,
    kind: BounceKind,
    reason: str,
    now: datetime,
    policy: BouncePolicy,
) -> tuple[BounceScore, float]:
    """The score after one more bounce, and the points this bounce added (maybe 0).

    Pure: the rules above, without storage. A bounce older than the last one counted
    (a late DSN) still counts, on its own day.
    """
    day = now.date().isoformat()
    if current is None or now - current.last_bounce_at > policy.stale_after:
        base, day_points = 0.0, 0.0
    elif current.day == day:
        base, day_points = current.score - current.day_points, current.day_points
    else:
        base, day_points = current.score, 0.0
    worst = max(day_points, policy.points(kind))
    last = now if current is None else max(now, current.last_bounce_at)
    score = BounceScore(key, base + worst, day, worst, last, reason)
    return score, worst - day_points


def record_bounce(
    ledger: Ledger,
    email: str,
    kind: BounceKind,
    reason: str,
    *,
    now: datetime,
    policy: BouncePolicy,
    digest_id: int | None = None,
    source: str = "smtp",
    cause: str = "",
) -> bool:
    """Score one bounce for ``email``; True when it suppressed the address.

    ``reason`` is what the server said (the reply, or the DSN's status and diagnostic);
    ``cause`` the short words it was judged by ("unknown user", "mailbox full"). Unknown
    addresses are ignored (False); an address already suppressed keeps its status but the
    event is still kept. Runs in one ledger transaction (or in the caller's).
    """
    key = email_key(email)
    with ledger.transaction():
        subscriber = ledger.subscriber(key)
        if subscriber is None:
            return False
        words = cause or f"{kind} bounce"
        score, points = next_score(
            ledger.bounce_score(key), key, kind, f"{words}: {reason}", now, policy
        )
        event = BounceEvent(key, str(kind), words, reason, digest_id, source, points, now)
        ledger.store_bounce(event, score)
        if subscriber.suppressed or score.score < policy.threshold:
            return False
        ledger.suppress(
            subscriber.email,
            f"bounced ({kind}, score {score.score:g}): {words}: {reason}",
            now,
        )
        return True


def clear_on_delivery(ledger: Ledger, email: str) -> bool:
    """A message to ``email`` was accepted: its score starts again from zero."""
    return ledger.clear_bounce_score(email_key(email))


@dataclass(frozen=True, slots=True)
class Reactivation:
    """What ``reactivate`` did: the addresses back, and the named ones left as they were."""

    reactivated: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (address as given, why it was not reactivated)


def reactivate(
    ledger: Ledger,
    addresses: Sequence[str] = (),
    *,
    cause: str | None = None,
    since: datetime | None = None,
    now: datetime,
) -> Reactivation:
    """Make addresses suppressed by bounces active again, their scores cleared.

    Chooses the ``addresses`` named, and every bounced address whose suppression reason
    contains ``cause`` (any case) and was suppressed at or after ``since`` (an incident:
    either filter alone, or both). Never touches an address that unsubscribed or complained: only a new
    confirmed sign-up brings those back. Raises ``SubscriberError`` when nothing chooses.
    """
    if not (addresses or cause or since):
        raise SubscriberError(
            "name the addresses to reactivate, or choose them with --cause TEXT or --since DATE"
        )
    keys = tuple(dict.fromkeys(email_key(a) for a in addresses))
    with ledger.transaction():
        back = ledger.reactivate_bounced(keys=keys, now=now) if keys else []
        if cause or since:
            back += ledger.reactivate_bounced(cause=cause, since=since, now=now)
        done = {email_key(a) for a in back}
        refused = []
        for address in addresses:
            if email_key(address) in done:
                continue
            record = ledger.subscriber(email_key(address))
            refused.append((address, _why_not(record.status if record else None)))
    return Reactivation(tuple(back), tuple(refused))


def _why_not(status: str | None) -> str:
    if status is None:
        return "not a subscriber"
    if status == "bounced":
        return "suppressed by bounces, but not for that cause or since that date"
    if status == "unsubscribed":
        return "unsubscribed (or complained): only a new confirmed sign-up brings it back"
    return f"not suppressed (it is {status})"
