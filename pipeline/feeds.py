"""RSS 2.0, Atom 1.0 and JSON Feed 1.1, for the whole site and for each topic, byte-stable.

feedgen stamps "now" into ``updated``/``lastBuildDate`` and prepends entries by default;
here every date comes from the ledger, entries are sorted by us and appended, and the
feed's own date is its newest entry's, so the same articles always give the same bytes
and caches and ETags hold. The RSS channel ``<link>`` is the last link given to feedgen:
the ``self`` link goes first and the site last. feedgen also drops the ``rel`` of Atom
entry links; ``render_atom`` restores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from feedgen.feed import FeedGenerator
from lxml import etree

from pipeline.config import Settings
from pipeline.disclaimer import Disclaimer
from pipeline.markdown import plain_footnotes
from pipeline.models import Entry

__all__ = [
    "FEED_FORMATS",
    "FeedFiles",
    "FeedScope",
    "entry_content",
    "feed_scopes",
    "render_atom",
    "render_feeds",
    "render_json_feed",
    "render_rss",
]

# File name, media type and a title suffix for autodiscovery links, per format.
FEED_FORMATS: tuple[tuple[str, str, str], ...] = (
    ("rss.xml", "application/rss+xml", "RSS"),
    ("atom.xml", "application/atom+xml", "Atom"),
    ("feed.json", "application/feed+json", "JSON Feed"),
)
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
# The date of an empty feed: fixed, so an empty feed is byte-stable too.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_ATOM = {"atom": "http://www.w3.org/2005/Atom"}


@dataclass(frozen=True, slots=True)
class FeedFiles:
    """Feed documents keyed by their path under ``public/``."""

    files: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class FeedScope:
    """One set of feeds: the whole site (``directory`` "") or one topic ("topics/<t>/")."""

    directory: str
    title: str
    description: str
    home_url: str  # the page the feed stands for: the site, or the topic's page
    entries: tuple[Entry, ...]  # newest first, already capped

    def url(self, settings: Settings, name: str) -> str:
        return urljoin(settings.base_url, self.directory + name)


def feed_scopes(entries: Sequence[Entry], settings: Settings) -> list[FeedScope]:
    """The site's feed and one per configured topic, each capped after sorting newest first."""
    ordered = sorted(entries, key=lambda e: (e.published, e.slug), reverse=True)
    cap = settings.feeds.max_entries
    site = settings.site
    scopes = [FeedScope("", site.title, site.description, settings.base_url, tuple(ordered[:cap]))]
    for topic in sorted(settings.topics):
        label = settings.topic_label(topic)
        directory = f"topics/{topic}/"
        chosen = tuple(e for e in ordered if topic in e.article.topics)[:cap]
        scopes.append(
            FeedScope(
                directory,
                f"{site.title}: {label}",
                f"{label}: articles from {site.title}.",
                urljoin(settings.base_url, directory),
                chosen,
            )
        )
    return scopes


def entry_content(entry: Entry, disclaimer: Disclaimer) -> str:
    """The article's sanitised HTML (footnotes as plain numbered notes), always followed by
    the disclaimer."""
    return f'{plain_footnotes(entry.article.html)}\n<hr>\n<div class="disclaimer">{disclaimer.html}</div>'


def _newest(scope: FeedScope) -> datetime:
    return max((e.updated for e in scope.entries), default=_EPOCH)


def _generator(scope: FeedScope, settings: Settings, disclaimer: Disclaimer, name: str) -> Any:
    site = settings.site
    newest = _newest(scope)
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)  # dc:creator: RSS <author> needs an email
    fg.id(scope.home_url)
    fg.title(scope.title)
    fg.subtitle(scope.description)  # also the RSS <description>
    fg.language(site.language)
    fg.author({"name": site.author})
    fg.generator("therapy-news-pipeline")
    # The RSS channel <link> is the *last* link given: self first, the site last.
    fg.link(href=scope.url(settings, name), rel="self")
    fg.link(href=scope.home_url, rel="alternate", type="text/html")
    fg.updated(newest)
    fg.lastBuildDate(newest)

    topics_url = urljoin(settings.base_url, "topics/")
    for entry in scope.entries:
        article = entry.article
        fe = fg.add_entry(order="append")
        fe.id(entry.entry_id)
        fe.guid(entry.entry_id, permalink=False)
        fe.title(article.title)
        fe.link(href=entry.url, rel="alternate", type="text/html")
        fe.published(entry.published)
        fe.updated(entry.updated)
        fe.author({"name": site.author})
        fe.dc.dc_creator(site.author)
        for topic in article.topics:
            fe.category(term=topic, label=settings.topic_label(topic), scheme=topics_url)
        fe.content(entry_content(entry, disclaimer), type="html")
        fe.description(article.summary, isSummary=True)
    return fg


def render_atom(scope: FeedScope, settings: Settings, disclaimer: Disclaimer) -> bytes:
    """Atom 1.0 of the scope's entries."""
    raw = _generator(scope, settings, disclaimer, "atom.xml").atom_str(pretty=True)
    # feedgen (1.0) drops an entry link's rel and type attributes: put them back, so every
    # entry says rel="alternate" explicitly, as the standards ask.
    feed = etree.fromstring(raw, parser=etree.XMLParser(remove_blank_text=True))
    for link in feed.iterfind("atom:entry/atom:link", _ATOM):
        link.set("rel", "alternate")
        link.set("type", "text/html")
    return bytes(etree.tostring(feed, pretty_print=True, encoding="UTF-8", xml_declaration=True))


def render_rss(scope: FeedScope, settings: Settings, disclaimer: Disclaimer) -> bytes:
    """RSS 2.0 of the scope's entries: summary in ``description``, HTML in ``content:encoded``."""
    return bytes(_generator(scope, settings, disclaimer, "rss.xml").rss_str(pretty=True))


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_json_feed(scope: FeedScope, settings: Settings, disclaimer: Disclaimer) -> bytes:
    """JSON Feed 1.1 of the scope's entries."""
    site = settings.site
    author = {"name": site.author}
    document: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": scope.title,
        "home_page_url": scope.home_url,
        "feed_url": scope.url(settings, "feed.json"),
        "description": scope.description,
        "language": site.language,
        "authors": [author],
        "items": [
            {
                "id": entry.entry_id,
                "url": entry.url,
                "title": entry.article.title,
                "summary": entry.article.summary,
                "content_html": entry_content(entry, disclaimer),
                "date_published": _rfc3339(entry.published),
                "date_modified": _rfc3339(entry.updated),
                "authors": [author],
                "tags": [settings.topic_label(t) for t in entry.article.topics],
            }
            for entry in scope.entries
        ],
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


_RENDERERS = {"rss.xml": render_rss, "atom.xml": render_atom, "feed.json": render_json_feed}


def render_feeds(entries: Sequence[Entry], settings: Settings, disclaimer: Disclaimer) -> FeedFiles:
    """Every feed file of the site: three formats for the site and for each topic."""
    files: dict[str, bytes] = {}
    for scope in feed_scopes(entries, settings):
        for name, _, _ in FEED_FORMATS:
            files[scope.directory + name] = _RENDERERS[name](scope, settings, disclaimer)
    return FeedFiles(files)
