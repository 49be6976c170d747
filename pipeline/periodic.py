"""Daily, weekly and monthly digests, each reader's window read from the version log.

A reader's digest covers ``(start, end]``: from the end of their previous periodic digest
(or the instant they chose this frequency, or were confirmed) to the slot being sent. It
holds every article on their topics with a version published in that window, once, in its
latest version up to ``end``; an article withdrawn by ``end`` drops out. An article is *new*
to the reader unless it had a version before ``start`` (then it is *updated*, as a publish
would call it): published and updated within one window, it appears once, as new.

Readers sharing a window start share one digest row, grouped by topics into audiences the
same way a publish's digest is, and recorded with one outbox row per reader in the
transaction that moves their window on (``Ledger.record_windows``).
"""

from __future__ import annotations

import json
import secrets
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.atomic import write_if_changed
from pipeline.cadence import latest_slot, next_slot, period_label
from pipeline.config import Settings
from pipeline.digest import EVERY_TOPIC, build_audiences, group_by_topics, render_audience
from pipeline.digest_context import Period
from pipeline.digest_templates import template_environment
from pipeline.disclaimer import load_disclaimer
from pipeline.errors import SubscriberError
from pipeline.models import Article, Audience, Changes, Entry, Subscriber, Therapy
from pipeline.site import digest_pages
from pipeline.store import (
    FREQUENCIES,
    PERIODIC,
    ArticleVersion,
    DigestCopy,
    Ledger,
    ReaderWindow,
    WindowDigest,
)

__all__ = [
    "IMMEDIATELY",
    "DueRun",
    "ScheduledRun",
    "change_frequency",
    "entry_card",
    "frequency_choices",
    "plan_windows",
    "run_due",
    "schedule",
    "window_entries",
]

IMMEDIATELY = FREQUENCIES[0]


def frequency_choices(settings: Settings) -> list[tuple[str, str]]:
    """Each frequency with the words the sign-up and preferences pages show for it."""
    schedule = settings.schedule
    day = schedule.day_of_month
    suffix = (
        "st" if day in (1, 21) else "nd" if day in (2, 22) else "rd" if day in (3, 23) else "th"
    )
    at = f"at {schedule.hour}:00 ({schedule.timezone})"
    return [
        (IMMEDIATELY, "Each time we publish"),
        ("daily", f"Once a day, {at}"),
        ("weekly", f"Once a week, on {schedule.weekday.capitalize()}s {at}"),
        ("monthly", f"Once a month, on the {day}{suffix} {at}"),
    ]


def entry_card(entry: Entry, kind: str = "published") -> ArticleVersion:
    """The version of ``entry`` to log: what a periodic digest shows of it, as JSON."""
    a = entry.article
    card = {
        "slug": a.slug,
        "url": entry.url,
        "title": a.title,
        "summary": a.summary,
        "topics": list(a.topics),
        "therapy": None
        if a.therapy is None
        else [a.therapy.name, a.therapy.maker, list(a.therapy.brands)],
        "published": entry.published.isoformat(),
        "updated": entry.updated.isoformat(),
    }
    return ArticleVersion(
        entry.entry_id, kind, json.dumps(card, ensure_ascii=False, sort_keys=True)
    )


def _entry(entry_id: str, card: str) -> Entry:
    data = json.loads(card)
    therapy = data["therapy"]
    published, updated = (
        datetime.fromisoformat(data["published"]),
        datetime.fromisoformat(data["updated"]),
    )
    article = Article(
        slug=data["slug"],
        source="",
        title=data["title"],
        summary=data["summary"],
        published=published,
        updated=updated,
        topics=tuple(data["topics"]),
        therapy=None if therapy is None else Therapy(therapy[0], therapy[1], tuple(therapy[2])),
        trials=(),
        draft=False,
        explicit_id=None,
        body_markdown="",
        content_hash="",
    )
    return Entry(article, entry_id, data["url"], published, updated)


