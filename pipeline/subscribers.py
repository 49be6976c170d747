"""The subscriber store: who is pending, active, unsubscribed or bounced, in the ledger.

*pending* is a web sign-up not confirmed yet; *unsubscribed* and *bounced* are
suppressions: never mailed again, and only a new confirmed sign-up makes such an address
active again. The editors' lists merge in on every publish without ever reactivating one.

This module is also where the rest of the pipeline imports subscriber functions from:
addresses (``pipeline.addresses``), lists (``pipeline.subscriber_lists``) and link tokens
(``pipeline.tokens``) are re-exported here. Previews of a merge that write nothing are in
:mod:`pipeline.subscriber_plans`.
"""

from __future__ import annotations

import secrets
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
    open_ledger,
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
from pipeline.subscriber_plans import (
    describe_changes,
    erased_hash,
    list_differences,
    subscriber_of,
    without_erased,
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
    "read_list",
    "read_token",
    "sign_token",
    "subscriber_ref",
    "verify_token",
]

# One confirmation email per address in this window, however often the form is sent.
RESEND_AFTER = timedelta(minutes=5)


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
        return [subscriber_of(r) for r in self.ledger.subscribers(("active",))]

    def merge(self, entries: Iterable[ListEntry], now: datetime) -> MergeCounts:
        """Merge list rows in (see ``Ledger.merge_subscribers`` for the rules); a forgotten
        (erased) address is left out, so no list brings it back."""
        kept = without_erased(entries, self.ledger.erased_hashes(), self._key)
        rows = (self._row(e.subscriber, e.status, e.source) for e in kept)
        return self.ledger.merge_subscribers(rows, now)

    def import_listed(self, email: str, entries: Iterable[ListEntry], now: datetime) -> None:
        """Merge the list rows naming ``email`` (by the import rules, as the next publish
        would) before an editor's command acts on it: `list` shows the lists' people before
        any publish, so `add`, `set` and `remove` must find them as listed, not as unknown."""
        key = email_key(email)
        self.merge([e for e in entries if email_key(e.subscriber.email) == key], now)

    def differences(self, entries: Iterable[ListEntry]) -> list[str]:
        """See ``list_differences``."""
        return list_differences(self.ledger.subscribers(), entries)

    def read_file(self, path: Path, root: Path) -> SubscriberList:
        """Read one list file against this project's topics (its rows, and skipped rows)."""
        return read_list(path, root, known_topics=self.known_topics)

    def import_file(
        self, path: Path, root: Path, now: datetime
    ) -> tuple[MergeCounts, SubscriberList]:
        """Read one list file and merge its valid rows; the list carries the skipped rows."""
        found = self.read_file(path, root)
        return self.merge(found.entries, now), found

    def add(
        self,
        email: str,
        name: str | None,
        topics: frozenset[str] | None,
        now: datetime,
        frequency: str | None = None,
    ) -> tuple[SubscriberRecord, tuple[str, ...]]:
        """An editor adds a subscriber, active at once; returns it and what changed.

        ``None`` means "not given". A new address gets the name (default none) and topics
        (default every topic). A known active one is left exactly as it is: changing it is
        ``change``'s job, so giving a different name or topics raises ``SubscriberError``
        naming `pipeline subscribers set` (so does a different ``frequency``; a new address's
        frequency is the caller's to apply). A pending one (a web sign-up not confirmed) is
        activated, keeping what its owner asked for. An unsubscribed, bounced or forgotten
        address is refused: only its owner's confirmed sign-up may bring it back.
        """
        address = normalise_email(email)
        record = self.find(address)
        if record is None:
            self._refuse_erased(address)
            chosen = Subscriber(address, clean_name(name or ""), topics or frozenset())
            self.ledger.merge_subscribers([self._row(chosen, "active", "cli")], now)
            return self._found(address), ("added",)
        if record.status == "bounced":
            raise SubscriberError(
                f"{record.email} was suppressed by bounces ({record.reason}); if the mailbox "
                f"works again, `pipeline subscribers reactivate {record.email}` brings it back"
            )
        if record.suppressed:
            raise SubscriberError(
                f"{record.email} is {record.status} and stays so; only a new sign-up "
                "confirmed by its owner can make it active again"
            )
        differs = describe_changes(record, name, topics)
        if frequency is not None and frequency != record.frequency:
            differs += (f"frequency: {record.frequency} -> {frequency}",)
        if differs:
            raise SubscriberError(
                f"{record.email} is already {record.status} ({'; '.join(differs)}); "
                f"`pipeline subscribers set {record.email}` changes it"
            )
        if record.status == "pending":
            self.ledger.update_subscriber(
                record.email_key, name=record.name, topics=record.topics, now=now, activate=True
            )
            return self._found(address), ("status: pending -> active",)
        return record, ()

    def change(
        self, email: str, name: str | None, topics: frozenset[str] | None, now: datetime
    ) -> tuple[SubscriberRecord, tuple[str, ...]]:
        """Change only what is given of a known subscriber; returns it and each change as
        "field: old -> new". Raises ``SubscriberError`` for an unknown or suppressed one."""
        record = self.find(email)
        if record is None:
            raise SubscriberError(f"{email} is not a subscriber; `pipeline subscribers add` it")
        if record.suppressed:
            raise SubscriberError(f"{record.email} is {record.status}; nothing changed")
        changes = describe_changes(record, name, topics)
        if changes:
            self.ledger.update_subscriber(
                record.email_key,
                name=record.name if name is None else clean_name(name),
                topics=record.topics if topics is None else topics,
                now=now,
                activate=False,
            )
        return self._found(record.email), changes

    def _found(self, email: str) -> SubscriberRecord:
        record = self.find(email)
        assert record is not None, "written just before"
        return record

    def _refuse_erased(self, address: str) -> None:
        if erased_hash(address, self._key) in self.ledger.erased_hashes():
            raise SubscriberError(
                f"{address} asked to be forgotten; only a new sign-up confirmed by its "
                "owner can subscribe it again"
            )

    def remove(self, email: str, now: datetime, *, reason: str = "removed by an editor") -> bool:
        """Unsubscribe an address for good (kept as suppressed so no list brings it back)."""
        return self.ledger.unsubscribe(email_key(email), reason, now)

    def request_signup(
        self,
        email: str,
        name: str,
        topics: frozenset[str],
        now: datetime,
        *,
        frequency: str = "immediately",
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
            secrets.token_urlsafe(16), key, address, clean_name(name), topics, now, None, frequency
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
        record = self.ledger.confirm_signup(
            signup_id, subscriber_ref(signup.email_key, self._key), now
        )
        if record is not None:  # the owner's own consent lifts a past erasure
            self.ledger.unerase(erased_hash(signup.email, self._key))
        return record

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
            subscriber.frequency,
        )


@contextmanager
def open_store(settings: Settings) -> Iterator[SubscriberStore]:
    """The project's subscriber store, its ledger closed on leaving."""
    with open_ledger(settings) as ledger:
        yield SubscriberStore(ledger, secret_key(settings), settings.topics)
