"""One person's data: export it (GDPR art. 15, ``subscribers show ADDR --json``) or erase
it (art. 17, ``subscribers forget ADDR``).

Erasure deletes the subscriber, their sign-ups and the prepared messages queued for them,
cancels anything unsent and anonymises the rows that recorded what was sent (the counts
per digest stay). What remains is a keyed hash of the address (HMAC-SHA256 under the
project's secret key) in the suppression list, so a list file or an editor cannot add the
address again by accident; only a new sign-up confirmed by its owner lifts it. The
pipeline never edits the editors' list files: rows there that still name the address are
reported so the editor can delete them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.store import Ledger
from pipeline.subscriber_plans import erased_hash
from pipeline.subscribers import (
    SubscriberList,
    email_key,
    normalise_email,
)
from pipeline.tokens import key_fingerprint

__all__ = ["Erasure", "forget", "person_data"]


@dataclass(frozen=True, slots=True)
class Erasure:
    """What ``forget`` did: the address, whether the ledger named it, list rows naming it."""

    email: str
    found: bool
    list_rows: tuple[str, ...]  # "subscribers/list.csv:3": the editor deletes these lines


def _list_rows(lists: SubscriberList, key: str) -> tuple[str, ...]:
    return tuple(e.source for e in lists.entries if email_key(e.subscriber.email) == key)


def forget(
    ledger: Ledger, address: str, secret: str, lists: SubscriberList, now: datetime
) -> Erasure:
    """Erase everything the ledger holds about ``address``; keep only its keyed hash.

    Raises ``SubscriberError`` for a malformed address.
    """
    email = normalise_email(address)
    key = email_key(email)
    found = ledger.erase_subscriber(key, erased_hash(email, secret), key_fingerprint(secret), now)
    return Erasure(email, found, _list_rows(lists, key))


def person_data(ledger: Ledger, address: str, lists: SubscriberList) -> dict[str, Any]:
    """Everything held about ``address`` as one JSON-ready document (times in ISO 8601 UTC):
    the subscriber record, sign-ups, messages sent or queued, bounces, and list rows naming
    it."""
    email = normalise_email(address)
    key = email_key(email)
    record = ledger.subscriber(key)
    subscriber = None
    if record is not None:
        subscriber = {
            "email": record.email,
            "name": record.name,
            "topics": sorted(record.topics),
            "status": record.status,
            "source": record.source,
            "reason": record.reason,
            "created_at": _iso(record.created_at),
            "updated_at": _iso(record.updated_at),
            "confirmed_at": _iso(record.confirmed_at),
            "frequency": record.frequency,
        }
    return {
        "email": email,
        "subscriber": subscriber,
        "signups": [
            {
                "name": s.name,
                "topics": sorted(s.topics),
                "requested_at": _iso(s.requested_at),
                "confirmed_at": _iso(s.confirmed_at),
                "frequency": s.frequency,
            }
            for s in ledger.signups_of(key)
        ],
        "messages": ledger.messages_to(key),
        "bounces": [
            {
                "at": _iso(b.created_at),
                "kind": b.kind,
                "cause": b.cause,
                "reply": b.reply,
                "digest": b.digest_id,
                "source": b.source,
            }
            for b in ledger.bounce_events(key)
        ],
        "list_rows": [
            {
                "source": e.source,
                "name": e.subscriber.name,
                "topics": sorted(e.subscriber.topics),
                "status": e.status,
                "frequency": e.subscriber.frequency,
            }
            for e in lists.entries
            if email_key(e.subscriber.email) == key
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")
