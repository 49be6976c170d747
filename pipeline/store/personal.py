"""One person's data across the ledger: export it, or erase it and keep only a keyed hash.

GDPR articles 15 (access) and 17 (erasure). ``pipeline.personal_data`` decides; these
statements store. The hash is computed by the caller (HMAC under the project's secret), so
no address ever reaches the ``erased_addresses`` table.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.store.database import Database
from pipeline.store.records import SignupRecord, iso, parse_instant

__all__ = ["PersonalDataStore"]


class PersonalDataStore:
    """Export and erasure of one address's data; the erased addresses' keyed hashes."""

    _db: Database

    def signups_of(self, email_key: str) -> list[SignupRecord]:
        """Every web sign-up of the address, oldest first."""
        rows = self._db.execute(
            """SELECT id, email_key, email, name, topics, requested_at, confirmed_at, frequency
               FROM signups WHERE email_key = ? ORDER BY requested_at""",
            (email_key,),
        )
        return [
            SignupRecord(
                i,
                key,
                email,
                name,
                frozenset(t for t in topics.split(";") if t),
                parse_instant(at),
                None if done is None else parse_instant(done),
                frequency,
            )
            for i, key, email, name, topics, at, done, frequency in rows
        ]

    def messages_to(self, email_key: str) -> list[dict[str, object]]:
        """Every outbox row to the address, with its digest's subject, oldest first."""
        rows = self._db.execute(
            """SELECT o.digest_id, d.subject, o.status, o.attempts, o.created_at, o.sent_at,
                      o.last_reply
               FROM outbox o JOIN digests d ON d.id = o.digest_id
               WHERE lower(o.email) = ? ORDER BY o.id""",
            (email_key,),
        )
        names = ("digest", "subject", "status", "attempts", "queued_at", "sent_at", "last_reply")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def erase_subscriber(
        self, email_key: str, address_hash: str, fingerprint: str, now: datetime
    ) -> bool:
        """Delete everything that names the address and keep only its keyed hash, so no list
        or editor can add it again. False if nothing named it (the hash is kept anyway)."""
        with self._db.transaction():
            found = self._db.execute(
                "DELETE FROM subscribers WHERE email_key = ?", (email_key,)
            ).rowcount
            found += self._db.execute(
                "DELETE FROM signups WHERE email_key = ?", (email_key,)
            ).rowcount
            for table in ("bounce_events", "bounce_scores"):  # their replies name it too
                found += self._db.execute(
                    f"DELETE FROM {table} WHERE email_key = ?", (email_key,)
                ).rowcount
            self._db.execute(
                """DELETE FROM outbox_messages WHERE outbox_id IN
                       (SELECT id FROM outbox WHERE lower(email) = ?)""",
                (email_key,),
            )
            # Unsent rows go (nothing may send or retry them); sent ones stay, as counts
            # per digest, but name nobody any more.
            found += self._db.execute(
                "DELETE FROM outbox WHERE lower(email) = ? AND status <> 'sent'", (email_key,)
            ).rowcount
            found += self._db.execute(
                "UPDATE outbox SET email = ?, name = '' WHERE lower(email) = ?",
                (f"erased:{address_hash[:16]}", email_key),
            ).rowcount
            self._db.execute(
                """INSERT INTO erased_addresses (address_hash, key_fingerprint, created_at)
                   VALUES (?, ?, ?) ON CONFLICT (address_hash) DO NOTHING""",
                (address_hash, fingerprint, iso(now)),
            )
        return found > 0

    def erased_hashes(self) -> set[str]:
        """The keyed hashes of every erased address."""
        return {h for (h,) in self._db.execute("SELECT address_hash FROM erased_addresses")}

    def erased_fingerprints(self) -> set[str]:
        """Fingerprints of the keys the erased addresses were hashed with."""
        rows = self._db.execute("SELECT DISTINCT key_fingerprint FROM erased_addresses")
        return {f for (f,) in rows}

    def unerase(self, address_hash: str) -> None:
        """A new confirmed sign-up by the address's owner lifts the erasure's suppression."""
        self._db.execute("DELETE FROM erased_addresses WHERE address_hash = ?", (address_hash,))
