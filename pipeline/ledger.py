"""The SQLite ledger: article versions, digests and the outbox. The only module that speaks SQL.

The ledger is what makes publishing safe to repeat: an article's identity and dates live
here, so feeds stay stable; each digest's recipients are written as outbox rows in the
same transaction as the article versions they announce, so a crash leaves either nothing
or a complete list of pending messages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "AudienceRecord",
    "DeliveryCounts",
    "DigestDelivery",
    "KnownArticle",
    "Ledger",
    "OutboxRow",
    "PublishRecord",
]

_MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE articles (
        slug          TEXT PRIMARY KEY,
        entry_id      TEXT NOT NULL UNIQUE,
        content_hash  TEXT NOT NULL,
        published     TEXT NOT NULL,
        updated       TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('live', 'withdrawn')),
        first_seen    TEXT NOT NULL,
        changed_at    TEXT NOT NULL
    );
    CREATE TABLE runs (
        id           INTEGER PRIMARY KEY,
        finished_at  TEXT NOT NULL,
        new          INTEGER NOT NULL,
        updated      INTEGER NOT NULL,
        withdrawn    INTEGER NOT NULL,
        digest_id    INTEGER
    );
    CREATE TABLE digests (
        id          INTEGER PRIMARY KEY,
        created_at  TEXT NOT NULL,
        subject     TEXT NOT NULL,
        web_html    TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE digest_audiences (
        digest_id     INTEGER NOT NULL REFERENCES digests(id),
        audience_key  TEXT NOT NULL,
        subject       TEXT NOT NULL,
        slot_nonce    TEXT NOT NULL,
        html          TEXT NOT NULL,
        text          TEXT NOT NULL,
        PRIMARY KEY (digest_id, audience_key)
    );
    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY,
        digest_id        INTEGER NOT NULL REFERENCES digests(id),
        audience_key     TEXT NOT NULL,
        email            TEXT NOT NULL COLLATE NOCASE,
        name             TEXT NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'sent', 'deferred', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TEXT,
        last_reply       TEXT,
        message_id       TEXT,
        lease_owner      TEXT,
        lease_until      TEXT,
        created_at       TEXT NOT NULL,
        sent_at          TEXT,
        UNIQUE (digest_id, email)
    );
    CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
    CREATE TABLE suppressions (
        email       TEXT PRIMARY KEY COLLATE NOCASE,
        reason      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    """,
    # 2: claim-before-send finds due rows in id order. One index on the outbox only: each
    # message's commit rewrites every index its row is in, and that is the cost per send.
    """
    DROP INDEX outbox_due;
    CREATE INDEX outbox_by_status ON outbox (status, id);
    """,
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class KnownArticle:
    slug: str
    entry_id: str
    content_hash: str
    published: datetime
    updated: datetime
    live: bool


@dataclass(frozen=True, slots=True)
class AudienceRecord:
    key: str
    subject: str
    slot_nonce: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    digest_id: int
    audience_key: str
    email: str
    name: str
    attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    pending: int = 0
    deferred: int = 0
    sent: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class DigestDelivery:
    """Where one digest's delivery stands: its outbox rows counted by status."""

    digest_id: int
    subject: str
    created_at: datetime
    counts: DeliveryCounts


@dataclass(frozen=True, slots=True)
class PublishRecord:
    """Everything one publish writes, in one transaction."""

    articles: tuple[KnownArticle, ...]  # new and updated versions (live)
    withdrawn: tuple[str, ...]
    digest_subject: str | None
    web_html: str
    audiences: tuple[AudienceRecord, ...]
    recipients: Iterable[tuple[str, str, str]]  # (audience_key, email, name)
    new_count: int = 0


