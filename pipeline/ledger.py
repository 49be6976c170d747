"""The SQLite ledger: article versions, digests and the outbox. The only module that speaks SQL.

The ledger is what makes publishing safe to repeat: an article's identity and dates live
here, so feeds stay stable; each digest's recipients are written as outbox rows in the
same transaction as the article versions they announce, so a crash leaves either nothing
or a complete list of pending messages.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.feed_history import FeedDate

__all__ = [
    "SUBSCRIBER_STATUSES",
    "AudienceRecord",
    "CachedArticle",
    "DeliveryCounts",
    "DigestCopy",
    "DigestDelivery",
    "KnownArticle",
    "Ledger",
    "MergeCounts",
    "OutboxRow",
    "OutputStamp",
    "PublishRecord",
    "SignupRecord",
    "SubscriberRecord",
    "SubscriberRow",
    "merge_action",
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
    # 2: subscribers move into the ledger; suppressions become their status (bounced)
    """
    CREATE TABLE subscribers (
        id            INTEGER PRIMARY KEY,
        email_key     TEXT NOT NULL UNIQUE,
        email         TEXT NOT NULL,
        name          TEXT NOT NULL DEFAULT '',
        topics        TEXT NOT NULL DEFAULT '',
        status        TEXT NOT NULL
                      CHECK (status IN ('pending', 'active', 'unsubscribed', 'bounced')),
        source        TEXT NOT NULL,
        ref           TEXT UNIQUE,
        reason        TEXT NOT NULL DEFAULT '',
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        confirmed_at  TEXT
    );
    CREATE INDEX subscribers_by_status ON subscribers (status);
    CREATE TABLE signups (
        id            TEXT PRIMARY KEY,
        email_key     TEXT NOT NULL,
        email         TEXT NOT NULL,
        name          TEXT NOT NULL,
        topics        TEXT NOT NULL,
        requested_at  TEXT NOT NULL,
        confirmed_at  TEXT
    );
    CREATE INDEX signups_by_address ON signups (email_key, requested_at);
    CREATE TABLE ledger_meta (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    INSERT INTO subscribers (email_key, email, status, source, reason, created_at, updated_at)
        SELECT lower(email), email, 'bounced', 'suppression', reason, created_at, created_at
        FROM suppressions;
    DROP TABLE suppressions
    """,
    # 3: caches that let a publish skip unchanged work (feeds and site)
    """
    CREATE TABLE article_cache (
        slug         TEXT PRIMARY KEY,
        source_hash  TEXT NOT NULL,
        article      TEXT NOT NULL,
        html         TEXT NOT NULL
    );
    CREATE TABLE site_outputs (
        path       TEXT PRIMARY KEY,
        input_key  TEXT NOT NULL,
        size       INTEGER NOT NULL,
        mtime_ns   INTEGER NOT NULL
    );
    """,
    # 4: claim-before-send finds due rows in id order. One index on the outbox only: each
    # message's commit rewrites every index its row is in, and that is the cost per send.
    """
    DROP INDEX outbox_due;
    CREATE INDEX outbox_by_status ON outbox (status, id);
    """,
    # 5: the article cache remembers each file's size, times and inode, to skip reading it,
    # and keeps the Markdown body out of the JSON (decoding it was most of a no-op publish)
    """
    ALTER TABLE article_cache ADD COLUMN file_stat TEXT NOT NULL DEFAULT '';
    ALTER TABLE article_cache ADD COLUMN markdown TEXT NOT NULL DEFAULT ''
    """,
    # 6: feeds that tell the truth over time: ids of replaced rows are never minted again;
    # each feed's date never goes back; WebSub pings still owed to the hub
    """
    CREATE TABLE retired_ids (
        entry_id    TEXT PRIMARY KEY,
        slug        TEXT NOT NULL,
        retired_at  TEXT NOT NULL
    );
    CREATE TABLE feed_dates (
        scope       TEXT PRIMARY KEY,
        body_hash   TEXT NOT NULL,
        updated     TEXT NOT NULL
    );
    CREATE TABLE websub_pending (
        topic_url   TEXT PRIMARY KEY,
        attempts    INTEGER NOT NULL,
        last_error  TEXT NOT NULL,
        since       TEXT NOT NULL
    );
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


@dataclass(frozen=True, slots=True)
class CachedArticle:
    """An article as parsed and rendered last time, valid while ``source_hash`` matches."""

    slug: str
    source_hash: str
    article: str  # JSON of the parsed fields but the body
    html: str
    file_stat: str = ""  # the file's size, times and inode when read; "" to always read it
    markdown: str = ""  # the body as written


@dataclass(frozen=True, slots=True)
class OutputStamp:
    """A generated file as last written: what it was made from, its size and mtime."""

    path: str
    input_key: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class DigestCopy:
    """The public web copy of one digest, as stored when it was sent."""

    id: int
    created_at: datetime
    subject: str
    web_html: str


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

    # --- read-only access (status, check, dry runs) ---------------------------------------

    @classmethod
    def read_only(cls, path: Path) -> Ledger:
        """The ledger at ``path`` for reading only: nothing is created or changed on disk.

        A missing ledger reads as an empty one, held in memory. An existing one is opened
        with writes refused (``query_only``), which still lets SQLite tidy its WAL files on
        close; if its schema is older than this code, a copy in memory is migrated instead.
        """
        ledger = cls.__new__(cls)
        ledger.path = path
        if not path.exists():
            ledger._db = sqlite3.connect(":memory:", isolation_level=None)
            ledger._migrate()
            return ledger
        uri = path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=rw", uri=True, isolation_level=None, timeout=30.0)
        except sqlite3.OperationalError:  # a file we may not write: read it as such
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version < len(_MIGRATIONS):
            memory = sqlite3.connect(":memory:", isolation_level=None)
            db.backup(memory)
            db.close()
            ledger._db = memory
            ledger._migrate()
            return ledger
        db.execute("PRAGMA query_only = ON")
        ledger._db = db
        return ledger

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

    def retired_ids(self) -> frozenset[str]:
        """Ids of ledger rows that another article replaced: never to be minted again."""
        return frozenset(
            entry_id for (entry_id,) in self._db.execute("SELECT entry_id FROM retired_ids")
        )

    def feed_dates(self) -> dict[str, FeedDate]:
        """Per feed scope ("" or "topics/<t>/", archive pages too): hash and date last given."""
        rows = self._db.execute("SELECT scope, body_hash, updated FROM feed_dates")
        return {scope: FeedDate(scope, body_hash, _parse(upd)) for scope, body_hash, upd in rows}

    def record_feed_dates(self, dates: Iterable[FeedDate]) -> None:
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO feed_dates (scope, body_hash, updated) VALUES (?, ?, ?)
                   ON CONFLICT (scope) DO UPDATE SET
                       body_hash = excluded.body_hash, updated = excluded.updated""",
                [(d.scope, d.body_hash, _iso(d.updated)) for d in dates],
            )

    def websub_pending(self) -> list[str]:
        """Feed URLs whose WebSub ping the hub has not accepted yet, oldest first."""
        rows = self._db.execute("SELECT topic_url FROM websub_pending ORDER BY since, topic_url")
        return [url for (url,) in rows]

    def record_websub(
        self, notified: Iterable[str], pending: dict[str, str], now: datetime
    ) -> None:
        """Forget the pings the hub accepted; keep (or add) those it did not, with the error."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM websub_pending WHERE topic_url = ?", [(url,) for url in notified]
            )
            db.executemany(
                """INSERT INTO websub_pending (topic_url, attempts, last_error, since)
                   VALUES (?, 1, ?, ?)
                   ON CONFLICT (topic_url) DO UPDATE SET
                       attempts = websub_pending.attempts + 1, last_error = excluded.last_error""",
                [(url, error, _iso(now)) for url, error in pending.items()],
            )

    # --- one publish ----------------------------------------------------------------------

    def record_publish(self, record: PublishRecord, now: datetime) -> int | None:
        """Write article versions, the digest and its outbox rows atomically.

        Returns the digest's number, or None when there was nothing to send.
        """
        stamp = _iso(now)
        with self.transaction() as db:
            for article in record.articles:
                # A row this article replaces (its slug under another id: a withdrawn article)
                # is retired, so that its id is never minted for anyone else.
                db.execute(
                    """INSERT INTO retired_ids (entry_id, slug, retired_at)
                       SELECT entry_id, slug, ? FROM articles WHERE slug = ? AND entry_id <> ?
                       ON CONFLICT (entry_id) DO NOTHING""",
                    (stamp, article.slug, article.entry_id),
                )
                db.execute(
                    "DELETE FROM articles WHERE slug = ? AND entry_id <> ?",
                    (article.slug, article.entry_id),
                )
                # The slug follows the entry id: a renamed file keeps its row (id, dates).
                db.execute(
                    "UPDATE articles SET slug = ? WHERE entry_id = ? AND slug <> ?",
                    (article.slug, article.entry_id, article.slug),
                )
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
        self, row_id: int, message_id: str, reply: str, now: datetime, *, wait: bool = True
    ) -> bool:
        """The server accepted the message: committed before the connection sends again.

        With ``wait=False``, when another process holds the write lock this returns False at
        once, having written nothing, instead of sleeping (a millisecond or more) for it:
        a drain then lets its other connections work and tries again.
        """
        if not wait:
            self._db.execute("PRAGMA busy_timeout = 0")
        try:
            self._db.execute(
                """UPDATE outbox SET status = 'sent', attempts = attempts + 1, message_id = ?,
                       last_reply = ?, sent_at = ?, next_attempt_at = NULL,
                       lease_owner = NULL, lease_until = NULL
                   WHERE id = ?""",
                (message_id, reply, _iso(now), row_id),
            )
        except sqlite3.OperationalError as exc:
            if wait or exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            if not wait:
                self._db.execute("PRAGMA busy_timeout = 30000")  # as connected: 30 s
        return True

    def mark_deferred(self, row_id: int, reply: str, next_attempt: datetime) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'deferred', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = ?, lease_owner = NULL, lease_until = NULL
               WHERE id = ? AND status IN ('pending', 'deferred')""",
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
            self.suppress(email, f"bounced: {reply}", now)

    def cancel_suppressed(self, now: datetime) -> int:
        """Fail unsent rows whose address was suppressed since (unsubscribed, bounced)."""
        cursor = self._db.execute(
            """UPDATE outbox SET status = 'failed', next_attempt_at = NULL,
                   last_reply = 'not sent: the address is suppressed'
               WHERE status IN ('pending', 'deferred')
                 AND (lease_until IS NULL OR lease_until <= ?)
                 AND lower(email) IN (SELECT email_key FROM subscribers
                                      WHERE status IN ('unsubscribed', 'bounced'))""",
            (_iso(now),),
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

    # --- checkpoints off the sending path --------------------------------------------------
    # SQLite folds the WAL back into the database inside whichever commit crosses 1,000 WAL
    # pages, and syncs the database file there: during delivery that stalls every connection
    # of the process for tens of milliseconds, a few times a second. A thread does it instead.

    @contextmanager
    def checkpoints_in_background(
        self, every: float = 0.25, restart_at: int = 8192
    ) -> Iterator[None]:
        """While the block runs, checkpoint the WAL from a thread instead of in commits.

        Durability is unchanged: every commit is in the WAL exactly as before; only the
        copying of committed pages into the database file moves out of the commits. The WAL
        starts over once it holds ``restart_at`` pages (32 MB at SQLite's default page size).
        """
        stop = threading.Event()

        def checkpoint() -> None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            try:
                while not stop.wait(every):
                    with suppress(sqlite3.OperationalError):
                        # PASSIVE copies what it can without waiting for anyone ...
                        (_, frames, _) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if frames >= restart_at:
                            # ... but under a steady stream of commits it never finishes, so
                            # the WAL would grow without end: now and then hold the writers
                            # back for the last few frames, and the WAL starts over.
                            db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                db.close()

        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        thread = threading.Thread(target=checkpoint, name="ledger-checkpoints", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._db.execute("PRAGMA wal_autocheckpoint = 1000")

    # --- subscribers ----------------------------------------------------------------------
    # pipeline/subscribers.py validates and decides; these statements store, each change in
    # one transaction. 'unsubscribed' and 'bounced' are suppressions: never mailed again, and
    # only a confirmed sign-up (confirm_signup) makes such an address active again.

    _SUBSCRIBER_COLUMNS = (
        "id, email_key, email, name, topics, status, source, ref, reason, "
        "created_at, updated_at, confirmed_at"
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

    def merge_subscribers(self, rows: Iterable[SubscriberRow], now: datetime) -> MergeCounts:
        """Import list rows: unknown addresses are added with the row's status; a known one
        keeps its name and topics (the subscriber's own choices win), a pending one becomes
        active when the row is active, and a row marked unsubscribed or bounced suppresses
        it. Nothing here reactivates an unsubscribed or bounced address."""
        stamp = _iso(now)
        added = activated = suppressed = unchanged = 0
        with self.transaction() as db:
            for row in rows:
                found = db.execute(
                    "SELECT status FROM subscribers WHERE email_key = ?", (row.email_key,)
                ).fetchone()
                action = merge_action(None if found is None else found[0], row.status)
                if action == "add":
                    db.execute(
                        """INSERT INTO subscribers (email_key, email, name, topics, status, source,
                               ref, reason, created_at, updated_at, confirmed_at)
                           VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?)""",
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
                        ),
                    )
                    added += 1
                elif action == "activate":
                    db.execute(
                        """UPDATE subscribers SET status = 'active', confirmed_at = ?,
                               updated_at = ? WHERE email_key = ?""",
                        (stamp, stamp, row.email_key),
                    )
                    activated += 1
                elif action == "suppress":
                    self._suppress_key(db, row.email_key, row.status, row.source, stamp)
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
            (name, _topics_text(topics), _iso(now), activate, activate, _iso(now), email_key),
        )
        return cursor.rowcount == 1

    def unsubscribe(self, email_key: str, reason: str, now: datetime) -> bool:
        """Suppress the address at once; False if it was not subscribed (unknown or already
        suppressed). Pending outbox rows for it are cancelled, so nothing more goes out."""
        with self.transaction() as db:
            found = db.execute(
                "SELECT status FROM subscribers WHERE email_key = ?", (email_key,)
            ).fetchone()
            if found is None or found[0] in _SUPPRESSED:
                return False
            self._suppress_key(db, email_key, "unsubscribed", reason, _iso(now))
        return True

    def suppress(self, email: str, reason: str, now: datetime) -> None:
        """A hard bounce: the address is never mailed again (an unknown one is recorded too,
        so no later list import adds it). An unsubscribed address stays unsubscribed.

        No transaction of its own: delivery may call it inside one.
        """
        key, stamp = email.strip().lower(), _iso(now)
        self._db.execute(
            """INSERT INTO subscribers (email_key, email, status, source, reason,
                   created_at, updated_at)
               VALUES (?, ?, 'bounced', 'bounce', ?, ?, ?)
               ON CONFLICT (email_key) DO UPDATE SET
                   status = 'bounced', reason = excluded.reason, updated_at = excluded.updated_at
               WHERE subscribers.status IN ('pending', 'active')""",
            (key, email.strip(), reason, stamp, stamp),
        )
        self._cancel_queued(self._db, key, "bounced")

    def suppressed(self) -> set[str]:
        """The lower-cased addresses never to be mailed (unsubscribed or bounced)."""
        rows = self._db.execute(f"SELECT email_key FROM subscribers WHERE status IN {_SUPPRESSED}")
        return {key for (key,) in rows}

    def _suppress_key(
        self, db: sqlite3.Connection, email_key: str, status: str, reason: str, stamp: str
    ) -> None:
        db.execute(
            "UPDATE subscribers SET status = ?, reason = ?, updated_at = ? WHERE email_key = ?",
            (status, reason, stamp, email_key),
        )
        self._cancel_queued(db, email_key, status)

    def _cancel_queued(self, db: sqlite3.Connection, email_key: str, status: str) -> None:
        db.execute(
            """UPDATE outbox SET status = 'failed', last_reply = ?, next_attempt_at = NULL
               WHERE email = ? AND status IN ('pending', 'deferred')""",
            (f"not sent: {status} before delivery", email_key),
        )

    # Sign-ups wait in their own table until confirmed, so an unconfirmed request never
    # changes an existing subscriber's name, topics or status.

    def add_signup(self, signup: SignupRecord, ref: str) -> None:
        """Record a web sign-up; an unknown address also becomes a pending subscriber."""
        stamp = _iso(signup.requested_at)
        with self.transaction() as db:
            db.execute(
                """INSERT INTO signups (id, email_key, email, name, topics, requested_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (
                    signup.id,
                    signup.email_key,
                    signup.email,
                    signup.name,
                    _topics_text(signup.topics),
                    stamp,
                ),
            )
            db.execute(
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
        return None if row[0] is None else _parse(row[0])

    def signup(self, signup_id: str) -> SignupRecord | None:
        row = self._db.execute(
            """SELECT id, email_key, email, name, topics, requested_at, confirmed_at
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
            _parse(row[5]),
            None if row[6] is None else _parse(row[6]),
        )

    def confirm_signup(self, signup_id: str, ref: str, now: datetime) -> SubscriberRecord | None:
        """Use a sign-up once: the address becomes active with the name and topics asked for
        (whatever its status was). None if the sign-up is unknown or already used."""
        stamp = _iso(now)
        with self.transaction() as db:
            row = db.execute(
                "SELECT email_key, email, name, topics FROM signups "
                "WHERE id = ? AND confirmed_at IS NULL",
                (signup_id,),
            ).fetchone()
            if row is None:
                return None
            email_key, email, name, topics = row
            db.execute("UPDATE signups SET confirmed_at = ? WHERE id = ?", (stamp, signup_id))
            db.execute(
                """INSERT INTO subscribers (email_key, email, name, topics, status, source, ref,
                       created_at, updated_at, confirmed_at)
                   VALUES (?, ?, ?, ?, 'active', 'web', ?, ?, ?, ?)
                   ON CONFLICT (email_key) DO UPDATE SET
                       name = excluded.name, topics = excluded.topics, status = 'active',
                       reason = '', ref = coalesce(subscribers.ref, excluded.ref),
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
        with self.transaction() as db:
            found = db.execute("SELECT value FROM ledger_meta WHERE name = 'ref_key'").fetchone()
            where = "" if found is None or found[0] != fingerprint else "WHERE ref IS NULL"
            keys = [key for (key,) in db.execute(f"SELECT email_key FROM subscribers {where}")]
            db.executemany(
                "UPDATE subscribers SET ref = ? WHERE email_key = ?",
                [(make_ref(key), key) for key in keys],
            )
            db.execute(
                """INSERT INTO ledger_meta (name, value) VALUES ('ref_key', ?)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value""",
                (fingerprint,),
            )
        return len(keys)

    # --- caches: parsed articles and site outputs; digest web copies ----------------------

    def cached_articles(self) -> dict[str, CachedArticle]:
        rows = self._db.execute(
            "SELECT slug, source_hash, article, html, file_stat, markdown FROM article_cache"
        )
        return {row[0]: CachedArticle(*row) for row in rows}

    def store_cached_articles(
        self,
        fresh: Iterable[CachedArticle],
        keep: Iterable[str],
        *,
        restamped: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Upsert ``fresh``, set the ``(slug, file_stat)`` pairs of ``restamped`` and drop
        the rows of slugs not in ``keep``."""
        kept = set(keep)
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO article_cache (slug, source_hash, article, html, file_stat, markdown)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (slug) DO UPDATE SET source_hash = excluded.source_hash,
                       article = excluded.article, html = excluded.html,
                       file_stat = excluded.file_stat, markdown = excluded.markdown""",
                (
                    (c.slug, c.source_hash, c.article, c.html, c.file_stat, c.markdown)
                    for c in fresh
                ),
            )
            db.executemany(
                "UPDATE article_cache SET file_stat = ? WHERE slug = ?",
                ((stat, slug) for slug, stat in restamped),
            )
            gone = [(s,) for (s,) in db.execute("SELECT slug FROM article_cache") if s not in kept]
            db.executemany("DELETE FROM article_cache WHERE slug = ?", gone)

    def site_outputs(self) -> dict[str, OutputStamp]:
        rows = self._db.execute("SELECT path, input_key, size, mtime_ns FROM site_outputs")
        return {row[0]: OutputStamp(*row) for row in rows}

    def record_site_outputs(self, stamps: Iterable[OutputStamp], removed: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO site_outputs (path, input_key, size, mtime_ns) VALUES (?, ?, ?, ?)
                   ON CONFLICT (path) DO UPDATE SET input_key = excluded.input_key,
                       size = excluded.size, mtime_ns = excluded.mtime_ns""",
                ((s.path, s.input_key, s.size, s.mtime_ns) for s in stamps),
            )
            db.executemany("DELETE FROM site_outputs WHERE path = ?", ((p,) for p in removed))

    def digest_copies(self) -> list[DigestCopy]:
        """Every digest's public web copy, oldest first."""
        rows = self._db.execute(
            "SELECT id, created_at, subject, web_html FROM digests WHERE web_html <> '' ORDER BY id"
        )
        return [DigestCopy(i, _parse(at), subject, html) for i, at, subject, html in rows]


# --- subscriber values ---------------------------------------------------------------------

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced")
_SUPPRESSED = "('unsubscribed', 'bounced')"


@dataclass(frozen=True, slots=True)
class SubscriberRecord:
    id: int
    email_key: str  # the address lower-cased: its identity
    email: str  # the first-seen spelling, for sending
    name: str
    topics: frozenset[str]  # empty: every topic
    status: str  # one of SUBSCRIBER_STATUSES
    source: str  # where it came from: a list file, "web", "cli", "bounce"
    ref: str | None  # the opaque reference signed into its links
    reason: str  # why it was suppressed, if it was
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None

    @property
    def suppressed(self) -> bool:
        return self.status in ("unsubscribed", "bounced")


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    """One subscriber to merge in from a list."""

    email_key: str
    email: str
    name: str
    topics: frozenset[str]
    status: str
    source: str
    ref: str


@dataclass(frozen=True, slots=True)
class SignupRecord:
    id: str  # random, signed into the confirmation link
    email_key: str
    email: str
    name: str
    topics: frozenset[str]
    requested_at: datetime
    confirmed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MergeCounts:
    added: int = 0
    activated: int = 0
    suppressed: int = 0
    unchanged: int = 0


def merge_action(current: str | None, incoming: str) -> str:
    """What importing a list row with status ``incoming`` does to an address whose status is
    ``current`` (None: unknown): "add", "activate", "suppress" or "keep".

    The one statement of the import rules; ``merge_subscribers`` applies them and a publish
    plan previews them. No row ever makes an unsubscribed or bounced address active.
    """
    if current is None:
        return "add"
    if current == "pending" and incoming == "active":
        return "activate"
    if current in ("pending", "active") and incoming in ("unsubscribed", "bounced"):
        return "suppress"
    return "keep"


def _topics_text(topics: frozenset[str]) -> str:
    return ";".join(sorted(topics))


def _topics_set(text: str) -> frozenset[str]:
    return frozenset(t for t in text.split(";") if t)


def _subscriber_record(row: tuple[object, ...]) -> SubscriberRecord:
    (id_, key, email, name, topics, status, source, ref, reason, created, updated, confirmed) = row
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
        created_at=_parse(str(created)),
        updated_at=_parse(str(updated)),
        confirmed_at=None if confirmed is None else _parse(str(confirmed)),
    )
