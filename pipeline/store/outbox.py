"""The outbox: one row per (digest, recipient), claimed before it is sent.

A worker claims a batch of due rows by writing its name and a lease expiry on them, in one
write transaction (SQLite) or with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so two workers
never claim the same row. Each row's fate is committed on its own as soon as the server
answers, which also drops the lease. A worker that dies leaves leased rows still pending:
they are claimable again once the lease runs out, or at once when a worker on the same host
sees the owner is dead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.store.database import Database
from pipeline.store.records import DeliveryCounts, OutboxRow, iso, parse_instant

__all__ = ["ROW_COLUMNS", "OutboxStore"]

# The columns of an OutboxRow, in its order.
ROW_COLUMNS = "id, digest_id, audience_key, email, name, attempts"
# Rows not yet settled: the only ones a lease can be on.
_UNSENT = "status IN ('pending', 'deferred')"


class OutboxStore:
    """Claims, leases and the recorded fate of each message."""

    _db: Database

    def claim(self, owner: str, now: datetime, until: datetime, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` until ``until``; oldest first.

        Due means pending, or deferred with its next try come; rows under another live
        lease are skipped. Deferred rows go first: they have waited longest.
        """
        stamp = iso(now)
        claimed: list[tuple[int, int, str, str, str, int]] = []
        with self._db.transaction():
            for due, due_args in (
                ("status = 'deferred' AND next_attempt_at <= ?", (stamp,)),
                ("status = 'pending'", ()),
            ):
                if len(claimed) >= limit:
                    break
                claimed += self._db.execute(
                    f"""UPDATE outbox SET lease_owner = ?, lease_until = ?
                        WHERE id IN (
                            SELECT id FROM outbox
                            WHERE {due} AND (lease_until IS NULL OR lease_until <= ?)
                            ORDER BY id LIMIT ? {self._db.skip_locked})
                        RETURNING {ROW_COLUMNS}""",
                    (owner, iso(until), *due_args, stamp, limit - len(claimed)),
                ).fetchall()
        return [OutboxRow(*row) for row in sorted(claimed)]

    # Only unsent rows carry leases (every fate clears them), so the lease statements look
    # at unsent rows only: through the (status, id) index, their cost follows what is left to
    # send, not the outbox's whole history, which workers would otherwise scan on every poll.

    def extend_leases(self, owner: str, until: datetime) -> None:
        """Push back the expiry of every row ``owner`` still holds (a long, slow run)."""
        self._db.execute(
            f"UPDATE outbox SET lease_until = ? WHERE {_UNSENT} AND lease_owner = ?",
            (iso(until), owner),
        )

    def release_leases(self, owner: str) -> int:
        """Hand back every row ``owner`` holds unsent, so others may take it now."""
        cursor = self._db.execute(
            f"""UPDATE outbox SET lease_owner = NULL, lease_until = NULL
                WHERE {_UNSENT} AND lease_owner = ?""",
            (owner,),
        )
        return cursor.rowcount

    def lease_holders(self) -> list[str]:
        """The owners of rows currently leased (their leases may have run out)."""
        rows = self._db.execute(
            f"SELECT DISTINCT lease_owner FROM outbox WHERE {_UNSENT} AND lease_owner IS NOT NULL"
        )
        return [owner for (owner,) in rows]

    def still_claimed(self, row_id: int, owner: str) -> bool:
        """True if the row is still ``owner``'s to send: not cancelled since it was claimed
        (its address unsubscribed or bounced while the row waited in the drain's queue)."""
        row = self._db.execute(
            """SELECT 1 FROM outbox WHERE id = ? AND lease_owner = ?
                   AND status IN ('pending', 'deferred')""",
            (row_id, owner),
        ).fetchone()
        return row is not None

    def mark_sent(
        self,
        row_id: int,
        message_id: str,
        reply: str,
        now: datetime,
        *,
        wait: bool = True,
        then_check: tuple[int, str] | None = None,
    ) -> bool | None:
        """The server accepted the message: committed before the connection sends again.

        Returns True once written. With ``wait=False``, when another process holds the
        write lock this returns None at once, having written nothing, instead of sleeping
        (a millisecond or more) for it: a drain then lets its other connections work and
        tries again.

        ``then_check=(next_id, owner)`` asks in the same statement what ``still_claimed``
        would answer for the row the connection sends next, and returns that answer: a
        drain then needs no read transaction of its own per message, which cost about a
        tenth of a drain's time once two processes share the ledger (each commit of one
        makes the other re-read its pages).
        """
        sql = """UPDATE outbox SET status = 'sent', attempts = attempts + 1, message_id = ?,
                     last_reply = ?, sent_at = ?, next_attempt_at = NULL,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?"""
        params: tuple[object, ...] = (message_id, reply, iso(now), row_id)
        if then_check is not None:
            sql += f""" RETURNING (SELECT count(*) FROM outbox
                                   WHERE id = ? AND lease_owner = ? AND {_UNSENT})"""
            params += then_check
        if wait:
            cursor = self._db.execute(sql, params)
            rows: list[Any] | None = cursor.fetchall() if then_check is not None else []
        else:
            rows = self._db.execute_if_free(sql, params)
            if rows is None:
                return None
        if then_check is None:
            return True
        if not rows:  # the sent row itself was erased meanwhile (a subscriber forgotten)
            return self.still_claimed(*then_check)
        return bool(rows[0][0])

    def mark_deferred(
        self, row_id: int, reply: str, next_attempt: datetime, *, cause: str | None = None
    ) -> None:
        """Try again at ``next_attempt``; ``cause`` is what the refusal was judged to be."""
        self._db.execute(
            """UPDATE outbox SET status = 'deferred', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, cause = ?
               WHERE id = ? AND status IN ('pending', 'deferred')""",
            (reply, iso(next_attempt), cause, row_id),
        )

    def mark_failed(self, row_id: int, reply: str, *, cause: str | None = None) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL, cause = ?
               WHERE id = ?""",
            (reply, cause, row_id),
        )

    def mark_held(self, row_id: int, reply: str, cause: str) -> None:
        """Refused for a reason of the sender or relay: the row stays pending, as if not
        tried (no attempt counted), with the reply and its cause kept for ``status``."""
        self._db.execute(
            """UPDATE outbox SET last_reply = ?, cause = ?, lease_owner = NULL, lease_until = NULL
               WHERE id = ? AND status IN ('pending', 'deferred')""",
            (reply, cause, row_id),
        )

    def cancel_suppressed(self, now: datetime) -> int:
        """Fail unsent rows whose address was suppressed since (unsubscribed, bounced)."""
        cursor = self._db.execute(
            """UPDATE outbox SET status = 'failed', next_attempt_at = NULL,
                   last_reply = 'not sent: the address is suppressed'
               WHERE status IN ('pending', 'deferred') AND digest_id <> 0
                 AND (lease_until IS NULL OR lease_until <= ?)
                 AND lower(email) IN (SELECT email_key FROM subscribers
                                      WHERE status IN ('unsubscribed', 'bounced'))""",
            (iso(now),),
        )
        return cursor.rowcount

    def retry_failed(self, digest_id: int | None = None) -> int:
        """Make failed rows pending again with a fresh attempt budget; suppressed stay failed."""
        where, args = ("AND digest_id = ?", (digest_id,)) if digest_id is not None else ("", ())
        cursor = self._db.execute(
            f"""UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = NULL
                WHERE status = 'failed' {where}
                  AND lower(email) NOT IN (SELECT email_key FROM subscribers
                                           WHERE status IN ('unsubscribed', 'bounced'))""",
            args,
        )
        return cursor.rowcount

    def due_count(self, now: datetime) -> int:
        """How many rows are due: pending, or deferred with their next try come."""
        (count,) = self._db.execute(
            """SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending')
                    + (SELECT COUNT(*) FROM outbox
                       WHERE status = 'deferred' AND next_attempt_at <= ?)""",
            (iso(now),),
        ).fetchone()
        return int(count)

    def sent_since(self, since: datetime, limit: int) -> list[datetime]:
        """When each message accepted at or after ``since`` went out (for hourly caps),
        oldest first: at most the newest ``limit``, as a cap of ``limit`` an hour needs no
        more, whatever the history holds."""
        rows = self._db.execute(
            "SELECT sent_at FROM outbox WHERE status = 'sent' AND sent_at >= ? "
            "ORDER BY sent_at DESC LIMIT ?",
            (iso(since), limit),
        )
        return [parse_instant(stamp) for (stamp,) in rows][::-1]

    def delivery_counts(self, digest_id: int | None = None) -> DeliveryCounts:
        where, args = ("WHERE digest_id = ?", (digest_id,)) if digest_id is not None else ("", ())
        counts = dict(
            self._db.execute(f"SELECT status, COUNT(*) FROM outbox {where} GROUP BY status", args)
        )
        return DeliveryCounts(
            **{k: counts.get(k, 0) for k in ("pending", "deferred", "sent", "failed")}
        )

    def cause_counts(self) -> dict[int, dict[str, int]]:
        """Per digest, its unsent or refused rows counted by the cause of their last refusal."""
        counts: dict[int, dict[str, int]] = {}
        for digest_id, cause, count in self._db.execute(
            """SELECT digest_id, cause, COUNT(*) FROM outbox
               WHERE cause IS NOT NULL AND status <> 'sent' GROUP BY digest_id, cause"""
        ):
            counts.setdefault(digest_id, {})[cause] = count
        return counts

    # --- transactional email: a prepared message per row ---------------------------------
    # A confirmation is one prepared message: its row belongs to the reserved digest 0 and
    # its bytes wait in outbox_messages, so the same drain retries it and nothing is lost.
    # Suppressions never cancel these rows: an unsubscribed reader signing up again needs
    # the confirmation.

    def queue_message(
        self, email: str, name: str, sender: str, message_id: str, data: bytes, now: datetime
    ) -> int:
        """Queue one prepared message to ``email``; returns its outbox row id.

        A newer message to the same address replaces the one before it (queued or sent):
        one confirmation row per address, the latest.
        """
        stamp = iso(now)
        with self._db.transaction():
            (row_id,) = self._db.execute(
                f"""INSERT INTO outbox (digest_id, audience_key, email, name, created_at)
                   VALUES (0, 'message', ?, ?, ?)
                   ON CONFLICT {self._db.outbox_recipient} DO UPDATE SET
                       name = excluded.name, status = 'pending', attempts = 0,
                       next_attempt_at = NULL, last_reply = NULL, message_id = NULL,
                       lease_owner = NULL, lease_until = NULL,
                       created_at = excluded.created_at, sent_at = NULL
                   RETURNING id""",
                (email, name, stamp),
            ).fetchone()
            self._db.execute(
                """INSERT INTO outbox_messages (outbox_id, sender, message_id, data)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (outbox_id) DO UPDATE SET sender = excluded.sender,
                       message_id = excluded.message_id, data = excluded.data""",
                (row_id, sender, message_id, data),
            )
        return int(row_id)

    def stored_message(self, row_id: int) -> tuple[str, str, bytes]:
        """The prepared message of a transactional row: (envelope sender, Message-ID, bytes)."""
        row = self._db.execute(
            "SELECT sender, message_id, data FROM outbox_messages WHERE outbox_id = ?", (row_id,)
        ).fetchone()
        if row is None:
            raise LookupError(f"outbox row {row_id} has no stored message")
        return str(row[0]), str(row[1]), bytes(row[2])

    def claim_row(
        self, row_id: int, owner: str, now: datetime, until: datetime
    ) -> OutboxRow | None:
        """Lease one due row to ``owner`` (a sign-up sending its own confirmation at once);
        None if it is not due or another delivery holds it."""
        with self._db.transaction():
            row = self._db.execute(
                f"""UPDATE outbox SET lease_owner = ?, lease_until = ?
                    WHERE id = ? AND (status = 'pending' OR
                          (status = 'deferred' AND next_attempt_at <= ?))
                      AND (lease_until IS NULL OR lease_until <= ?)
                    RETURNING {ROW_COLUMNS}""",
                (owner, iso(until), row_id, iso(now), iso(now)),
            ).fetchone()
        return None if row is None else OutboxRow(*row)

    def deferred_waiting(self, now: datetime) -> tuple[int, datetime | None]:
        """Deferred rows whose next try has not come: how many, and the earliest try."""
        count, first = self._db.execute(
            """SELECT COUNT(*), min(next_attempt_at) FROM outbox
               WHERE status = 'deferred' AND next_attempt_at > ?""",
            (iso(now),),
        ).fetchone()
        return int(count), None if first is None else parse_instant(first)

    def due_messages(self, now: datetime, limit: int = 100) -> list[int]:
        """Ids of prepared (transactional) rows due now and not leased, oldest first."""
        rows = self._db.execute(
            """SELECT id FROM outbox WHERE digest_id = 0
                 AND (status = 'pending' OR (status = 'deferred' AND next_attempt_at <= ?))
                 AND (lease_until IS NULL OR lease_until <= ?)
               ORDER BY id LIMIT ?""",
            (iso(now), iso(now), limit),
        )
        return [int(row_id) for (row_id,) in rows]
