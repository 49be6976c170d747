"""Articles as published (identity and dates) and the parsed-article cache.

An article's entry id and ``published`` date live here, so feeds stay stable across
publishes; the cache lets a publish skip parsing and rendering files that did not change.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.store.database import Database
from pipeline.store.records import CachedArticle, KnownArticle, parse_instant

__all__ = ["ArticleStore"]


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
