"""What feed readers were last told: each feed's date, and WebSub pings still owed.

A feed's date must never go back (``feed_history``), so the date each feed document was
given is kept with a hash of its content; a WebSub ping the hub did not accept is kept
until a later publish gets it through (``websub``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pipeline.store.database import Database
from pipeline.store.records import FeedDate, iso, parse_instant

__all__ = ["FeedStore"]


class FeedStore:
    """Feed dates and owed WebSub pings."""

    _db: Database

    def feed_dates(self) -> dict[str, FeedDate]:
        """Per feed document directory: the hash and date the last publish gave it."""
        rows = self._db.execute("SELECT scope, body_hash, updated, input_key FROM feed_dates")
        return {
            scope: FeedDate(scope, body_hash, parse_instant(updated), input_key)
            for scope, body_hash, updated, input_key in rows
        }

    def record_feed_dates(self, dates: Iterable[FeedDate]) -> None:
        with self._db.transaction():
            self._db.executemany(
                """INSERT INTO feed_dates (scope, body_hash, updated, input_key)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (scope) DO UPDATE SET body_hash = excluded.body_hash,
                       updated = excluded.updated, input_key = excluded.input_key""",
                [(d.scope, d.body_hash, iso(d.updated), d.input_key) for d in dates],
            )

    def websub_pending(self) -> list[str]:
        """Feed URLs whose WebSub ping the hub has not accepted yet, oldest first."""
        rows = self._db.execute("SELECT topic_url FROM websub_pending ORDER BY since, topic_url")
        return [url for (url,) in rows]

    def record_websub(
        self, notified: Iterable[str], pending: dict[str, str], now: datetime
    ) -> None:
        """Forget the pings the hub accepted; keep (or add) those it did not, with the error."""
        with self._db.transaction():
            self._db.executemany(
                "DELETE FROM websub_pending WHERE topic_url = ?", [(url,) for url in notified]
            )
            self._db.executemany(
                """INSERT INTO websub_pending (topic_url, attempts, last_error, since)
                   VALUES (?, 1, ?, ?)
                   ON CONFLICT (topic_url) DO UPDATE SET
                       attempts = websub_pending.attempts + 1, last_error = excluded.last_error""",
                [(url, error, iso(now)) for url, error in pending.items()],
            )
