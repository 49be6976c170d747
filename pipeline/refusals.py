"""What a drain does with each refusal: hold, defer, fail, score, or stop the run.

``Refusals`` sits between the drain and the ledger for every reply that is not an
acceptance, judged by ``pipeline.bounce_rules``:

- about the sender or relay, for good (relay denied, a blocklisted host …): the run stops;
  the row, and any rows the circuit breaker was holding, stay pending with the reply and
  its cause kept; nobody is suppressed;
- about the sender, for now (a 4xx of the relay's system or policy): the row is deferred
  with back-off; no score;
- about the mailbox: deferred with back-off when it may pass later (4xx, a full mailbox,
  ``552`` at RCPT), failed otherwise; a soft bounce;
- about the address: failed; a hard bounce.

Bounces go through ``record_bounce`` (scores, suppression at the threshold), in the same
transaction as the row's outcome. Each refusal first goes through the ``Breaker``: while a
streak of identical refusals is undecided its outcomes are held back, and if it trips
they stay pending. A delivered message ends the streak and clears the address's score.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from pipeline.addresses import email_key
from pipeline.bounce_rules import Phase, Scope, Verdict, judge
from pipeline.bounce_scores import BouncePolicy, clear_on_delivery, record_bounce
from pipeline.breaker import Breaker
from pipeline.delivery_run import DeliveryOptions, DeliveryReport
from pipeline.store import Ledger, OutboxRow

__all__ = [
    "BREAKER_CAUSE",
    "Refusals",
    "advice",
    "backoff",
    "revive_misjudged",
    "write_refusal",
]

BREAKER_CAUSE = "sender: circuit breaker"

_ADVICE = {
    "relay access denied": (
        "the relay does not let this machine send to other domains: give the login in "
        "PIPELINE_SMTP_URL and PIPELINE_SMTP_PASSWORD, or have this host allowed to relay"
    ),
    "sending host blocklisted": (
        "the sending host is on a blocklist: ask the relay's provider, or request delisting "
        "at the list the reply names"
    ),
    "sender not allowed": (
        "the relay refuses the sender: check [sender] address in pipeline.toml is an "
        "address the relay lets you send from (verified, with SPF and DKIM for its domain)"
    ),
    "the sender address was refused": (
        "check [sender] address in pipeline.toml and the relay's sender settings"
    ),
    "authentication required": (
        "the relay wants a login: give the user in PIPELINE_SMTP_URL and "
        "PIPELINE_SMTP_PASSWORD (and ?starttls=true or smtps:// if it needs TLS)"
    ),
    "sending quota or rate exceeded": (
        "the relay's sending quota or rate is used up: wait for it to reset, or set "
        "[send] rate_per_hour to the relay's limit"
    ),
}


def advice(verdict: Verdict) -> str:
    """What an editor should check after a refusal about the sender or relay."""
    return _ADVICE.get(verdict.cause, "check the relay's settings and its logs")


def backoff(attempts: int, *, base: float = 60.0, cap: float = 6 * 3600.0) -> timedelta:
    """Exponential back-off with jitter: base, 2x, 4x … (times 0.5 to 1), capped."""
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2 ** max(0, attempts)))


Held = tuple[OutboxRow, Verdict]


class Refusals:
    """One drain's refusals: the breaker, the outcomes it holds, scores and the stop reason."""

    def __init__(
        self,
        ledger: Ledger,
        options: DeliveryOptions,
        report: DeliveryReport,
        deferred_ids: set[int],
        clock: Callable[[], datetime],
        settle: Callable[[], None],
    ) -> None:
        """``settle`` is called once for each refused row when its outcome is written."""
        self.ledger = ledger
        self.options = options
        self.report = report
        self.deferred_ids = deferred_ids  # shared with the drain: deferred, not settled
        self.clock = clock
        self.settle = settle
        bounces = options.bounces
        self.policy = BouncePolicy.from_settings(bounces)
        self.breaker: Breaker[Held] = Breaker(bounces.breaker_recipients, bounces.breaker_domains)
        ledger.forget_stale_scores(clock() - self.policy.stale_after)
        self.scored = ledger.scored_addresses()  # few: a delivery to one clears its score
        self.stop_reason: str | None = None

    def delivered(self, row: OutboxRow) -> None:
        """A message went through: its score is cleared and any streak is over."""
        key = email_key(row.email)
        if key in self.scored:
            clear_on_delivery(self.ledger, key)
            self.scored.discard(key)
        self._write_all(self.breaker.release())

    def refused(self, row: OutboxRow, verdict: Verdict, server: str) -> str | None:
        """Deal with one refusal; returns why the run must stop, if it must."""
        if self.stop_reason is not None:
            self._hold(row, verdict.reply, verdict.label)  # a connection finishing late
            return None
        if verdict.scope is Scope.SENDER and not verdict.retry:
            self._hold(row, verdict.reply, verdict.label)
            for held_row, held in self.breaker.take_held():
                self._hold(held_row, held.reply, held.label)
            self.stop_reason = (
                f"the SMTP server at {server} refused a message for a reason of the sender "
                f"or relay, not the recipient ({verdict.cause}): {verdict.reply}; "
                f"{advice(verdict)}"
            )
            return self.stop_reason
        self._write_all(self.breaker.refused(row.email, verdict, (row, verdict)))
        if self.breaker.tripped is None:
            return None
        for held_row, held in self.breaker.take_held():
            self._hold(held_row, held.reply, BREAKER_CAUSE)
        self.stop_reason = (
            f"circuit breaker: {self.breaker.tripped}; the same refusal for so many is about "
            "the relay or the sender, not the subscribers; check the relay's logs and settings "
            "(if these addresses really are dead, raise [bounces] breaker_recipients)"
        )
        return self.stop_reason

    @property
    def holding(self) -> int:
        """How many refused rows wait for the breaker's decision (still in flight)."""
        return self.breaker.held

    def finish(self) -> None:
        """Nothing else is in flight, or the run ends: write the outcomes still held
        (their streak did not trip)."""
        self._write_all(self.breaker.release())

    def _hold(self, row: OutboxRow, reply: str, cause: str) -> None:
        self.ledger.mark_held(row.id, reply, cause)
        self.report.held += 1
        self.settle()

    def _write_all(self, items: list[Held]) -> None:
        for row, verdict in items:
            self._write(row, verdict)

    def _write(self, row: OutboxRow, verdict: Verdict) -> None:
        options, report = self.options, self.report
        outcome, suppressed = write_refusal(
            self.ledger,
            row,
            verdict,
            self.clock(),
            policy=self.policy,
            retry_base=options.retry_base,
            retry_cap=options.retry_cap,
            max_attempts=options.max_attempts,
        )
        if outcome == "deferred":
            if row.id not in self.deferred_ids:
                self.deferred_ids.add(row.id)
                report.deferred += 1
        else:
            report.failed += 1
            if row.id in self.deferred_ids:
                self.deferred_ids.discard(row.id)
                report.deferred -= 1
        report.suppressed += suppressed
        if verdict.bounce is not None:
            self.scored.add(email_key(row.email))
        self.settle()


