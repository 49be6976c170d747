"""The editors' lists against the ledger, without writing anything: what a merge would
change (``plan_lists`` for a publish plan, ``planned_subscriber`` for a preview,
``listed_subscribers`` for ``pipeline subscribers list``), the list values a merge keeps
from changing (``list_differences``), and forgotten addresses left out by their keyed hash.

The merge rules themselves are :func:`pipeline.store.merge_action`'s; the store that writes
is :class:`pipeline.subscribers.SubscriberStore`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from pipeline.addresses import clean_name, email_key
from pipeline.models import Subscriber
from pipeline.store import FREQUENCIES, Ledger, SubscriberRecord, merge_action
from pipeline.subscriber_lists import ListEntry, SubscriberList

__all__ = [
    "ListPlan",
    "describe_changes",
    "erased_hash",
    "list_differences",
    "listed_subscribers",
    "plan_lists",
    "planned_subscriber",
    "subscriber_of",
    "without_erased",
]


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
    return subscriber_of(record) if record is not None and status == "active" else None


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


def subscriber_of(record: SubscriberRecord) -> Subscriber:
    """The ``Subscriber`` a ledger record stands for (address, name, topics, frequency)."""
    return Subscriber(record.email, record.name, record.topics, record.frequency)
