"""RSS 2.0 and Atom 1.0 feeds with feedgen, byte-for-byte deterministic.

feedgen stamps "now" into ``updated``/``lastBuildDate`` and prepends entries by default;
here every date comes from the ledger, entries are sorted by us and appended, so the same
articles always give the same bytes and caches hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin

from feedgen.feed import FeedGenerator

from pipeline.config import Settings
from pipeline.disclaimer import Disclaimer
from pipeline.models import Entry

__all__ = ["FeedFiles", "entry_content", "render_atom", "render_feeds", "render_rss"]

_EPOCH = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


@dataclass(frozen=True, slots=True)
class FeedFiles:
    """Feed documents keyed by their path under ``public/``."""

    files: dict[str, bytes]


def entry_content(entry: Entry, disclaimer: Disclaimer) -> str:
    """The article's sanitised HTML, always followed by the disclaimer."""
    return f'{entry.article.html}\n<hr>\n<div class="disclaimer">{disclaimer.html}</div>'


def _generator(
    entries: Sequence[Entry], settings: Settings, disclaimer: Disclaimer, feed_path: str
) -> FeedGenerator:
    site = settings.site
    base = settings.base_url
    newest = max((e.updated for e in entries), default=_EPOCH)

    fg = FeedGenerator()
    fg.id(base)
    fg.title(site.title)
    fg.subtitle(site.description)  # also the RSS <description>
    fg.language(site.language)
    fg.author({"name": site.author})
    fg.generator("therapy-news-pipeline")
    # The RSS channel <link> is the *last* link given: self first, the site last.
    fg.link(href=urljoin(base, feed_path), rel="self")
    fg.link(href=base, rel="alternate")
    fg.updated(newest)
    fg.lastBuildDate(newest)

    for entry in entries[: settings.feeds.max_entries]:
        article = entry.article
        fe = fg.add_entry(order="append")
        fe.id(entry.entry_id)
        fe.guid(entry.entry_id, permalink=False)
        fe.title(article.title)
        fe.link(href=entry.url, rel="alternate")
        fe.published(entry.published)
        fe.updated(entry.updated)
        fe.author({"name": site.author})
        for topic in article.topics:
            fe.category(term=topic, label=settings.topic_label(topic))
        fe.content(entry_content(entry, disclaimer), type="html")
        fe.description(article.summary, isSummary=True)
    return fg


def render_atom(
    entries: Sequence[Entry], settings: Settings, disclaimer: Disclaimer, path: str = "atom.xml"
) -> bytes:
    """Atom 1.0 of ``entries`` (already sorted newest first)."""
    return bytes(_generator(entries, settings, disclaimer, path).atom_str(pretty=True))


def render_rss(
    entries: Sequence[Entry], settings: Settings, disclaimer: Disclaimer, path: str = "rss.xml"
) -> bytes:
    """RSS 2.0 of ``entries`` (already sorted newest first)."""
    return bytes(_generator(entries, settings, disclaimer, path).rss_str(pretty=True))


def render_feeds(entries: Sequence[Entry], settings: Settings, disclaimer: Disclaimer) -> FeedFiles:
    """Every feed file of the site."""
    return FeedFiles(
        files={
            "rss.xml": render_rss(entries, settings, disclaimer),
            "atom.xml": render_atom(entries, settings, disclaimer),
        }
    )