def window_entries(ledger: Ledger, start: datetime, end: datetime) -> Changes:
    """What a window ``(start, end]`` announces, every topic: new and updated entries, newest
    first (see the module docstring for the rules)."""
    per_article: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for row in ledger.versions_for_window(start, end):
        per_article[row.entry_id].append((row.version_at, row.kind, row.card))
    new: list[Entry] = []
    updated: list[Entry] = []
    for entry_id, versions in per_article.items():
        inside = [v for v in versions if v[0] > start]
        before = [v for v in versions if v[0] <= start]
        latest = versions[-1]
        if latest[1] == "withdrawn" or not latest[2]:
            continue
        if not any(kind == "published" for _, kind, _ in inside):
            continue  # only quiet versions (renames, --no-email): nothing to announce
        # As a publish says: an entry published before (even if withdrawn since) is updated.
        (updated if before else new).append(_entry(entry_id, latest[2]))

    def newest_first(entries: list[Entry]) -> tuple[Entry, ...]:
        return tuple(sorted(entries, key=lambda e: (e.published, e.slug), reverse=True))

    return Changes(new=newest_first(new), updated=newest_first(updated))


def _by_content(
    ledger: Ledger, readers: Sequence[ReaderWindow], end: datetime
) -> dict[int, tuple[Changes, list[ReaderWindow]]]:
    """The readers whose window ``(start, end]`` is open, grouped by what it holds.

    Readers whose starts lie between the same two logged instants see the same versions, so
    they share one group however many instants they joined at: the work is bounded by the
    publishes in the period, not by the readers. Readers with nothing after their start are
    left out.
    """
    open_windows = [r for r in readers if r.start < end]
    if not open_windows:
        return {}
    instants = ledger.version_instants(min(r.start for r in open_windows), end)
    groups: dict[int, tuple[Changes, list[ReaderWindow]]] = {}
    for reader in open_windows:
        seen = bisect_right(instants, reader.start)  # instants at or before their start
        if seen == len(instants):
            continue
        if seen not in groups:
            groups[seen] = (window_entries(ledger, reader.start, end), [])
        groups[seen][1].append(reader)
    return groups


def _with_news(ledger: Ledger, readers: Sequence[ReaderWindow], end: datetime) -> int:
    """How many of ``readers`` have something on their topics in their window up to ``end``."""
    return sum(
        1
        for changes, members in _by_content(ledger, readers, end).values()
        for r in members
        if any(
            Subscriber(r.email, r.name, r.topics).wants(e.article.topics) for e in changes.announced
        )
    )


def plan_windows(
    settings: Settings,
    ledger: Ledger,
    readers: Sequence[ReaderWindow],
    end: datetime,
    frequency: str,
    *,
    at_slot: bool = True,
) -> list[WindowDigest]:
    """Render the digests of ``readers`` for windows ending at ``end``, readers whose window
    has nothing on their topics left out. ``at_slot`` is False for a
    window closed between slots (its last day then counts in the period's name)."""
    env = template_environment(str(settings.paths.templates))
    disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
    groups: dict[tuple[int, str], list[ReaderWindow]] = defaultdict(list)
    contents: dict[int, Changes] = {}
    for seen, (changes, alike) in _by_content(ledger, readers, end).items():
        contents[seen] = changes
        for reader in alike:
            label = period_label(reader.start, end, settings.schedule, end_day=not at_slot)
            groups[(seen, label)].append(reader)
    digests = []
    for (seen, label), group in sorted(groups.items()):
        changes = contents[seen]
        if not changes.announced:
            continue
        period = Period(frequency, label)
        nonce = secrets.token_hex(6)
        keys = {r.email: r.email_key for r in group}
        members = [Subscriber(r.email, r.name, r.topics, r.frequency) for r in group]
        audiences = build_audiences(changes, group_by_topics(members))
        compiled = [
            render_audience(audience, settings, disclaimer, env, nonce, period)
            for audience, _ in audiences.values()
        ]
        everyone = Audience(EVERY_TOPIC, frozenset(), changes.new, changes.updated)
        web = render_audience(everyone, settings, disclaimer, env, nonce, period)
        digests.append(
            WindowDigest(
                frequency,
                web.subject,
                web.web_html,  # no personal slot or link (digest.render_audience)
                tuple(c.record() for c in compiled),
                tuple((key, keys[s.email]) for key, (_, ms) in audiences.items() for s in ms),
            )
        )
    return digests


@dataclass(frozen=True, slots=True)
class DueRun:
    """One frequency's slot in a ``digests --due`` run."""

    frequency: str
    slot: datetime  # the window end, a UTC instant
    recorded: bool  # False: this slot was recorded before (by an earlier or concurrent run)
    readers: int = 0  # readers on this frequency whose window it closed
    digests: tuple[int, ...] = ()  # the digests recorded, one per window start
    recipients: int = 0  # outbox rows written


