"""The subscriber store: who is pending, active, unsubscribed or bounced, in the ledger.

*pending* is a web sign-up not confirmed yet; *unsubscribed* and *bounced* are
suppressions: never mailed again, and only a new confirmed sign-up makes such an address
active again. The editors' lists merge in on every publish without ever reactivating one.

This module is also where the rest of the pipeline imports subscriber functions from:
addresses (``pipeline.addresses``), lists (``pipeline.subscriber_lists``) and link tokens
(``pipeline.tokens``) are re-exported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
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
    FREQUENCIES,
    Ledger,
    MergeCounts,
    SignupRecord,
    SubscriberRecord,
    SubscriberRow,
    merge_action,
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
    "ListPlan",
    "SignupRequest",
    "SubscriberList",
    "SubscriberStore",
    "TokenError",
    "clean_name",
    "describe_changes",
    "email_key",
    "erased_hash",
    "export_csv",
    "list_differences",
    "listed_subscribers",
    "load_subscribers",
    "make_token",
    "normalise_email",
    "open_store",
    "parse_topics",
    "plan_lists",
    "planned_subscriber",
    "read_list",
    "read_token",
    "sign_token",
    "subscriber_ref",
    "verify_token",
    "without_erased",
]

# One confirmation email per address in this window, however often the form is sent.
RESEND_AFTER = timedelta(minutes=5)


def list_differences(
    records: Iterable[SubscriberRecord], entries: Iterable[ListEntry]
) -> list[str]:
    """List rows whose name or topics differ from a known subscriber's, as
    "source: address: field: 'ledger' -> 'file'". A merge keeps the subscriber's own
    choices, so these are what a list would change if it could."""
    known = {r.email_key: r for r in records if not r.suppressed}
    notes = []
    for entry in entries:
        record = known.get(email_key(entry.subscriber.email))
        if record is not None:
            found = describe_changes(record, entry.subscriber.name, entry.subscriber.topics)
            notes += [f"{entry.source}: {record.email}: {change}" for change in found]
    return notes


def without_erased(entries: Iterable[ListEntry], erased: set[str], key: str) -> Iterator[ListEntry]:
    """``entries`` less the addresses whose keyed hash is in ``erased`` (forgotten ones),
    one at a time: a list is never copied."""
    if not erased:
        return iter(entries)
    return (e for e in entries if erased_hash(e.subscriber.email, key) not in erased)


@dataclass(slots=True)
class ListPlan:
    """What merging the editors' lists would do, without writing anything: how many will
    be active per set of topics ("immediately" readers in ``topic_counts``, those on a
    daily, weekly or monthly frequency in ``standby_counts``), and the list values that
    differ from a known subscriber's own (kept; see ``list_differences``)."""

    topic_counts: Counter[frozenset[str]]
    standby_counts: Counter[frozenset[str]]
    differences: list[str]


def plan_lists(
    ledger: Ledger, entries: Iterable[ListEntry], secret: str, *, chunk: int = 500
) -> ListPlan:
    """Preview a merge of ``entries`` (streamed: ``ListFiles.entries``) for a publish plan.

    The ledger's active subscribers are counted in SQL and the list rows looked up
    ``chunk`` addresses at a time, so memory does not grow with the list or the ledger.
    """
    immediate: Counter[frozenset[str]] = Counter()
    periodic: Counter[frozenset[str]] = Counter()

    def tally(topics: frozenset[str], frequency: str, count: int) -> None:
        (immediate if frequency == FREQUENCIES[0] else periodic)[topics] += count

    for (topics, frequency), count in ledger.active_topic_counts().items():
        tally(topics, frequency, count)
    differences: list[str] = []
    stream = without_erased(entries, ledger.erased_hashes(), secret)
    while batch := list(itertools.islice(stream, chunk)):
        known = ledger.subscribers_by_key([email_key(e.subscriber.email) for e in batch])
        differences += list_differences(known.values(), batch)
        for entry in batch:
            found = known.get(email_key(entry.subscriber.email))
            action = merge_action(None if found is None else found.status, entry.status)
            if action == "add" and entry.status == "active":
                tally(entry.subscriber.topics, entry.subscriber.frequency, 1)
            elif action == "activate" and found is not None:
                # A known address keeps its own topics and frequency.
                tally(found.topics, found.frequency, 1)
            elif action == "suppress" and found is not None and found.status == "active":
                tally(found.topics, found.frequency, -1)
    return ListPlan(+immediate, +periodic, differences)  # +: drops the groups that emptied


def planned_subscriber(
    ledger: Ledger, entries: Iterable[ListEntry], address: str, secret: str
) -> Subscriber | None:
    """``address`` as it will be once ``entries`` are merged in, if it will be active."""
    key = email_key(address)
    record = ledger.subscriber(key)
    kept = without_erased(entries, ledger.erased_hashes(), secret)
    entry = next((e for e in kept if email_key(e.subscriber.email) == key), None)
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


def listed_subscribers(
    ledger: Ledger, lists: SubscriberList, secret: str, now: datetime
) -> list[SubscriberRecord]:
    """Every subscriber as the next publish will see them: the ledger's, with the lists'
    rows merged in by the import rules, without writing anything. A row not imported yet
    has id 0 and its list line as ``source``."""
    records = {record.email_key: record for record in ledger.subscribers()}
    for entry in without_erased(lists.entries, ledger.erased_hashes(), secret):
        key = email_key(entry.subscriber.email)
        record = records.get(key)
        action = merge_action(None if record is None else record.status, entry.status)
        if action == "add":
            member = entry.subscriber
            records[key] = SubscriberRecord(
                0,
                key,
                member.email,
                member.name,
                member.topics,
                entry.status,
                entry.source,
                None,
                "",
                now,
                now,
                now if entry.status == "active" else None,
                member.frequency,
            )
        elif action in ("activate", "suppress") and record is not None:
            status = "active" if action == "activate" else entry.status
            records[key] = dataclasses.replace(record, status=status)
    return list(records.values())


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


def _topics_label(topics: frozenset[str]) -> str:
    return ";".join(sorted(topics)) or "every topic"


def describe_changes(
    record: SubscriberRecord, name: str | None, topics: frozenset[str] | None
) -> tuple[str, ...]:
    """Each field that ``name`` and ``topics`` (None: not given) would change, as
    "name: 'old' -> 'new'"; empty when nothing would change."""
    changes = []
    if name is not None and clean_name(name) != record.name:
        changes.append(f"name: {record.name!r} -> {clean_name(name)!r}")
    if topics is not None and topics != record.topics:
        changes.append(f"topics: {_topics_label(record.topics)} -> {_topics_label(topics)}")
    return tuple(changes)


def erased_hash(address: str, key: str) -> str:
    """The keyed hash (HMAC-SHA256 under the project's secret key) an erased address is
    remembered by: it matches the address again but cannot be read back."""
    return hmac.new(key.encode(), email_key(address).encode(), hashlib.sha256).hexdigest()


def _subscriber(record: SubscriberRecord) -> Subscriber:
    return Subscriber(record.email, record.name, record.topics, record.frequency)
