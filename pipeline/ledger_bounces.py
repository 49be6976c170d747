"""The ledger's bounce tables: bounce events, per-address scores, outbox causes.

Part of the ledger (``Ledger`` inherits these statements): the only SQL about bounces.
``pipeline.bounce_scores`` decides what a bounce does to a score; this module stores it.
Every statement runs on the caller's connection and opens no transaction of its own, so
a score, its event and a suppression are written together by ``Ledger.transaction``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["BOUNCE_MIGRATION", "BounceEvent", "BounceScore", "BounceTables", "ScoredAddress"]

# Appended to the ledger's migrations (number 6).
BOUNCE_MIGRATION = """
    CREATE TABLE bounce_events (
        id          INTEGER PRIMARY KEY,
        email_key   TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('hard', 'soft')),
        cause       TEXT NOT NULL,
        reply       TEXT NOT NULL,
        digest_id   INTEGER,
        source      TEXT NOT NULL,
        points      REAL NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX bounce_events_by_address ON bounce_events (email_key, created_at);
    CREATE TABLE bounce_scores (
        email_key       TEXT PRIMARY KEY,
        score           REAL NOT NULL,
        day             TEXT NOT NULL,
        day_points      REAL NOT NULL,
        last_bounce_at  TEXT NOT NULL,
        reason          TEXT NOT NULL
    );
    ALTER TABLE outbox ADD COLUMN cause TEXT
"""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class BounceScore:
    """An address's running score: ``day`` (UTC, ISO date) already counted ``day_points``."""

    email_key: str
    score: float
    day: str
    day_points: float
    last_bounce_at: datetime
    reason: str  # the last bounce's cause and reply


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One bounce as recorded: what it was about, the server's words, what it scored."""

    email_key: str
    kind: str  # "hard" or "soft"
    cause: str  # short words: "unknown user", "mailbox full" …
    reply: str  # the raw reply or DSN status, as received
    digest_id: int | None
    source: str  # "smtp" (in a run), "dsn", "webhook" …
    points: float  # what it added to the score
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ScoredAddress:
    """A subscriber with a bounce score or suppressed by bounces, for listing."""

    email: str
    status: str
    score: float
    last_bounce_at: datetime | None
    reason: str
    events: int


class BounceTables:
    """Statements about bounces, mixed into ``Ledger`` (which provides ``_db``)."""

    _db: sqlite3.Connection

    def bounce_score(self, email_key: str) -> BounceScore | None:
        row = self._db.execute(
            """SELECT email_key, score, day, day_points, last_bounce_at, reason
               FROM bounce_scores WHERE email_key = ?""",
            (email_key,),
        ).fetchone()
        if row is None:
            return None
        key, score, day, day_points, last, reason = row
        return BounceScore(key, score, day, day_points, datetime.fromisoformat(last), reason)

    def store_bounce(self, event: BounceEvent, score: BounceScore) -> None:
        """Append the event and write the address's new score."""
        self._db.execute(
            """INSERT INTO bounce_events
                   (email_key, kind, cause, reply, digest_id, source, points, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                event.email_key,
                event.kind,
                event.cause,
                event.reply,
                event.digest_id,
                event.source,
                event.points,
                _iso(event.created_at),
            ),
        )
        self._db.execute(
            """INSERT INTO bounce_scores
                   (email_key, score, day, day_points, last_bounce_at, reason)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (email_key) DO UPDATE SET score = excluded.score,
                   day = excluded.day, day_points = excluded.day_points,
                   last_bounce_at = excluded.last_bounce_at, reason = excluded.reason""",
            (
                score.email_key,
                score.score,
                score.day,
                score.day_points,
                _iso(score.last_bounce_at),
                score.reason,
            ),
        )

    def clear_bounce_score(self, email_key: str) -> bool:
        """A delivery succeeded: the address starts again from zero (its events stay)."""
        cursor = self._db.execute("DELETE FROM bounce_scores WHERE email_key = ?", (email_key,))
        return cursor.rowcount > 0

    def scored_addresses(self) -> set[str]:
        """The addresses with a bounce score (few): a delivery to one of them clears it."""
        return {key for (key,) in self._db.execute("SELECT email_key FROM bounce_scores")}

    def bounce_listing(self) -> list[ScoredAddress]:
        """Subscribers with a score, or suppressed by bounces, highest score first."""
        rows = self._db.execute(
            """SELECT s.email, s.status, coalesce(b.score, 0), b.last_bounce_at,
                      CASE WHEN s.status = 'bounced' THEN s.reason ELSE coalesce(b.reason, '') END,
                      (SELECT COUNT(*) FROM bounce_events e WHERE e.email_key = s.email_key)
               FROM subscribers s LEFT JOIN bounce_scores b ON b.email_key = s.email_key
               WHERE b.email_key IS NOT NULL OR s.status = 'bounced'
               ORDER BY coalesce(b.score, 0) DESC, s.status, s.email_key"""
        )
        return [
            ScoredAddress(
                email,
                status,
                score,
                None if last is None else datetime.fromisoformat(last),
                reason,
                events,
            )
            for email, status, score, last, reason, events in rows
        ]

    def bounce_events(self, email_key: str) -> list[BounceEvent]:
        """One address's bounce events, oldest first."""
        rows = self._db.execute(
            """SELECT email_key, kind, cause, reply, digest_id, source, points, created_at
               FROM bounce_events WHERE email_key = ? ORDER BY id""",
            (email_key,),
        )
        return [
            BounceEvent(key, kind, cause, reply, digest, source, points, datetime.fromisoformat(at))
            for key, kind, cause, reply, digest, source, points, at in rows
        ]

    def reactivate_bounced(
        self,
        *,
        keys: tuple[str, ...] = (),
        cause: str | None = None,
        since: datetime | None = None,
        now: datetime,
    ) -> list[str]:
        """Make addresses suppressed by a bounce active again and clear their scores.

        Chooses the ``keys`` (lower-cased addresses) named, or, without keys, those whose
        suppression reason contains ``cause`` (any case) and were suppressed at or after
        ``since``. Unsubscribed or complained addresses are never touched. Returns the
        addresses reactivated.
        """
        where, args = ["status = 'bounced'"], []
        if keys:
            where.append(f"email_key IN ({', '.join('?' * len(keys))})")
            args += list(keys)
        else:
            if cause:
                where.append("instr(lower(reason), ?) > 0")
                args.append(cause.lower())
            if since is not None:
                where.append("updated_at >= ?")
                args.append(_iso(since))
        found = [
            (key, email)
            for key, email in self._db.execute(
                f"SELECT email_key, email FROM subscribers WHERE {' AND '.join(where)} ORDER BY id",
                args,
            )
        ]
        stamp = _iso(now)
        self._db.executemany(
            """UPDATE subscribers SET status = 'active', reason = '', updated_at = ?
               WHERE email_key = ? AND status = 'bounced'""",
            [(stamp, key) for key, _ in found],
        )
        self._db.executemany(
            "DELETE FROM bounce_scores WHERE email_key = ?", [(key,) for key, _ in found]
        )
        return [email for _, email in found]

    def cause_counts(self) -> dict[int, dict[str, int]]:
        """Per digest, its unsent or refused outbox rows counted by cause."""
        counts: dict[int, dict[str, int]] = {}
        for digest_id, cause, count in self._db.execute(
            """SELECT digest_id, cause, COUNT(*) FROM outbox
               WHERE cause IS NOT NULL AND status <> 'sent' GROUP BY digest_id, cause"""
        ):
            counts.setdefault(digest_id, {})[cause] = count
        return counts