class Ledger:
    """A connection to ``state/pipeline.db``; use as a context manager."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.transaction() as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    # --- articles -------------------------------------------------------------------------

    def known_articles(self) -> dict[str, KnownArticle]:
        rows = self._db.execute(
            "SELECT slug, entry_id, content_hash, published, updated, status FROM articles"
        )
        return {
            slug: KnownArticle(
                slug, entry_id, content_hash, _parse(pub), _parse(upd), status == "live"
            )
            for slug, entry_id, content_hash, pub, upd, status in rows
        }

    # --- one publish ----------------------------------------------------------------------

    def record_publish(self, record: PublishRecord, now: datetime) -> int | None:
        """Write article versions, the digest and its outbox rows atomically.

        Returns the digest's number, or None when there was nothing to send.
        """
        stamp = _iso(now)
        with self.transaction() as db:
            for article in record.articles:
                db.execute(
                    """INSERT INTO articles
                           (slug, entry_id, content_hash, published, updated, status, first_seen, changed_at)
                       VALUES (?, ?, ?, ?, ?, 'live', ?, ?)
                       ON CONFLICT (slug) DO UPDATE SET
                           entry_id = excluded.entry_id, content_hash = excluded.content_hash,
                           published = excluded.published, updated = excluded.updated,
                           status = 'live', changed_at = excluded.changed_at""",
                    (
                        article.slug,
                        article.entry_id,
                        article.content_hash,
                        _iso(article.published),
                        _iso(article.updated),
                        stamp,
                        stamp,
                    ),
                )
            db.executemany(
                "UPDATE articles SET status = 'withdrawn', changed_at = ? WHERE slug = ?",
                [(stamp, slug) for slug in record.withdrawn],
            )
            digest_id: int | None = None
            if record.digest_subject is not None and record.audiences:
                cursor = db.execute(
                    "INSERT INTO digests (created_at, subject, web_html) VALUES (?, ?, ?)",
                    (stamp, record.digest_subject, record.web_html),
                )
                digest_id = cursor.lastrowid
                db.executemany(
                    """INSERT INTO digest_audiences
                           (digest_id, audience_key, subject, slot_nonce, html, text)
                       VALUES (?, ?, ?, ?, ?, ?)""",
                    [
                        (digest_id, a.key, a.subject, a.slot_nonce, a.html, a.text)
                        for a in record.audiences
                    ],
                )
                db.executemany(
                    """INSERT OR IGNORE INTO outbox (digest_id, audience_key, email, name, created_at)
                       VALUES (?, ?, ?, ?, ?)""",
                    (
                        (digest_id, key, email, name, stamp)
                        for key, email, name in record.recipients
                    ),
                )
            db.execute(
                "INSERT INTO runs (finished_at, new, updated, withdrawn, digest_id) VALUES (?, ?, ?, ?, ?)",
                (
                    stamp,
                    record.new_count,
                    len(record.articles) - record.new_count,
                    len(record.withdrawn),
                    digest_id,
                ),
            )
        return digest_id

    def last_run(self) -> tuple[datetime, int | None] | None:
        row = self._db.execute(
            "SELECT finished_at, digest_id FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (_parse(row[0]), row[1])

    # --- digests and the outbox -----------------------------------------------------------

    def audience(self, digest_id: int, key: str) -> AudienceRecord:
        row = self._db.execute(
            """SELECT audience_key, subject, slot_nonce, html, text FROM digest_audiences
               WHERE digest_id = ? AND audience_key = ?""",
            (digest_id, key),
        ).fetchone()
        if row is None:
            raise LookupError(f"digest {digest_id} has no audience {key!r}")
        return AudienceRecord(*row)

    # --- the outbox: claim before send ----------------------------------------------------
    #
    # A worker claims a batch of due rows by writing its name and a lease expiry on them, in
    # one write transaction, so two workers never claim the same row. Each row's fate is
    # committed on its own as soon as the server answers, which also drops the lease. A
    # worker that dies leaves leased rows still pending: they are claimable again once the
    # lease runs out, or at once when a worker on the same host sees the owner is dead.

    _ROW = "id, digest_id, audience_key, email, name, attempts"

    def claim(self, owner: str, now: datetime, until: datetime, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` until ``until``; oldest first.

        Due means pending, or deferred with its next try come; rows under another live
        lease are skipped. Deferred rows go first: they have waited longest.
        """
        stamp = _iso(now)
        claimed: list[tuple[int, int, str, str, str, int]] = []
        with self.transaction() as db:
            for due in (
                "status = 'deferred' AND next_attempt_at <= :now",
                "status = 'pending'",
            ):
                if len(claimed) >= limit:
                    break
                claimed += db.execute(
                    f"""UPDATE outbox SET lease_owner = :owner, lease_until = :until
                        WHERE id IN (
                            SELECT id FROM outbox
                            WHERE {due} AND (lease_until IS NULL OR lease_until <= :now)
                            ORDER BY id LIMIT :limit)
                        RETURNING {self._ROW}""",
                    {
                        "owner": owner,
                        "until": _iso(until),
                        "now": stamp,
                        "limit": limit - len(claimed),
                    },
                ).fetchall()
        return [OutboxRow(*row) for row in sorted(claimed)]

    def extend_leases(self, owner: str, until: datetime) -> None:
        """Push back the expiry of every row ``owner`` still holds (a long, slow run)."""
        self._db.execute(
            "UPDATE outbox SET lease_until = ? WHERE lease_owner = ?", (_iso(until), owner)
        )

    def release_leases(self, owner: str) -> int:
        """Hand back every row ``owner`` holds unsent, so others may take it now."""
        cursor = self._db.execute(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
            (owner,),
        )
        return cursor.rowcount

    def lease_holders(self) -> list[str]:
        """The owners of rows currently leased (their leases may have run out)."""
        rows = self._db.execute(
            "SELECT DISTINCT lease_owner FROM outbox WHERE lease_owner IS NOT NULL"
        )
        return [owner for (owner,) in rows]

    def mark_sent(self, row_id: int, message_id: str, reply: str, now: datetime) -> None:
        """The server accepted the message: committed before the connection sends again."""
        self._db.execute(
            """UPDATE outbox SET status = 'sent', attempts = attempts + 1, message_id = ?,
                   last_reply = ?, sent_at = ?, next_attempt_at = NULL,
                   lease_owner = NULL, lease_until = NULL
               WHERE id = ?""",
            (message_id, reply, _iso(now), row_id),
        )

    def mark_deferred(self, row_id: int, reply: str, next_attempt: datetime) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'deferred', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = ?, lease_owner = NULL, lease_until = NULL
               WHERE id = ?""",
            (reply, _iso(next_attempt), row_id),
        )

    def mark_failed(self, row_id: int, reply: str) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL
               WHERE id = ?""",
            (reply, row_id),
        )

    def mark_bounced(self, row_id: int, email: str, reply: str, now: datetime) -> None:
        """A hard bounce: fail the row and suppress the address, in one transaction."""
        with self.transaction() as db:
            db.execute(
                """UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_reply = ?,
                       next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL
                   WHERE id = ?""",
                (reply, row_id),
            )
            db.execute(
                "INSERT OR IGNORE INTO suppressions (email, reason, created_at) VALUES (?, ?, ?)",
                (email, f"bounced: {reply}", _iso(now)),
            )

    def cancel_suppressed(self, now: datetime) -> int:
        """Fail unsent rows whose address was suppressed since (unsubscribed, bounced)."""
        cursor = self._db.execute(
            """UPDATE outbox SET status = 'failed', next_attempt_at = NULL,
                   last_reply = 'not sent: the address is suppressed'
               WHERE status IN ('pending', 'deferred')
                 AND (lease_until IS NULL OR lease_until <= ?)
                 AND email IN (SELECT email FROM suppressions)""",
            (_iso(now),),
        )
        return cursor.rowcount

    def retry_failed(self, digest_id: int | None = None) -> int:
        """Make failed rows pending again with a fresh attempt budget; suppressed stay failed."""
        where, args = ("AND digest_id = ?", (digest_id,)) if digest_id is not None else ("", ())
        cursor = self._db.execute(
            f"""UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = NULL
                WHERE status = 'failed' {where}
                  AND email NOT IN (SELECT email FROM suppressions)""",
            args,
        )
        return cursor.rowcount

    def due_count(self, now: datetime) -> int:
        """How many rows are due: pending, or deferred with their next try come."""
        (count,) = self._db.execute(
            """SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending')
                    + (SELECT COUNT(*) FROM outbox
                       WHERE status = 'deferred' AND next_attempt_at <= ?)""",
            (_iso(now),),
        ).fetchone()
        return int(count)

    def sent_since(self, since: datetime) -> list[datetime]:
        """When each message accepted at or after ``since`` went out (for hourly caps)."""
        rows = self._db.execute(
            "SELECT sent_at FROM outbox WHERE status = 'sent' AND sent_at >= ? ORDER BY sent_at",
            (_iso(since),),
        )
        return [_parse(stamp) for (stamp,) in rows]

    def delivery_counts(self, digest_id: int | None = None) -> DeliveryCounts:
        where, args = ("WHERE digest_id = ?", (digest_id,)) if digest_id is not None else ("", ())
        counts = dict(
            self._db.execute(f"SELECT status, COUNT(*) FROM outbox {where} GROUP BY status", args)
        )
        return DeliveryCounts(
            **{k: counts.get(k, 0) for k in ("pending", "deferred", "sent", "failed")}
        )

    def digest_deliveries(self) -> list[DigestDelivery]:
        """Every digest with its outbox counted by status, oldest first."""
        per_digest: dict[int, dict[str, int]] = {}
        for digest_id, status, count in self._db.execute(
            "SELECT digest_id, status, COUNT(*) FROM outbox GROUP BY digest_id, status"
        ):
            per_digest.setdefault(digest_id, {})[status] = count
        digests = self._db.execute("SELECT id, subject, created_at FROM digests ORDER BY id")
        return [
            DigestDelivery(
                digest_id,
                subject,
                _parse(created),
                DeliveryCounts(**per_digest.get(digest_id, {})),
            )
            for digest_id, subject, created in digests
        ]

    # --- suppressions ---------------------------------------------------------------------

    def suppress(self, email: str, reason: str, now: datetime) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO suppressions (email, reason, created_at) VALUES (?, ?, ?)",
            (email, reason, _iso(now)),
        )

    def suppressed(self) -> set[str]:
        return {email.lower() for (email,) in self._db.execute("SELECT email FROM suppressions")}
