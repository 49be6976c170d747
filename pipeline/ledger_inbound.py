"""The ledger's statements about mail that came back: processed keys and complaints.

Mixed into ``Ledger`` (which provides ``_db``, ``transaction`` and ``_cancel_queued``), like
``ledger_bounces``: the only SQL of the inbound side. Each message a mailbox yields, and
each webhook event, is recorded under a key (its Message-ID, a hash of its bytes, or the
provider's event id) in the same transaction as its effects, so handling it again changes
nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

__all__ = ["INBOUND_MIGRATION", "InboundTables"]

# Appended to the ledger's migrations (number 7).
INBOUND_MIGRATION = """
    CREATE TABLE inbound_messages (
        key          TEXT PRIMARY KEY,
        source       TEXT NOT NULL,
        kind         TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        received_at  TEXT NOT NULL
    )
"""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class InboundTables:
    """Statements about inbound mail and webhook events, mixed into ``Ledger``."""

    _db: sqlite3.Connection

    if TYPE_CHECKING:  # provided by Ledger

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _cancel_queued(self, db: sqlite3.Connection, email_key: str, status: str) -> None: ...

    def inbound_seen(self, key: str) -> bool:
        """True if the message or event ``key`` was handled before."""
        row = self._db.execute("SELECT 1 FROM inbound_messages WHERE key = ?", (key,)).fetchone()
        return row is not None

    def record_inbound(self, key: str, source: str, kind: str, outcome: str, now: datetime) -> bool:
        """Remember that ``key`` was handled and how; False if it already was."""
        cursor = self._db.execute(
            """INSERT INTO inbound_messages (key, source, kind, outcome, received_at)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
            (key, source, kind, outcome[:500], _iso(now)),
        )
        return cursor.rowcount == 1

    def inbound_outcomes(self) -> Iterator[tuple[str, str, str, str]]:
        """(key, source, kind, outcome) of everything handled, oldest first."""
        yield from self._db.execute(
            "SELECT key, source, kind, outcome FROM inbound_messages ORDER BY received_at, key"
        )

    def complain(self, email: str, reason: str, now: datetime) -> bool:
        """A spam complaint (RFC 5965): unsubscribed at once and for good, even if the
        address was bounce-suppressed (so no bounce reactivation brings it back) or unknown
        (so no list import adds it). False if it was already unsubscribed."""
        key, stamp = email.strip().lower(), _iso(now)
        with self.transaction() as db:
            cursor = db.execute(
                """INSERT INTO subscribers (email_key, email, status, source, reason,
                       created_at, updated_at)
                   VALUES (?, ?, 'unsubscribed', 'complaint', ?, ?, ?)
                   ON CONFLICT (email_key) DO UPDATE SET
                       status = 'unsubscribed', reason = excluded.reason,
                       updated_at = excluded.updated_at
                   WHERE subscribers.status <> 'unsubscribed'""",
                (key, email.strip(), reason, stamp, stamp),
            )
            self._cancel_queued(db, key, "unsubscribed")
        return cursor.rowcount == 1