def run_due(settings: Settings, ledger: Ledger, now: datetime) -> list[DueRun]:
    """Record the daily, weekly and monthly digests whose slot is at or before ``now`` and not
    recorded yet: only each frequency's latest slot (a reader's window covers any slots missed
    before it, so nothing falls between). Running it again for the same slots records nothing.
    Writes each digest's public web copy; delivery is the caller's (the outbox).
    """
    done = ledger.last_periods()
    runs = []
    for frequency in PERIODIC:
        slot = latest_slot(frequency, settings.schedule, now)
        if frequency in done and done[frequency] >= slot:
            runs.append(DueRun(frequency, slot, False))
            continue
        readers = [r for r in ledger.reader_windows(frequency) if r.start < slot]
        digests = plan_windows(settings, ledger, readers, slot, frequency)
        ids = ledger.record_windows(readers, digests, end=slot, now=now, run=frequency)
        if ids is None:
            runs.append(DueRun(frequency, slot, False))
            continue
        _write_web_copies(settings, digests, ids)
        sent = sum(len(d.recipients) for d, i in zip(digests, ids, strict=True) if i is not None)
        recorded = tuple(i for i in ids if i is not None)
        runs.append(DueRun(frequency, slot, True, len(readers), recorded, sent))
    return runs


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """The next run of one periodic frequency, as ``pipeline status`` shows it."""

    frequency: str
    due: datetime  # the slot instant (UTC)
    overdue: bool  # its time has come and ``digests --due`` has not recorded it
    readers: int  # active readers on this frequency
    with_news: int = 0  # of those, how many it would mail if it ran now (news so far)


def schedule(settings: Settings, ledger: Ledger, now: datetime) -> tuple[ScheduledRun, ...]:
    """The next due run of each periodic frequency, its readers, and how many of them have
    news in their window so far (up to ``now``, or up to the slot if it is overdue)."""
    done = ledger.last_periods()
    readers = ledger.readers_per_frequency()
    runs = []
    for frequency in PERIODIC:
        latest = latest_slot(frequency, settings.schedule, now)
        overdue = frequency not in done or done[frequency] < latest
        # An --as-of run may have recorded slots still to come: the next is after those.
        after = max(now, done[frequency]) if frequency in done else now
        due = latest if overdue else next_slot(frequency, settings.schedule, after)
        news = _with_news(ledger, ledger.reader_windows(frequency), min(due, now))
        runs.append(ScheduledRun(frequency, due, overdue, readers.get(frequency, 0), news))
    return tuple(runs)


def _write_web_copies(
    settings: Settings, digests: Sequence[WindowDigest], ids: Sequence[int | None]
) -> None:
    for digest, digest_id in zip(digests, ids, strict=True):
        if digest_id is None:
            continue
        editions = tuple((a.key, a.web_html) for a in digest.audiences)
        copy = DigestCopy(digest_id, datetime.now(UTC), digest.subject, digest.web_html, editions)
        for relative, data in digest_pages(copy, settings).items():
            write_if_changed(settings.paths.public / relative, data)


def change_frequency(
    settings: Settings, ledger: Ledger, email_key: str, frequency: str, now: datetime
) -> bool:
    """Set a subscriber's frequency from ``now`` on, so that nothing is sent twice and
    nothing falls between: a reader leaving ``immediately`` starts a window at ``now``; one
    moving between periodic frequencies keeps their window; one going back to ``immediately``
    gets what their open window holds at once, as a digest of its own in the outbox.

    Returns False if the address is unknown or suppressed. Raises ``SubscriberError`` for an
    unknown frequency.
    """
    if frequency not in FREQUENCIES:
        raise SubscriberError(f"frequency {frequency!r}: use one of {', '.join(FREQUENCIES)}")
    record = ledger.subscriber(email_key)
    if record is None or record.suppressed:
        return False
    if record.frequency == frequency:
        return True
    windows = (
        ledger.reader_windows(record.frequency, email_key) if record.status == "active" else []
    )
    if record.frequency == IMMEDIATELY:
        return ledger.set_frequency(email_key, frequency, now if windows else None, now)
    if frequency != IMMEDIATELY or not windows:
        since = windows[0].since if windows else ""
        return ledger.set_frequency(
            email_key, frequency, datetime.fromisoformat(since) if since else None, now
        )
    digests = plan_windows(settings, ledger, windows, now, record.frequency, at_slot=False)
    ids = ledger.record_windows(
        windows, digests, end=now, now=now, run=None, then=(frequency, None)
    )
    if ids is not None:
        _write_web_copies(settings, digests, ids)
    return True