def write_refusal(
    ledger: Ledger,
    row: OutboxRow,
    verdict: Verdict,
    now: datetime,
    *,
    policy: BouncePolicy,
    retry_base: float,
    retry_cap: float = 6 * 3600.0,
    max_attempts: int,
) -> tuple[str, bool]:
    """Record one refusal that does not stop the run: the row deferred (when it may pass
    later and tries are left) or failed, and its bounce scored, in one transaction.

    Returns ("deferred" or "failed", whether the bounce suppressed the address).
    """
    suppressed = False
    with ledger.transaction():
        if verdict.retry and row.attempts + 1 < max_attempts:
            delay = backoff(row.attempts, base=retry_base, cap=retry_cap)
            ledger.mark_deferred(row.id, verdict.reply, now + delay, cause=verdict.label)
            outcome = "deferred"
        else:
            ledger.mark_failed(row.id, verdict.reply, cause=verdict.label)
            outcome = "failed"
        kind = verdict.bounce
        if kind is not None:
            suppressed = record_bounce(
                ledger,
                row.email,
                kind,
                verdict.reply,
                now=now,
                policy=policy,
                digest_id=row.digest_id or None,  # 0: a sign-up confirmation, not a digest
                cause=verdict.cause,
            )
    return outcome, suppressed


def revive_misjudged(ledger: Ledger, now: datetime) -> list[str]:
    """Reactivate the addresses an older pipeline suppressed on one refusal that today's
    rules do not hold against the address (a relay denial, a full mailbox …).

    That pipeline kept the reason as ``bounced: <reply>``; each reply is judged again as
    a refusal at RCPT. Addresses suppressed by today's scores, by a list or by an
    unsubscribe are left alone. Returns the addresses reactivated.
    """
    misjudged = []
    for record in ledger.subscribers(("bounced",)):
        code, _, text = record.reason.removeprefix(_OLD_REASON).partition(" ")
        if not record.reason.startswith(_OLD_REASON) or not code.isdigit():
            continue
        if judge(int(code), text, Phase.RCPT).scope is not Scope.ADDRESS:
            misjudged.append(record.email_key)
    if not misjudged:
        return []
    with ledger.transaction():
        return ledger.reactivate_bounced(keys=tuple(misjudged), now=now)


# How the pipeline before bounce scores worded a suppression: "bounced: <the reply>".
_OLD_REASON = "bounced: "
