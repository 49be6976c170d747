"""Compare the articles on disk with the ledger: what is new, updated, withdrawn."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

from pipeline.articles import article_url
from pipeline.ledger import KnownArticle
from pipeline.models import Article, Changes, Entry

__all__ = ["detect_changes", "mint_entry_id"]


def mint_entry_id(base_url: str, article: Article) -> str:
    """A ``tag:`` URI (RFC 4151) fixed at first publication: it never changes afterwards.

    It uses the site's host and the first publication date, not the URL, so moving the site
    or its URL scheme later does not make readers see every entry again.
    """
    if article.explicit_id:
        return article.explicit_id
    host = urlsplit(base_url).hostname or "localhost"
    return f"tag:{host},{article.published:%Y-%m-%d}:articles/{article.slug}"


def detect_changes(
    articles: Iterable[Article], known: dict[str, KnownArticle], *, now: datetime, base_url: str
) -> Changes:
    """Classify each article against what the ledger last published.

    * new: a slug the ledger has never published (or had withdrawn);
    * updated: a live slug whose content hash changed; ``updated`` moves to the editor's
      ``updated`` date if given and later, else to ``now``; ``published`` and the id stay;
    * withdrawn: a live slug that is gone, became a draft or moved into the future;
    * scheduled: future-dated articles, published by a later run once their time comes.
    """
    new: list[Entry] = []
    updated: list[Entry] = []
    unchanged: list[Entry] = []
    scheduled: list[Article] = []
    seen: set[str] = set()

    for article in articles:
        if article.draft:
            continue
        if article.published > now:
            scheduled.append(article)
            continue
        seen.add(article.slug)
        url = article_url(base_url, article.slug)
        before = known.get(article.slug)
        if before is None or not before.live:
            entry_id = before.entry_id if before else mint_entry_id(base_url, article)
            last_change = max(article.published, article.updated or article.published)
            new.append(Entry(article, entry_id, url, article.published, last_change))
        elif before.content_hash == article.content_hash:
            unchanged.append(
                Entry(article, before.entry_id, url, article.published, before.updated)
            )
        else:
            moved = article.updated if article.updated and article.updated > before.updated else now
            updated.append(Entry(article, before.entry_id, url, article.published, moved))

    def newest_first(entries: list[Entry]) -> tuple[Entry, ...]:
        return tuple(sorted(entries, key=lambda e: (e.published, e.slug), reverse=True))

    withdrawn = sorted(slug for slug, k in known.items() if k.live and slug not in seen)
    return Changes(
        new=newest_first(new),
        updated=newest_first(updated),
        withdrawn=tuple(withdrawn),
        unchanged=tuple(unchanged),
        scheduled=tuple(scheduled),
    )
