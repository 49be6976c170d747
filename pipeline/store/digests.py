"""Publishes and their digests: one transaction records a run's article versions, its
digest, each audience's rendered email and one outbox row per recipient, so a crash leaves
either nothing or a complete list of pending messages.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from pipeline.store.articles import insert_versions
from pipeline.store.database import Database
from pipeline.store.records import (
    TRANSACTIONAL_DIGEST,
    AudienceRecord,
    DeliveryCounts,
    DigestCopy,
    DigestDelivery,
    PublishRecord,
    iso,
    parse_instant,
)

__all__ = ["OUTBOX_CHANNEL", "DigestStore", "insert_digest"]

# Where a recorded digest is announced to waiting workers (LISTEN/NOTIFY on PostgreSQL).
OUTBOX_CHANNEL = "pipeline_outbox"


def insert_digest(
    db: Database,
    stamp: str,
    subject: str,
    web_html: str,
    audiences: Iterable[AudienceRecord],
    recipients: Iterable[tuple[str, str, str]],
    *,
    frequency: str = "immediately",
) -> int:
    """Insert a digest, its audiences' rendered emails and one outbox row per
    ``(audience_key, email, name)``, inside the caller's transaction; returns its number."""
    (digest_id,) = db.execute(
        """INSERT INTO digests (created_at, subject, web_html, frequency) VALUES (?, ?, ?, ?)
           RETURNING id""",
        (stamp, subject, web_html, frequency),
    ).fetchone()
    db.executemany(
        """INSERT INTO digest_audiences
               (digest_id, audience_key, subject, slot_nonce, html, text, web_html)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [
            (digest_id, a.key, a.subject, a.slot_nonce, a.html, a.text, a.web_html)
            for a in audiences
        ],
    )
    db.announce(OUTBOX_CHANNEL)  # idle workers wake when this commits
    # In chunks: the recipients may be read from this same connection (see
    # ``active_subscribers``), never while a statement is half done.
    rows = iter(recipients)
    while chunk := list(itertools.islice(rows, _OUTBOX_CHUNK)):
        db.executemany(
            """INSERT INTO outbox (digest_id, audience_key, email, name, created_at)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [(digest_id, key, email, name, stamp) for key, email, name in chunk],
        )
    return int(digest_id)


# Outbox rows written per statement while recording a digest.
_OUTBOX_CHUNK = 1000
# Addresses looked up per statement (well under every SQLite build's parameter limit).
_KEYS_PER_QUERY = 500


def _immediate_chunks(
    db: Database, recipients: Iterable[tuple[str, str, str]]
) -> Iterator[list[tuple[str, str, str]]]:
    """``recipients`` in chunks, less the active readers on a daily, weekly or monthly
    frequency as the ledger has them now; no chunk is empty."""
    rows = iter(recipients)
    while chunk := list(itertools.islice(rows, _OUTBOX_CHUNK)):
        keys = sorted({email.lower() for _, email, _ in chunk})
        periodic: set[str] = set()
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            part = keys[start : start + _KEYS_PER_QUERY]
            periodic.update(
                key
                for (key,) in db.execute(
                    f"""SELECT email_key FROM subscribers
                        WHERE status = 'active' AND frequency <> 'immediately'
                          AND email_key IN ({", ".join("?" * len(part))})""",
                    tuple(part),
                )
            )
        kept = [r for r in chunk if r[1].lower() not in periodic]
        if kept:
            yield kept


