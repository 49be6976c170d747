"""Cadence: the article version log, each reader's digest window, and periodic runs.

Each publish appends one row per announced, renamed or withdrawn article to
``article_versions``, stamped with the instant it was published. A periodic digest is read
from that log alone (never from the files on disk, which may hold unpublished edits): the
latest version of each article with a version in the reader's window ``(start, end]``.

A reader's window starts at ``subscribers.digest_since`` (the end of their previous periodic
digest, or the instant they chose a periodic frequency), else when they were confirmed.
Recording a digest moves it to the window's end in the same transaction as the outbox rows,
and only if it still holds what the digest was planned from, so a reader can never be sent
one window twice. ``ledger_meta.cadence_closed`` is the latest window end recorded or
frequency change made: a version is never stamped at or before it, so nothing published
lands in a window already sent, and a publish recorded after a reader changed frequency is
theirs under the new frequency (``record_publish`` reads the frequencies in the same
transaction, after taking that row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipeline.store.database import Database
from pipeline.store.digests import insert_digest
from pipeline.store.records import AudienceRecord, iso, parse_instant

__all__ = [
    "FREQUENCIES",
    "PERIODIC",
    "ArticleVersion",
    "CadenceStore",
    "ReaderWindow",
    "VersionRow",
    "WindowDigest",
]

FREQUENCIES = ("immediately", "daily", "weekly", "monthly")
PERIODIC = FREQUENCIES[1:]


@dataclass(frozen=True, slots=True)
class ArticleVersion:
    """One version for the log (see :func:`pipeline.store.articles.insert_versions`): ``kind``
    is "published" (new or updated content, announced) or "quiet" (a rename, or a publish
    with ``--no-email``: what digests show changes, nobody is told);
    ``card`` is the JSON a periodic digest renders the article from."""

    entry_id: str
    kind: str
    card: str


@dataclass(frozen=True, slots=True)
class VersionRow:
    entry_id: str
    version_at: datetime
    kind: str  # "published", "quiet" or "withdrawn"
    card: str  # "" for "withdrawn" and for versions logged before the log existed


@dataclass(frozen=True, slots=True)
class ReaderWindow:
    """An active reader and where their next periodic digest starts."""

    email_key: str
    email: str
    name: str
    topics: frozenset[str]
    frequency: str
    start: datetime  # exclusive
    since: str  # digest_since as stored ("" when unset): recording checks it is unchanged


@dataclass(frozen=True, slots=True)
class WindowDigest:
    """One periodic digest: the readers sharing one window start, grouped by topics."""

    frequency: str
    subject: str
    web_html: str
    audiences: tuple[AudienceRecord, ...]
    recipients: tuple[tuple[str, str], ...]  # (audience key, email_key)


class CadenceStore:
    """Version log queries, reader windows and the recording of periodic digests."""

    _db: Database

    def versions_for_window(self, start: datetime, end: datetime) -> list[VersionRow]:
        """Every version up to ``end`` of the articles with a version in ``(start, end]``,
        by article, oldest first."""
        rows = self._db.execute(
            """SELECT entry_id, version_at, kind, card FROM article_versions
               WHERE version_at <= ? AND entry_id IN (
                   SELECT entry_id FROM article_versions WHERE version_at > ? AND version_at <= ?)
               ORDER BY entry_id, version_at, id""",
            (iso(end), iso(start), iso(end)),
        )
        return [VersionRow(e, parse_instant(at), kind, card) for e, at, kind, card in rows]

    def version_instants(self, start: datetime, end: datetime) -> list[datetime]:
        """The distinct instants at which versions were logged in ``(start, end]``, in order."""
        rows = self._db.execute(
            """SELECT DISTINCT version_at FROM article_versions
               WHERE version_at > ? AND version_at <= ? ORDER BY version_at""",
            (iso(start), iso(end)),
        )
        return [parse_instant(at) for (at,) in rows]

    def reader_windows(self, frequency: str, email_key: str | None = None) -> list[ReaderWindow]:
        """The active readers on ``frequency`` (or the one reader ``email_key``, whatever
        their frequency) with the start of their next window."""
        where, params = (
            ("email_key = ?", (email_key,)) if email_key else ("frequency = ?", (frequency,))
        )
        rows = self._db.execute(
            f"""SELECT email_key, email, name, topics, frequency, digest_since,
                       coalesce(digest_since, confirmed_at, created_at)
                FROM subscribers WHERE status = 'active' AND {where} ORDER BY id""",
            params,
        )
        return [
            ReaderWindow(
                key,
                email,
                name,
                frozenset(t for t in topics.split(";") if t),
                freq,
                parse_instant(start),
                since or "",
            )
            for key, email, name, topics, freq, since, start in rows
        ]

    def readers_per_frequency(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT frequency, COUNT(*) FROM subscribers WHERE status = 'active' GROUP BY frequency"
        )
        return {frequency: count for frequency, count in rows}

    def last_periods(self) -> dict[str, datetime]:
        """The latest period end recorded per periodic frequency."""
        rows = self._db.execute(
            "SELECT frequency, max(period_end) FROM cadence_runs GROUP BY frequency"
        )
        return {frequency: parse_instant(end) for frequency, end in rows}

    def record_windows(
        self,
        readers: Sequence[ReaderWindow],
        digests: Sequence[WindowDigest],
        *,
        end: datetime,
        now: datetime,
        run: str | None,
        then: tuple[str, datetime | None] | None = None,
    ) -> list[int | None] | None:
        """Record periodic digests for ``readers``, whose windows all end at ``end``.

        ``run`` names the frequency of a scheduled run: its row ``(run, end)`` is inserted
        first, and if it exists already nothing is recorded and None is returned. Each
        reader's window moves to ``end`` only if it is still where it was planned from; only
        those readers get outbox rows. ``then`` sets every reader's frequency and window
        start afterwards (a change of frequency). Returns each digest's number, in order
        (None for a digest none of whose readers were still where it was planned from).
        """
        stamp, closes = iso(now), iso(end)
        ids: list[int | None] = []
        with self._db.transaction():
            if run is not None:
                inserted = self._db.execute(
                    """INSERT INTO cadence_runs (frequency, period_end, recorded_at, readers)
                       VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING RETURNING frequency""",
                    (run, closes, stamp),
                ).fetchone()
                if inserted is None:
                    return None
            moved: dict[str, ReaderWindow] = {}
            for reader in readers:
                cursor = self._db.execute(
                    """UPDATE subscribers SET digest_since = ?
                       WHERE email_key = ? AND status = 'active' AND frequency = ?
                         AND coalesce(digest_since, '') = ?""",
                    (closes, reader.email_key, reader.frequency, reader.since),
                )
                if cursor.rowcount == 1:
                    moved[reader.email_key] = reader
            for digest in digests:
                rows = [(k, moved[e]) for k, e in digest.recipients if e in moved]
                if not rows:
                    ids.append(None)
                    continue
                digest_id = insert_digest(
                    self._db,
                    stamp,
                    digest.subject,
                    digest.web_html,
                    digest.audiences,
                    ((key, r.email, r.name) for key, r in rows),
                    frequency=digest.frequency,
                )
                ids.append(digest_id)
            if run is not None:
                self._db.execute(
                    "UPDATE cadence_runs SET readers = ? WHERE frequency = ? AND period_end = ?",
                    (len(moved), run, closes),
                )
            if then is not None:
                frequency, since = then
                self._db.executemany(
                    "UPDATE subscribers SET frequency = ?, digest_since = ?, updated_at = ? "
                    "WHERE email_key = ?",
                    [(frequency, since and iso(since), stamp, r.email_key) for r in readers],
                )
            self._close_through(end)
        return ids

    def set_frequency(
        self, email_key: str, frequency: str, since: datetime | None, now: datetime
    ) -> bool:
        """Set a pending or active reader's frequency and window start, nothing being owed
        (the caller checked); False if the address is unknown or suppressed.

        Raises ``cadence_closed`` to ``now`` as well: a publish planned before the change and
        recorded after it logs its versions after ``now``, where the reader's new frequency
        decides how they get them (see ``record_publish``)."""
        with self._db.transaction():
            cursor = self._db.execute(
                """UPDATE subscribers SET frequency = ?, digest_since = ?, updated_at = ?
                   WHERE email_key = ? AND status IN ('pending', 'active')""",
                (frequency, since and iso(since), iso(now), email_key),
            )
            self._close_through(now)
        return cursor.rowcount == 1

    def _close_through(self, end: datetime) -> None:
        """Raise ``cadence_closed`` to ``end``: no version is logged at or before it from now on."""
        self._db.execute(
            """INSERT INTO ledger_meta (name, value) VALUES ('cadence_closed', ?)
               ON CONFLICT (name) DO UPDATE SET value = excluded.value
               WHERE ledger_meta.value < excluded.value""",
            (iso(end),),
        )
