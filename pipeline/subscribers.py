"""The subscriber store: who is pending, active, unsubscribed or bounced, in the ledger.

*pending* is a web sign-up not confirmed yet; *unsubscribed* and *bounced* are
suppressions: never mailed again, and only a new confirmed sign-up makes such an address
active again. The editors' lists merge in on every publish without ever reactivating one.

This module is also where the rest of the pipeline imports subscriber functions from:
addresses (``pipeline.addresses``), lists (``pipeline.subscriber_lists``) and link tokens
(``pipeline.tokens``) are re-exported here.
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.addresses import clean_name, email_key, normalise_email, parse_topics
from pipeline.config import Settings, secret_key
from pipeline.errors import SubscriberError
from pipeline.models import Subscriber
from pipeline.store import (
    Ledger,
    MergeCounts,
    SignupRecord,
    SubscriberRecord,
    SubscriberRow,
    merge_action,
)
from pipeline.subscriber_lists import (
    EXPORT_COLUMNS,
    ListEntry,
    ListFiles,
    SubscriberList,
    export_csv,
    load_subscribers,
    read_list,
)
from pipeline.tokens import (
    CONFIRM_MAX_AGE,
    PURPOSES,
    TokenError,
    key_fingerprint,
    make_token,
    read_token,
    sign_token,
    subscriber_ref,
    verify_token,
)

__all__ = [
    "CONFIRM_MAX_AGE",
    "EXPORT_COLUMNS",
    "PURPOSES",
    "ListEntry",
    "ListFiles",
    "SignupRequest",
    "SubscriberList",
    "SubscriberStore",
    "TokenError",
    "clean_name",
    "email_key",
    "export_csv",
    "load_subscribers",
    "make_token",
    "normalise_email",
    "open_store",
    "parse_topics",
    "planned_subscriber",
    "planned_topic_counts",
    "read_list",
    "read_token",
    "sign_token",
    "subscriber_ref",
    "verify_token",
]

# One confirmation email per address in this window, however often the form is sent.
RESEND_AFTER = timedelta(minutes=5)


def planned_topic_counts(
    ledger: Ledger, entries: Iterable[ListEntry], *, chunk: int = 500
) -> Counter[frozenset[str]]:
    """How many subscribers will be active for each set of topics once ``entries`` (the
    editors' lists) are merged in, without writing anything (a publish plan).

    The lists are streamed and looked up ``chunk`` addresses at a time; the ledger's
    active subscribers are counted in SQL. Memory does not grow with the list.
    """
    counts: Counter[frozenset[str]] = Counter(ledger.active_topic_counts())
    stream = iter(entries)
    while batch := list(itertools.islice(stream, chunk)):
        current = ledger.subscriber_states([email_key(e.subscriber.email) for e in batch])
        for entry in batch:
            found = current.get(email_key(entry.subscriber.email))
            action = merge_action(None if found is None else found[0], entry.status)
            if action == "add" and entry.status == "active":
                counts[entry.subscriber.topics] += 1
            elif action == "activate" and found is not None:
                counts[found[1]] += 1  # a known address keeps its own topics
            elif action == "suppress" and found is not None and found[0] == "active":
                counts[found[1]] -= 1
    return +counts  # drops the groups that emptied


def planned_subscriber(
    ledger: Ledger, entries: Iterable[ListEntry], address: str
) -> Subscriber | None:
    """``address`` as it will be once ``entries`` are merged in, if it will be active."""
    key = email_key(address)
    record = ledger.subscriber(key)
    entry = next((e for e in entries if email_key(e.subscriber.email) == key), None)
    status = None if record is None else record.status
    if entry is not None:
        action = merge_action(status, entry.status)
        if action == "add":
            return entry.subscriber if entry.status == "active" else None
        if action == "activate":
            status = "active"
        elif action == "suppress":
            return None
    return _subscriber(record) if record is not None and status == "active" else None


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """What a web sign-up led to: a confirmation token to email, or nothing to send."""

    email: str
    token: str | None  # None: send nothing (already active, or a confirmation just went out)


class SubscriberStore:
    """The subscribers in the ledger, changed only by the rules of this module."""

    def __init__(self, ledger: Ledger, key: str, known_topics: Iterable[str] = ()) -> None:
        self.ledger = ledger
        self._key = key
        self.known_topics = frozenset(known_topics)
        # Refs derive from the key: a new key re-derives them so fresh links keep working.
        ledger.refresh_refs(key_fingerprint(key), lambda k: subscriber_ref(k, key))

    def find(self, email: str) -> SubscriberRecord | None:
        return self.ledger.subscriber(email_key(email))

    def records(self, status: str | None = None) -> list[SubscriberRecord]:
        return self.ledger.subscribers((status,) if status else ())

    def active(self) -> list[Subscriber]:
        return [_subscriber(r) for r in self.ledger.subscribers(("active",))]

    def merge(self, entries: Iterable[ListEntry], now: datetime) -> MergeCounts:
        """Merge list rows in (see ``Ledger.merge_subscribers`` for the rules)."""
        rows = (self._row(e.subscriber, e.status, e.source) for e in entries)
        return self.ledger.merge_subscribers(rows, now)

    def import_file(
        self, path: Path, root: Path, now: datetime
    ) -> tuple[MergeCounts, SubscriberList]:
        """Read one list file and merge its valid rows; the list carries the skipped rows."""
        found = read_list(path, root, known_topics=self.known_topics)
        return self.merge(found.entries, now), found

    def add(self, email: str, name: str, topics: frozenset[str], now: datetime) -> SubscriberRecord:
        """An editor adds (or updates) a subscriber, active at once. Refuses to bring back
        an unsubscribed or bounced address: only their own confirmed sign-up may."""
        subscriber = Subscriber(normalise_email(email), clean_name(name), topics)
        record = self.find(subscriber.email)
        if record is None:
            self.ledger.merge_subscribers([self._row(subscriber, "active", "cli")], now)
        elif record.suppressed:
            raise SubscriberError(
                f"{record.email} is {record.status} and stays so; only a new sign-up "
                "confirmed by its owner can make it active again"
            )
        else:
            self.ledger.update_subscriber(
                record.email_key, name=subscriber.name, topics=topics, now=now, activate=True
            )
        added = self.find(subscriber.email)
        assert added is not None
        return added

    def remove(self, email: str, now: datetime, *, reason: str = "removed by an editor") -> bool:
        """Unsubscribe an address for good (kept as suppressed so no list brings it back)."""
        return self.ledger.unsubscribe(email_key(email), reason, now)

    def request_signup(
        self, email: str, name: str, topics: frozenset[str], now: datetime
    ) -> SignupRequest:
        """A web sign-up: a confirmation token to email, unless the address is already active
        or was sent one moments ago. The caller answers the same either way."""
        address = normalise_email(email)
        key = email_key(address)
        record = self.ledger.subscriber(key)
        if record is not None and record.status == "active":
            return SignupRequest(address, None)
        last = self.ledger.last_signup_at(key)
        if last is not None and now - last < RESEND_AFTER:
            return SignupRequest(address, None)
        signup = SignupRecord(
            secrets.token_urlsafe(16), key, address, clean_name(name), topics, now
        )
        self.ledger.add_signup(signup, subscriber_ref(key, self._key))
        return SignupRequest(address, make_token(signup.id, self._key, "confirm"))

    def confirm(
        self, token: str, now: datetime, *, max_age: timedelta = CONFIRM_MAX_AGE
    ) -> SubscriberRecord | None:
        """Activate the sign-up a confirmation token names; None if it was used already."""
        signup_id = read_token(token, self._key, "confirm", max_age=max_age, now=now)
        signup = self.ledger.signup(signup_id)
        if signup is None:
            raise TokenError("this sign-up is not known here")
        return self.ledger.confirm_signup(
            signup_id, subscriber_ref(signup.email_key, self._key), now
        )

    def pending_signup(self, token: str, now: datetime) -> SignupRecord:
        """The sign-up a confirmation token names (checked, expiry included), unchanged."""
        signup_id = read_token(token, self._key, "confirm", max_age=CONFIRM_MAX_AGE, now=now)
        signup = self.ledger.signup(signup_id)
        if signup is None:
            raise TokenError("this sign-up is not known here")
        return signup

    def from_token(self, token: str, purpose: str) -> SubscriberRecord:
        """The subscriber an unsubscribe or preferences token names."""
        record = self.ledger.subscriber_by_ref(read_token(token, self._key, purpose))
        if record is None:
            raise TokenError("this subscriber is not known here")
        return record

    def token_for(self, record: SubscriberRecord, purpose: str) -> str:
        return sign_token(record.email, self._key, purpose)

    def save_preferences(
        self, record: SubscriberRecord, name: str, topics: frozenset[str], now: datetime
    ) -> bool:
        """Change a subscriber's name and topics; False if the address is suppressed."""
        return self.ledger.update_subscriber(
            record.email_key, name=clean_name(name), topics=topics, now=now, activate=False
        )

    def _row(self, subscriber: Subscriber, status: str, source: str) -> SubscriberRow:
        key = email_key(subscriber.email)
        return SubscriberRow(
            key,
            subscriber.email,
            subscriber.name,
            subscriber.topics,
            status,
            source,
            subscriber_ref(key, self._key),
        )


@contextmanager
def open_store(settings: Settings) -> Iterator[SubscriberStore]:
    """The project's subscriber store, its ledger closed on leaving."""
    with Ledger(settings.paths.ledger) as ledger:
        yield SubscriberStore(ledger, secret_key(settings.paths), settings.topics)


def _subscriber(record: SubscriberRecord) -> Subscriber:
    return Subscriber(record.email, record.name, record.topics)
