"""Acting on what came back: bounces into scores, complaints and unsubscribe requests.

``process_mailbox`` reads every message of a ``Mailbox`` that the ledger has not seen,
applies its events, records its key (so a second run changes nothing more), and puts
recognised mail away. ``InboundActions.apply`` is the one step from an ``InboundEvent`` to
the ledger, shared with the relay webhooks (``pipeline.webhooks``).

Who an event is about:

- a valid return-path token (``pipeline.return_path``) names the subscriber, and a bounce
  token the digest too; the bounce's text is not trusted for that;
- without one, a bounce (hard or soft) is matched to a subscriber by the failed address
  it names, as without VERP. A complaint is too, unless ``[bounces] return_path`` is set:
  then only its token counts, since a complaint unsubscribes for good and an ARF report
  is as easy to forge as any mail. Relay webhooks are authenticated, so their address counts;
- an unsubscribe request acts on its token only, never on its From;
- a token that is present but forged or signed with another key: nothing is done.

A bounce that refers to no message we sent to the address (none at all, none of the
digest its token names, or the report is dated before the first) is ignored and reported
as such: it cannot be about our mail, and a forged or misrouted one must not suppress.

Bounces go to ``bounce_scores.record_bounce``; a complaint unsubscribes at once and for good
(``Ledger.complain``); an unsubscribe request unsubscribes at once. Delayed-delivery
warnings, auto-replies and refusals about the sender (policy, blocklists) touch nobody.
A message's effects and its processed key are written in one transaction: exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from pipeline.addresses import email_key
from pipeline.bounce_scores import BounceKind, BouncePolicy, record_bounce
from pipeline.config import Settings
from pipeline.inbound import InboundEvent, InboundKind, message_key, read_message
from pipeline.mailboxes import Mailbox
from pipeline.return_path import VerpToken, read_verp_token
from pipeline.store import Ledger, SubscriberRecord
from pipeline.tokens import TokenError

__all__ = ["InboundActions", "InboxReport", "Outcome", "process_mailbox"]

_ACTED = frozenset(
    {InboundKind.HARD, InboundKind.SOFT, InboundKind.COMPLAINT, InboundKind.UNSUBSCRIBE}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: InboundKind
    address: str  # the subscriber acted on, or the address the event named
    action: str  # what was done, in words: "suppressed", "unsubscribed", "ignored: …"


@dataclass
class InboxReport:
    source: str
    read: int = 0
    already_processed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)  # subjects, left for a person
    still_unread: int = 0  # unrecognised in an earlier run and still in the mailbox

    @property
    def counts(self) -> Counter[str]:
        return Counter(str(o.kind) for o in self.outcomes)


class InboundActions:
    """Applies events to the ledger for one run (one secret key, one policy, one clock)."""

    def __init__(self, settings: Settings, ledger: Ledger, key: str) -> None:
        self.ledger = ledger
        self._key = key
        self._verp = bool(settings.bounces.return_path)
        self.policy = BouncePolicy.from_settings(settings.bounces)

    def _tokens(self, tokens: Sequence[str]) -> tuple[list[VerpToken], bool]:
        valid, forged = [], False
        for token in tokens:
            try:
                valid.append(read_verp_token(self._key, token))
            except TokenError:
                forged = True
        return valid, forged

    def _target(
        self, event: InboundEvent, tokens: Sequence[str], trusted: bool
    ) -> tuple[SubscriberRecord | None, int | None, str]:
        """The subscriber, the digest and, when there is no subscriber, why."""
        valid, forged = self._tokens(tokens)
        if event.kind is InboundKind.UNSUBSCRIBE:
            valid = [t for t in valid if t.digest_id is None]
        else:  # a bounce token names the digest as well: prefer it
            valid.sort(key=lambda t: t.digest_id is None)
        for token in valid:
            subscriber = self.ledger.subscriber_by_ref(token.ref)
            if subscriber is not None:
                return subscriber, token.digest_id, ""
        if valid:
            return None, None, "its token names no subscriber (made before a key change?)"
        if forged:
            return None, None, "refused: its token is forged or was signed with another key"
        if event.kind is InboundKind.UNSUBSCRIBE and not trusted:
            return None, None, "refused: no valid unsubscribe token"
        if event.kind is InboundKind.COMPLAINT and self._verp and not trusted:
            return None, None, "not acted on: with a return path set, a complaint needs its token"
        subscriber = self.ledger.subscriber(email_key(event.recipient)) if event.recipient else None
        return subscriber, None, "" if subscriber else "not a subscriber"

    def apply(
        self,
        event: InboundEvent,
        *,
        tokens: Sequence[str] = (),
        source: str,
        now: datetime,
        trusted: bool = False,
        digest_id: int | None = None,
    ) -> Outcome:
        """Act on one event; ``trusted`` for an authenticated relay naming the recipient.

        ``tokens``: return-path tokens found with it (unverified); ``digest_id``: the digest
        when the caller knows it (a token's wins). Returns what was done.
        """
        if event.kind not in _ACTED:
            return Outcome(event.kind, event.recipient, "ignored")
        subscriber, token_digest, why = self._target(event, tokens, trusted)
        if subscriber is None:
            return Outcome(event.kind, event.recipient, why)
        address = subscriber.email
        if event.kind is InboundKind.COMPLAINT:
            done = self.ledger.complain(address, event.reason, now)
            return Outcome(event.kind, address, "unsubscribed" if done else "already unsubscribed")
        if event.kind is InboundKind.UNSUBSCRIBE:
            done = self.ledger.unsubscribe(subscriber.email_key, event.reason, now)
            return Outcome(event.kind, address, "unsubscribed" if done else "already suppressed")
        digest = token_digest if token_digest is not None else digest_id
        unrelated = self._unrelated(subscriber.email_key, digest, now)
        if unrelated:
            return Outcome(event.kind, address, f"ignored: {unrelated}")
        suppressed = record_bounce(
            self.ledger,
            address,
            BounceKind(str(event.kind)),
            event.reason,
            now=now,
            policy=self.policy,
            digest_id=digest,
            source=source,
            cause=event.cause,
        )
        return Outcome(event.kind, address, "suppressed" if suppressed else "scored")

    def _unrelated(self, key: str, digest_id: int | None, at: datetime) -> str:
        """Why a bounce dated ``at`` cannot be about mail we sent to ``key``; "" if it can."""
        first = self.ledger.first_sent_at(key, digest_id)
        if first is None:
            of = f" of digest {digest_id}" if digest_id is not None else ""
            return f"no message{of} was sent to this address"
        if at < first:
            return (
                f"dated {at:%Y-%m-%d %H:%M} UTC, before the first message to this address "
                f"({first:%Y-%m-%d %H:%M} UTC)"
            )
        return ""


def _received_at(raw_date: str, now: datetime, oldest: timedelta) -> datetime:
    """When the report was written (its Date): late DSNs count on their own day. Never
    later than now nor earlier than ``oldest`` ago (a Date is easy to get wrong); ``now``
    when the date is missing or unreadable."""
    try:
        written = parsedate_to_datetime(raw_date)
    except (TypeError, ValueError):
        return now
    if written.tzinfo is None:
        written = written.replace(tzinfo=UTC)
    return max(min(written.astimezone(UTC), now), now - oldest)


def process_mailbox(
    settings: Settings,
    ledger: Ledger,
    mailbox: Mailbox,
    key: str,
    *,
    now: datetime | None = None,
) -> InboxReport:
    """Handle every message of ``mailbox`` not processed before; the report of what was done."""
    now = now or datetime.now(UTC)
    actions = InboundActions(settings, ledger, key)
    report = InboxReport(mailbox.name)
    for message_id, raw in mailbox.messages():
        report.read += 1
        seen = ledger.inbound_kind(message_key(raw))
        if seen is not None:
            report.already_processed += 1
            if seen != InboundKind.UNKNOWN:
                mailbox.handled(message_id)  # a move a crash interrupted
            else:
                report.still_unread += 1
            continue
        message = read_message(raw)
        when = _received_at(message.date, now, actions.policy.stale_after)
        with ledger.transaction():  # the effects and the processed key, together
            outcomes = [
                actions.apply(e, tokens=message.tokens, source="dsn", now=when)
                for e in message.events
            ]
            kinds = ",".join(sorted({str(e.kind) for e in message.events}))
            # What was done, without the address: the ledger keeps no copy of it here that
            # `subscribers forget` would have to find.
            summary = "; ".join(f"{o.kind}: {o.action}" for o in outcomes)
            ledger.record_inbound(message.key, mailbox.name, kinds, summary, now)
        if message.recognised:
            report.outcomes += outcomes
            mailbox.handled(message_id)
        else:
            report.unrecognised.append(message.subject or "(no subject)")
    return report
