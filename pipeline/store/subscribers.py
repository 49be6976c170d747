"""Subscribers, web sign-ups and suppressions.

pipeline/subscribers.py validates and decides; these statements store, each change in one
transaction. 'unsubscribed' and 'bounced' are suppressions: never mailed again, and only a
confirmed sign-up (``confirm_signup``) makes such an address active again. Sign-ups wait in
their own table until confirmed, so an unconfirmed request never changes an existing
subscriber's name, topics or status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime

from pipeline.store.database import Database
from pipeline.store.records import (
    SUPPRESSED_STATUSES,
    MergeCounts,
    SignupRecord,
    SubscriberRecord,
    SubscriberRow,
    iso,
    merge_action,
    parse_instant,
)

__all__ = ["SubscriberStore"]

# Keys bound in one IN (...) list: far below SQLite's limit of 32,766 host parameters.
_KEYS_PER_QUERY = 500

# The suppressed statuses as an SQL list: "('unsubscribed', 'bounced')".
_SUPPRESSED = "(" + ", ".join(f"'{status}'" for status in SUPPRESSED_STATUSES) + ")"


class SubscriberStore:
    """Subscribers, sign-ups and suppressions."""

    _db: Database

    _SUBSCRIBER_COLUMNS = (
        "id, email_key, email, name, topics, status, source, ref, reason, "
        "created_at, updated_at, confirmed_at, frequency"
    )

    def subscriber(self, email_key: str) -> SubscriberRecord | None:
        row = self._db.execute(
            f"SELECT {self._SUBSCRIBER_COLUMNS} FROM subscribers WHERE email_key = ?",
            (email_key,),
        ).fetchone()
        return None if row is None else _subscriber_record(row)

    def subscriber_by_ref(self, ref: str) -> SubscriberRecord | None:
        row = self._db.execute(
            f"SELECT {self._SUBSCRIBER_COLUMNS} FROM subscribers WHERE ref = ?", (ref,)
        ).fetchone()
        return None if row is None else _subscriber_record(row)

    def subscribers(self, statuses: Iterable[str] = ()) -> list[SubscriberRecord]:
        """Every subscriber (or those with one of ``statuses``) in the order they arrived."""
        wanted = tuple(statuses)
        where = f"WHERE status IN ({', '.join('?' * len(wanted))})" if wanted else ""
        rows = self._db.execute(
            f"SELECT {self._SUBSCRIBER_COLUMNS} FROM subscribers {where} ORDER BY id", wanted
        )
        return [_subscriber_record(row) for row in rows]

    def subscribers_by_key(self, email_keys: Sequence[str]) -> dict[str, SubscriberRecord]:
        """The known subscribers among ``email_keys``, by key (looked up in chunks)."""
        found: dict[str, SubscriberRecord] = {}
        for start in range(0, len(email_keys), _KEYS_PER_QUERY):
            chunk = email_keys[start : start + _KEYS_PER_QUERY]
            rows = self._db.execute(
                f"""SELECT {self._SUBSCRIBER_COLUMNS} FROM subscribers
                    WHERE email_key IN ({", ".join("?" * len(chunk))})""",
                tuple(chunk),
            )
            for row in rows:
                record = _subscriber_record(row)
                found[record.email_key] = record
        return found

    def active_topic_counts(self) -> dict[tuple[frozenset[str], str], int]:
        """How many active subscribers chose each set of topics (empty: every topic) and
        each frequency, by ``(topics, frequency)``."""
        rows = self._db.execute(
            """SELECT topics, frequency, COUNT(*) FROM subscribers WHERE status = 'active'
               GROUP BY topics, frequency"""
        )
        return {(_topics_set(topics), frequency): int(count) for topics, frequency, count in rows}

    def active_subscribers(self, chunk: int = 1000) -> Iterator[tuple[str, str, frozenset[str]]]:
        """``(email, name, topics)`` of every active subscriber in the order they arrived.

        Read ``chunk`` rows at a time (keyset pagination), so a caller may write between
        chunks on the same connection and never holds more than one chunk.
        """
        last = 0
        while True:
            rows = self._db.execute(
                """SELECT id, email, name, topics FROM subscribers
                   WHERE status = 'active' AND id > ? ORDER BY id LIMIT ?""",
                (last, chunk),
            ).fetchall()
            for _, email, name, topics in rows:
                yield email, name, _topics_set(topics)
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def merge_subscribers(self, rows: Iterable[SubscriberRow], now: datetime) -> MergeCounts:
        """Import list rows: unknown addresses are added with the row's status; a known one
        keeps its name and topics (the subscriber's own choices win), a pending one becomes
        active when the row is active, and a row marked unsubscribed or bounced suppresses
        it. Nothing here reactivates an unsubscribed or bounced address."""
        stamp = iso(now)
        added = activated = suppressed = unchanged = 0
        with self._db.transaction():
            for row in rows:
                found = self._db.execute(
                    "SELECT status FROM subscribers WHERE email_key = ?", (row.email_key,)
                ).fetchone()
                action = merge_action(None if found is None else found[0], row.status)
                if action == "add":
                    self._db.execute(
                        """INSERT INTO subscribers (email_key, email, name, topics, status, source,
                               ref, reason, created_at, updated_at, confirmed_at, frequency)
                           VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?)""",
                        (
                            row.email_key,
                            row.email,
                            row.name,
                            _topics_text(row.topics),
                            row.status,
                            row.source,
                            row.ref,
                            stamp,
                            stamp,
                            stamp if row.status == "active" else None,
                            row.frequency,
                        ),
                    )
                    added += 1
                elif action == "activate":
                    self._db.execute(
                        """UPDATE subscribers SET status = 'active', confirmed_at = ?,
                               updated_at = ? WHERE email_key = ?""",
                        (stamp, stamp, row.email_key),
                    )
                    activated += 1
                elif action == "suppress":
                    self._suppress_key(row.email_key, row.status, row.source, stamp)
                    suppressed += 1
                else:
                    unchanged += 1
        return MergeCounts(added, activated, suppressed, unchanged)

    def update_subscriber(
        self, email_key: str, *, name: str, topics: frozenset[str], now: datetime, activate: bool
    ) -> bool:
        """Change a pending or active subscriber's name and topics (and make it active)."""
        cursor = self._db.execute(
            f"""UPDATE subscribers SET name = ?, topics = ?, updated_at = ?,
                    status = CASE WHEN ? THEN 'active' ELSE status END,
                    confirmed_at = CASE WHEN ? THEN coalesce(confirmed_at, ?) ELSE confirmed_at END
                WHERE email_key = ? AND status NOT IN {_SUPPRESSED}""",
            (name, _topics_text(topics), iso(now), activate, activate, iso(now), email_key),
        )
        return cursor.rowcount == 1

    def unsubscribe(self, email_key: str, reason: str, now: datetime) -> bool:
        """Suppress the address at once; False if it was not subscribed (unknown or already
        suppressed). Pending outbox rows for it are cancelled, so nothing more goes out."""
        with self._db.transaction():
            found = self._db.execute(
                "SELECT status FROM subscribers WHERE email_key = ?", (email_key,)
            ).fetchone()
            if found is None or found[0] in SUPPRESSED_STATUSES:
                return False
            self._suppress_key(email_key, "unsubscribed", reason, iso(now))
        return True

    def complain(self, email: str, reason: str, now: datetime) -> bool:
        """A spam complaint (RFC 5965): unsubscribed at once and for good, even if the
        address was bounce-suppressed (so no bounce reactivation brings it back) or unknown
        (so no list import adds it). False if it was already unsubscribed."""
        key, stamp = email.strip().lower(), iso(now)
        with self._db.transaction():
            cursor = self._db.execute(
                """INSERT INTO subscribers (email_key, email, status, source, reason,
                       created_at, updated_at)
                   VALUES (?, ?, 'unsubscribed', 'complaint', ?, ?, ?)
                   ON CONFLICT (email_key) DO UPDATE SET
                       status = 'unsubscribed', reason = excluded.reason,
                       updated_at = excluded.updated_at
                   WHERE subscribers.status <> 'unsubscribed'""",
                (key, email.strip(), reason, stamp, stamp),
            )
            self._cancel_queued(key, "unsubscribed")
        return cursor.rowcount == 1

    def suppress(self, email: str, reason: str, now: datetime) -> None:
        """A hard bounce: the address is never mailed again (an unknown one is recorded too,
        so no later list import adds it). An unsubscribed address stays unsubscribed.

        No transaction of its own: delivery may call it inside one.
        """
        key, stamp = email.strip().lower(), iso(now)
        self._db.execute(
            """INSERT INTO subscribers (email_key, email, status, source, reason,
                   created_at, updated_at)
               VALUES (?, ?, 'bounced', 'bounce', ?, ?, ?)
               ON CONFLICT (email_key) DO UPDATE SET
                   status = 'bounced', reason = excluded.reason, updated_at = excluded.updated_at
               WHERE subscribers.status IN ('pending', 'active')""",
            (key, email.strip(), reason, stamp, stamp),
        )
        self._cancel_queued(key, "bounced")

    def suppressed(self) -> set[str]:
        """The lower-cased addresses never to be mailed (unsubscribed or bounced)."""
        rows = self._db.execute(f"SELECT email_key FROM subscribers WHERE status IN {_SUPPRESSED}")
        return {key for (key,) in rows}

    def _suppress_key(self, email_key: str, status: str, reason: str, stamp: str) -> None:
        self._db.execute(
            "UPDATE subscribers SET status = ?, reason = ?, updated_at = ? WHERE email_key = ?",
            (status, reason, stamp, email_key),
        )
        self._cancel_queued(email_key, status)

    def _cancel_queued(self, email_key: str, status: str) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'failed', last_reply = ?, next_attempt_at = NULL,
                   lease_owner = NULL, lease_until = NULL
               WHERE lower(email) = ? AND status IN ('pending', 'deferred') AND digest_id <> 0""",
            (f"not sent: {status} before delivery", email_key),
        )

    # Sign-ups wait in their own table until confirmed, so an unconfirmed request never
    # changes an existing subscriber's name, topics or status.

    def add_signup(self, signup: SignupRecord, ref: str) -> None:
        """Record a web sign-up; an unknown address also becomes a pending subscriber."""
        stamp = iso(signup.requested_at)
        with self._db.transaction():
            self._db.execute(
                """INSERT INTO signups (id, email_key, email, name, topics, requested_at, frequency)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (
                    signup.id,
                    signup.email_key,
                    signup.email,
                    signup.name,
                    _topics_text(signup.topics),
                    stamp,
                    signup.frequency,
                ),
            )
            self._db.execute(
                """INSERT INTO subscribers (email_key, email, name, topics, status, source, ref,
                       created_at, updated_at)
                   VALUES (?, ?, ?, ?, 'pending', 'web', ?, ?, ?)
                   ON CONFLICT (email_key) DO NOTHING""",
                (
                    signup.email_key,
                    signup.email,
                    signup.name,
                    _topics_text(signup.topics),
                    ref,
                    stamp,
                    stamp,
                ),
            )

    def last_signup_at(self, email_key: str) -> datetime | None:
        row = self._db.execute(
            "SELECT max(requested_at) FROM signups WHERE email_key = ?", (email_key,)
        ).fetchone()
        return None if row[0] is None else parse_instant(row[0])

    def signup(self, signup_id: str) -> SignupRecord | None:
        row = self._db.execute(
            """SELECT id, email_key, email, name, topics, requested_at, confirmed_at, frequency
               FROM signups WHERE id = ?""",
            (signup_id,),
        ).fetchone()
        if row is None:
            return None
        return SignupRecord(
            row[0],
            row[1],
            row[2],
            row[3],
            _topics_set(row[4]),
            parse_instant(row[5]),
            None if row[6] is None else parse_instant(row[6]),
            row[7],
        )

    def confirm_signup(self, signup_id: str, ref: str, now: datetime) -> SubscriberRecord | None:
        """Use a sign-up once: the address becomes active with the name and topics asked for
        (whatever its status was). None if the sign-up is unknown or already used.

        An address that was not active starts its periodic window afresh at its confirmation:
        what was published while it was unsubscribed is never sent to it."""
        stamp = iso(now)
        with self._db.transaction():
            row = self._db.execute(
                "SELECT email_key, email, name, topics FROM signups "
                "WHERE id = ? AND confirmed_at IS NULL",
                (signup_id,),
            ).fetchone()
            if row is None:
                return None
            email_key, email, name, topics = row
            self._db.execute("UPDATE signups SET confirmed_at = ? WHERE id = ?", (stamp, signup_id))
            self._db.execute(
                """INSERT INTO subscribers (email_key, email, name, topics, status, source, ref,
                       created_at, updated_at, confirmed_at)
                   VALUES (?, ?, ?, ?, 'active', 'web', ?, ?, ?, ?)
                   ON CONFLICT (email_key) DO UPDATE SET
                       name = excluded.name, topics = excluded.topics, status = 'active',
                       reason = '', ref = coalesce(subscribers.ref, excluded.ref),
                       digest_since = CASE WHEN subscribers.status = 'active'
                           THEN subscribers.digest_since ELSE NULL END,
                       updated_at = excluded.updated_at, confirmed_at = excluded.confirmed_at""",
                (email_key, email, name, topics, ref, stamp, stamp, stamp),
            )
        return self.subscriber(email_key)

    def refresh_refs(self, fingerprint: str, make_ref: Callable[[str], str]) -> int:
        """Give every subscriber the link reference ``make_ref(email_key)``.

        Refs derive from the secret key; ``fingerprint`` names the key, so this rewrites all
        refs only when the key changed, and otherwise fills just the rows that lack one.
        Returns how many rows changed.
        """
        stored = self._db.execute("SELECT value FROM ledger_meta WHERE name = 'ref_key'").fetchone()
        missing = self._db.execute("SELECT 1 FROM subscribers WHERE ref IS NULL LIMIT 1").fetchone()
        if stored is not None and stored[0] == fingerprint and missing is None:
            return 0  # the usual case, and no write lock taken
        with self._db.transaction():
            found = self._db.execute(
                "SELECT value FROM ledger_meta WHERE name = 'ref_key'"
            ).fetchone()
            where = "" if found is None or found[0] != fingerprint else "WHERE ref IS NULL"
            keys = [
                key for (key,) in self._db.execute(f"SELECT email_key FROM subscribers {where}")
            ]
            self._db.executemany(
                "UPDATE subscribers SET ref = ? WHERE email_key = ?",
                [(make_ref(key), key) for key in keys],
            )
            self._db.execute(
                """INSERT INTO ledger_meta (name, value) VALUES ('ref_key', ?)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value""",
                (fingerprint,),
            )
        return len(keys)


def _topics_text(topics: frozenset[str]) -> str:
    return ";".join(sorted(topics))


def _topics_set(text: str) -> frozenset[str]:
    return frozenset(t for t in text.split(";") if t)


def _subscriber_record(row: tuple[object, ...]) -> SubscriberRecord:
    (id_, key, email, name, topics, status, source, ref, reason, created, updated, confirmed) = row[
        :12
    ]
    return SubscriberRecord(
        id=int(str(id_)),
        email_key=str(key),
        email=str(email),
        name=str(name),
        topics=_topics_set(str(topics)),
        status=str(status),
        source=str(source),
        ref=None if ref is None else str(ref),
        reason=str(reason),
        created_at=parse_instant(str(created)),
        updated_at=parse_instant(str(updated)),
        confirmed_at=None if confirmed is None else parse_instant(str(confirmed)),
        frequency=str(row[12]),
    )