class DigestStore:
    """Runs, digests, audiences and their web copies."""

    _db: Database

    def record_publish(self, record: PublishRecord, now: datetime) -> int | None:
        """Write article versions, the digest and its outbox rows atomically.

        Returns the digest's number, or None when there was nothing to send.
        """
        stamp = iso(now)
        with self._db.transaction():
            for article in record.articles:
                # A row this article replaces (its slug under another id: a withdrawn article)
                # is retired, so that its id is never minted for anyone else.
                self._db.execute(
                    """INSERT INTO retired_ids (entry_id, slug, retired_at)
                       SELECT entry_id, slug, ? FROM articles WHERE slug = ? AND entry_id <> ?
                       ON CONFLICT (entry_id) DO NOTHING""",
                    (stamp, article.slug, article.entry_id),
                )
                self._db.execute(
                    "DELETE FROM articles WHERE slug = ? AND entry_id <> ?",
                    (article.slug, article.entry_id),
                )
                # The slug follows the entry id: a renamed file keeps its row (id, dates).
                self._db.execute(
                    "UPDATE articles SET slug = ? WHERE entry_id = ? AND slug <> ?",
                    (article.slug, article.entry_id, article.slug),
                )
                self._db.execute(
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
                        iso(article.published),
                        iso(article.updated),
                        stamp,
                        stamp,
                    ),
                )
            insert_versions(self._db, record.versions, record.withdrawn, stamp)
            self._db.executemany(
                "UPDATE articles SET status = 'withdrawn', changed_at = ? WHERE slug = ?",
                [(stamp, slug) for slug in record.withdrawn],
            )
            digest_id: int | None = None
            if record.digest_subject is not None and record.audiences:
                # Frequencies as of now (insert_versions holds the lock frequency changes
                # take); the recipients are streamed, so the first chunk says whether anyone
                # is left to send to.
                chunks = _immediate_chunks(self._db, record.recipients)
                first = next(chunks, [])
                if first:
                    digest_id = insert_digest(
                        self._db,
                        stamp,
                        record.digest_subject,
                        record.web_html,
                        record.audiences,
                        itertools.chain(first, itertools.chain.from_iterable(chunks)),
                    )
            self._db.execute(
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

    def wait_for_outbox(self, seconds: float, stop: Callable[[], bool]) -> bool:
        """Wait up to ``seconds`` for a new digest's announcement (``stop()`` ends it early);
        True if one came. On SQLite this only waits."""
        return self._db.wait_for(OUTBOX_CHANNEL, seconds, stop)

    def last_run(self) -> tuple[datetime, int | None] | None:
        row = self._db.execute(
            "SELECT finished_at, digest_id FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (parse_instant(row[0]), row[1])

    def audience(self, digest_id: int, key: str) -> AudienceRecord:
        row = self._db.execute(
            """SELECT audience_key, subject, slot_nonce, html, text FROM digest_audiences
               WHERE digest_id = ? AND audience_key = ?""",
            (digest_id, key),
        ).fetchone()
        if row is None:
            raise LookupError(f"digest {digest_id} has no audience {key!r}")
        return AudienceRecord(*row)

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
                parse_instant(created),
                DeliveryCounts(**per_digest.get(digest_id, {})),
            )
            for digest_id, subject, created in digests
            if digest_id != TRANSACTIONAL_DIGEST or digest_id in per_digest
        ]

    def latest_digest(self) -> int | None:
        """The newest digest that has audiences (what a test send falls back to)."""
        row = self._db.execute(
            "SELECT max(digest_id) FROM digest_audiences WHERE digest_id <> 0"
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def audiences(self, digest_id: int) -> list[AudienceRecord]:
        """Every audience of one digest, by key."""
        rows = self._db.execute(
            """SELECT audience_key, subject, slot_nonce, html, text FROM digest_audiences
               WHERE digest_id = ? ORDER BY audience_key""",
            (digest_id,),
        )
        return [AudienceRecord(*row) for row in rows]

    def digest_copies(self) -> list[DigestCopy]:
        """Every digest's public web copy with its audiences' web editions, oldest first."""
        editions: dict[int, list[tuple[str, str]]] = {}
        for digest_id, key, html in self._db.execute(
            """SELECT digest_id, audience_key, web_html FROM digest_audiences
               WHERE web_html <> '' ORDER BY digest_id, audience_key"""
        ):
            editions.setdefault(digest_id, []).append((key, html))
        rows = self._db.execute(
            "SELECT id, created_at, subject, web_html FROM digests WHERE web_html <> '' ORDER BY id"
        )
        return [
            DigestCopy(i, parse_instant(at), subject, html, tuple(editions.get(i, ())))
            for i, at, subject, html in rows
        ]
