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
    "CachedArticle",
    "DeliveryCounts",
    "DigestCopy",
    "KnownArticle",
    "Ledger",
    "OutboxRow",
    "OutputStamp",
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
    # 2: caches that let a publish skip unchanged work (feeds and site)
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
    article: str  # JSON of the parsed fields
    html: str


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

    def due_rows(self, now: datetime, *, after_id: int = 0, limit: int = 500) -> list[OutboxRow]:
        """Pending rows and deferred rows whose next try has come, in id order, one batch."""
        rows = self._db.execute(
            """SELECT id, digest_id, audience_key, email, name, attempts FROM outbox
               WHERE id > ? AND (status = 'pending' OR (status = 'deferred' AND next_attempt_at <= ?))
               ORDER BY id LIMIT ?""",
            (after_id, _iso(now), limit),
        ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def mark_sent(self, row_id: int, message_id: str, reply: str, now: datetime) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'sent', attempts = attempts + 1, message_id = ?,
                   last_reply = ?, sent_at = ?, next_attempt_at = NULL WHERE id = ?""",
            (message_id, reply, _iso(now), row_id),
        )

    def mark_deferred(self, row_id: int, reply: str, next_attempt: datetime) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'deferred', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = ? WHERE id = ?""",
            (reply, _iso(next_attempt), row_id),
        )

    def mark_failed(self, row_id: int, reply: str) -> None:
        self._db.execute(
            """UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_reply = ?,
                   next_attempt_at = NULL WHERE id = ?""",
            (reply, row_id),
        )

    def delivery_counts(self, digest_id: int | None = None) -> DeliveryCounts:
        where, args = ("WHERE digest_id = ?", (digest_id,)) if digest_id is not None else ("", ())
        counts = dict(
            self._db.execute(f"SELECT status, COUNT(*) FROM outbox {where} GROUP BY status", args)
        )
        return DeliveryCounts(
            **{k: counts.get(k, 0) for k in ("pending", "deferred", "sent", "failed")}
        )

    # --- suppressions ---------------------------------------------------------------------

    def suppress(self, email: str, reason: str, now: datetime) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO suppressions (email, reason, created_at) VALUES (?, ?, ?)",
            (email, reason, _iso(now)),
        )

    def suppressed(self) -> set[str]:
        return {email.lower() for (email,) in self._db.execute("SELECT email FROM suppressions")}

    # --- caches: parsed articles and site outputs; digest web copies ----------------------

    def cached_articles(self) -> dict[str, CachedArticle]:
        rows = self._db.execute("SELECT slug, source_hash, article, html FROM article_cache")
        return {row[0]: CachedArticle(*row) for row in rows}

    def store_cached_articles(self, fresh: Iterable[CachedArticle], keep: Iterable[str]) -> None:
        """Upsert ``fresh`` and drop the rows of slugs not in ``keep``."""
        kept = set(keep)
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO article_cache (slug, source_hash, article, html) VALUES (?, ?, ?, ?)
                   ON CONFLICT (slug) DO UPDATE SET source_hash = excluded.source_hash,
                       article = excluded.article, html = excluded.html""",
                ((c.slug, c.source_hash, c.article, c.html) for c in fresh),
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
