"""Articles as published (identity and dates) and the parsed-article cache.

An article's entry id and ``published`` date live here, so feeds stay stable across
publishes; the cache lets a publish skip parsing and rendering files that did not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from pipeline.store.database import Database
from pipeline.store.records import CachedArticle, KnownArticle, iso, parse_instant

if TYPE_CHECKING:
    from pipeline.store.cadence import ArticleVersion

__all__ = ["ArticleStore", "insert_versions"]


def insert_versions(
    db: Database, versions: Iterable[ArticleVersion], withdrawn: Iterable[str], stamp: str
) -> None:
    """Log a publish's versions (and its withdrawn slugs) at ``stamp``, or just after the
    latest window already recorded. Runs inside the caller's transaction; the first statement
    writes ``cadence_closed`` so that on PostgreSQL it also takes that row's lock."""
    db.execute(
        """INSERT INTO ledger_meta (name, value) VALUES ('cadence_closed', '')
           ON CONFLICT (name) DO UPDATE SET value = ledger_meta.value"""
    )
    (closed,) = db.execute("SELECT value FROM ledger_meta WHERE name = 'cadence_closed'").fetchone()
    if closed and closed >= stamp:
        stamp = iso(parse_instant(closed) + timedelta(seconds=1))
    db.executemany(
        "INSERT INTO article_versions (entry_id, version_at, kind, card) VALUES (?, ?, ?, ?)",
        [(v.entry_id, stamp, v.kind, v.card) for v in versions],
    )
    db.executemany(
        """INSERT INTO article_versions (entry_id, version_at, kind)
           SELECT entry_id, ?, 'withdrawn' FROM articles WHERE slug = ?""",
        [(stamp, slug) for slug in withdrawn],
    )


class ArticleStore:
    """Published article versions and the article cache."""

    _db: Database

    def known_articles(self) -> dict[str, KnownArticle]:
        rows = self._db.execute(
            "SELECT slug, entry_id, content_hash, published, updated, status FROM articles"
        )
        return {
            slug: KnownArticle(
                slug,
                entry_id,
                content_hash,
                parse_instant(pub),
                parse_instant(upd),
                status == "live",
            )
            for slug, entry_id, content_hash, pub, upd, status in rows
        }

    def retired_ids(self) -> frozenset[str]:
        """Ids of article rows another article replaced: never to be minted again."""
        rows = self._db.execute("SELECT entry_id FROM retired_ids")
        return frozenset(entry_id for (entry_id,) in rows)

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
        with self._db.transaction():
            self._db.executemany(
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
            self._db.executemany(
                "UPDATE article_cache SET file_stat = ? WHERE slug = ?",
                ((stat, slug) for slug, stat in restamped),
            )
            gone = [
                (s,) for (s,) in self._db.execute("SELECT slug FROM article_cache") if s not in kept
            ]
            self._db.executemany("DELETE FROM article_cache WHERE slug = ?", gone)
