"""Bounces: bounce events, per-address scores, reactivation.

``pipeline.bounce_scores`` decides what a bounce does to a score; this store keeps it.
No statement opens a transaction of its own, so a row's fate, a score, its event and a
suppression are written together inside ``Ledger.transaction``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pipeline.store.database import Database
from pipeline.store.records import iso, parse_instant

__all__ = ["BounceEvent", "BounceScore", "BounceStore", "ScoredAddress"]

# Characters LIKE reads as wildcards, escaped so a --cause text matches as written.
_LIKE_SPECIAL = re.compile(r"[\\%_]")


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


class BounceStore:
    """Bounce events and scores; suppressions themselves are the subscribers' statuses."""

    _db: Database

    def bounce_score(self, email_key: str) -> BounceScore | None:
        row = self._db.execute(
            """SELECT email_key, score, day, day_points, last_bounce_at, reason
               FROM bounce_scores WHERE email_key = ?""",
            (email_key,),
        ).fetchone()
        if row is None:
            return None
        key, score, day, day_points, last, reason = row
        return BounceScore(key, score, day, day_points, parse_instant(last), reason)

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
                iso(event.created_at),
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
                iso(score.last_bounce_at),
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

    def forget_stale_scores(self, before: datetime) -> int:
        """Drop the scores whose last bounce is older than ``before``: they count as zero
        anyway (the next bounce starts again), and a delivery need not clear them."""
        cursor = self._db.execute(
            "DELETE FROM bounce_scores WHERE last_bounce_at < ?", (iso(before),)
        )
        return cursor.rowcount

    def bounce_listing(self, fresh_since: datetime) -> list[ScoredAddress]:
        """Subscribers with a score whose last bounce is at or after ``fresh_since``, or
        suppressed by bounces; highest score first."""
        fresh = iso(fresh_since)
        rows = self._db.execute(
            """SELECT s.email, s.status,
                      CASE WHEN b.last_bounce_at >= ? THEN b.score ELSE 0 END AS current,
                      b.last_bounce_at,
                      CASE WHEN s.status = 'bounced' THEN s.reason ELSE coalesce(b.reason, '') END,
                      (SELECT COUNT(*) FROM bounce_events e WHERE e.email_key = s.email_key)
               FROM subscribers s LEFT JOIN bounce_scores b ON b.email_key = s.email_key
               WHERE b.last_bounce_at >= ? OR s.status = 'bounced'
               ORDER BY current DESC, s.status, s.email_key""",
            (fresh, fresh),
        )
        return [
            ScoredAddress(
                email,
                status,
                score,
                None if last is None else parse_instant(last),
                reason,
                events,
            )
            for email, status, score, last, reason, events in rows
        ]

    def first_sent_at(self, email_key: str, digest_id: int | None = None) -> datetime | None:
        """When the first message to the address (of ``digest_id``, if given) was handed to
        the mail server; None when none was. A bounce needs a message to refer to."""
        sql = "SELECT MIN(sent_at) FROM outbox WHERE lower(email) = ? AND sent_at IS NOT NULL"
        params: tuple[object, ...] = (email_key,)
        if digest_id is not None:
            sql += " AND digest_id = ?"
            params = (email_key, digest_id)
        row = self._db.execute(sql, params).fetchone()
        return None if row is None or row[0] is None else parse_instant(row[0])

    def bounce_events(self, email_key: str) -> list[BounceEvent]:
        """One address's bounce events, oldest first."""
        rows = self._db.execute(
            """SELECT email_key, kind, cause, reply, digest_id, source, points, created_at
               FROM bounce_events WHERE email_key = ? ORDER BY id""",
            (email_key,),
        )
        return [
            BounceEvent(key, kind, cause, reply, digest, source, points, parse_instant(at))
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
                where.append("lower(reason) LIKE ? ESCAPE '\\'")
                args.append("%" + _LIKE_SPECIAL.sub(r"\\\g<0>", cause.lower()) + "%")
            if since is not None:
                where.append("updated_at >= ?")
                args.append(iso(since))
        found = [
            (key, email)
            for key, email in self._db.execute(
                f"SELECT email_key, email FROM subscribers WHERE {' AND '.join(where)} ORDER BY id",
                args,
            )
        ]
        stamp = iso(now)
        # A reader on a periodic frequency starts a fresh window: nothing from the time
        # their address bounced is sent to them (as for a reader back after unsubscribing).
        self._db.executemany(
            """UPDATE subscribers SET status = 'active', reason = '', updated_at = ?,
                   digest_since = CASE WHEN frequency = 'immediately' THEN NULL ELSE ? END
               WHERE email_key = ? AND status = 'bounced'""",
            [(stamp, stamp, key) for key, _ in found],
        )
        self._db.executemany(
            "DELETE FROM bounce_scores WHERE email_key = ?", [(key,) for key, _ in found]
        )
        return [email for _, email in found]
