"""Mail that came back and webhook events: the keys of those already handled.

A mixin of ``Ledger``, over the :class:`~pipeline.store.database.Database` seam. Each
message a mailbox yields, and each webhook event, is recorded under a key (its Message-ID,
a hash of its bytes, or the provider's event id) in the same transaction as its effects,
so handling it again changes nothing. No address is stored here (keys are Message-IDs,
hashes or the provider's ids; outcomes are words), so erasing a person needs nothing here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from pipeline.store.database import Database
from pipeline.store.records import iso

__all__ = ["INBOUND_MIGRATION", "InboundStore"]

# Appended to the ledger's migrations (number 8).
INBOUND_MIGRATION = """
    CREATE TABLE inbound_messages (
        key          TEXT PRIMARY KEY,
        source       TEXT NOT NULL,
        kind         TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        received_at  TEXT NOT NULL
    )
"""


class InboundStore:
    """Statements about inbound mail and webhook events."""

    _db: Database

    def inbound_seen(self, key: str) -> bool:
        """True if the message or event ``key`` was handled before."""
        row = self._db.execute("SELECT 1 FROM inbound_messages WHERE key = ?", (key,)).fetchone()
        return row is not None

    def inbound_kind(self, key: str) -> str | None:
        """What the message ``key`` was found to be (kinds joined by ","), None if new."""
        row = self._db.execute("SELECT kind FROM inbound_messages WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def record_inbound(self, key: str, source: str, kind: str, outcome: str, now: datetime) -> bool:
        """Remember that ``key`` was handled and how; False if it already was."""
        cursor = self._db.execute(
            """INSERT INTO inbound_messages (key, source, kind, outcome, received_at)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
            (key, source, kind, outcome[:500], iso(now)),
        )
        return cursor.rowcount == 1

    def inbound_outcomes(self) -> Iterator[tuple[str, str, str, str]]:
        """(key, source, kind, outcome) of everything handled, oldest first."""
        yield from self._db.execute(
            "SELECT key, source, kind, outcome FROM inbound_messages ORDER BY received_at, key"
        )
