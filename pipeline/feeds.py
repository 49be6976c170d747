"""RSS 2.0, Atom 1.0 and JSON Feed 1.1, for the whole site and for each topic, byte-stable.

feedgen stamps "now" into ``updated``/``lastBuildDate`` and prepends entries by default;
here every date comes from the ledger, entries are sorted by us and appended, and the
feed's own date is its newest entry's, so the same articles always give the same bytes
and caches and ETags hold. The RSS channel ``<link>`` is the last link given to feedgen:
the ``self`` link goes first and the site last. feedgen also drops the ``rel`` of Atom
entry links; ``render_atom`` restores it.

Beyond feedgen, every RSS and Atom document gets (``_finish``): the WebSub ``hub`` link
when ``[feeds] websub_hub`` is set (W3C WebSub section 4; ``self`` is always there), and
the RFC 5005 links between a subscription feed and its archive pages (``feed_history``).
Summaries are plain text: RSS ``description`` and Atom ``summary type="html"`` carry them
HTML-escaped, so "Compared with <placebo>" reads the same in every reader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urljoin

from feedgen.feed import FeedGenerator
from lxml import etree

from pipeline.config import Settings
from pipeline.disclaimer import Disclaimer
from pipeline.feed_history import FeedDate, archive_pages, feed_date
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
_ATOM_LINK = "{http://www.w3.org/2005/Atom}link"
_FH = "http://purl.org/syndication/history/1.0"
_FH_ARCHIVE = f"{{{_FH}}}archive"


@dataclass(frozen=True, slots=True)
class FeedFiles:
    """Feed documents keyed by their path under ``public/``, and the feed dates to record."""

    files: dict[str, bytes]
    dates: tuple[FeedDate, ...] = ()  # scopes whose hash or date differ from the ledger's
    kept: tuple[str, ...] = ()  # archive pages not rendered again: unchanged, on disk


@dataclass(frozen=True, slots=True)
class FeedScope:
    """One set of feeds: the whole site (``directory`` "") or one topic ("topics/<t>/")."""

    directory: str
    title: str
    description: str
    home_url: str  # the page the feed stands for: the site, or the topic's page
    entries: tuple[Entry, ...]  # newest first, already capped
    # RFC 5005: directories (like ``directory``) of the linked documents; None for none.
    # No next-archive (RFC 5005 makes it optional): it would rewrite the newest full page
    # each time a page opens, and pages are meant to stay as they are.
    prev_archive: str | None = None
    current: str | None = None  # on archive pages only: the subscription feed's directory
    archives: tuple[FeedScope, ...] = field(default=())  # a subscription feed's pages

    def url(self, settings: Settings, name: str) -> str:
        return urljoin(settings.base_url, self.directory + name)


def feed_scopes(entries: Sequence[Entry], settings: Settings) -> list[FeedScope]:
    """The site's feed and one per configured topic, each capped after sorting newest first."""
    ordered = sorted(entries, key=lambda e: (e.published, e.slug), reverse=True)
    site = settings.site
    scopes = [
        _with_archives(
            FeedScope("", site.title, site.description, settings.base_url, tuple(ordered)), settings
        )
    ]
    for topic in sorted(settings.topics):
        label = settings.topic_label(topic)
        directory = f"topics/{topic}/"
        chosen = tuple(e for e in ordered if topic in e.article.topics)
        scope = FeedScope(
            directory,
            f"{site.title}: {label}",
            f"{label}: articles from {site.title}.",
            urljoin(settings.base_url, directory),
            chosen,
        )
        scopes.append(_with_archives(scope, settings))
    return scopes


def _with_archives(scope: FeedScope, settings: Settings) -> FeedScope:
    """``scope`` capped to ``max_entries``, the rest on RFC 5005 archive pages."""
    cap = settings.feeds.max_entries
    pages = archive_pages(scope.entries[cap:], cap)

    def page_dir(number: int) -> str | None:
        return f"{scope.directory}archive/{number}/" if 1 <= number <= len(pages) else None

    archives = tuple(
        replace(
            scope,
            directory=f"{scope.directory}archive/{page.number}/",
            title=f"{scope.title} (archive {page.number})",
            entries=page.entries,
            prev_archive=page_dir(page.number - 1),
            current=scope.directory,
        )
        for page in pages
    )
    return replace(
        scope, entries=scope.entries[:cap], prev_archive=page_dir(len(pages)), archives=archives
    )


def entry_content(entry: Entry, disclaimer: Disclaimer) -> str:
    """The article's sanitised HTML (footnotes as plain numbered notes), always followed by
    the disclaimer."""
    return f'{plain_footnotes(entry.article.html)}\n<hr>\n<div class="disclaimer">{disclaimer.html}</div>'


def _newest(scope: FeedScope) -> datetime:
    return max((e.updated for e in scope.entries), default=_EPOCH)


def _generator(
    scope: FeedScope, settings: Settings, disclaimer: Disclaimer, name: str, updated: datetime
) -> Any:
    site = settings.site
    newest = updated
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
        fe.description(escape(article.summary, quote=False), isSummary=True)
    return fg


def render_atom(
    scope: FeedScope,
    settings: Settings,
    disclaimer: Disclaimer,
    updated: datetime | None = None,
) -> bytes:
    """Atom 1.0 of the scope's entries; the feed's date is ``updated`` or the newest entry's."""
    generator = _generator(scope, settings, disclaimer, "atom.xml", updated or _newest(scope))
    feed = etree.fromstring(
        generator.atom_str(pretty=True), parser=etree.XMLParser(remove_blank_text=True)
    )
    # feedgen (1.0) drops an entry link's rel and type attributes: put them back, so every
    # entry says rel="alternate" explicitly, as the standards ask.
    for link in feed.iterfind("atom:entry/atom:link", _ATOM):
        link.set("rel", "alternate")
        link.set("type", "text/html")
    for summary in feed.iterfind("atom:entry/atom:summary", _ATOM):
        summary.set("type", "html")  # the text was escaped for RSS: the same holds here
    return _finish(feed, feed, scope, settings, "atom.xml")


def render_rss(
    scope: FeedScope,
    settings: Settings,
    disclaimer: Disclaimer,
    updated: datetime | None = None,
) -> bytes:
    """RSS 2.0 of the scope's entries: summary in ``description``, HTML in ``content:encoded``."""
    generator = _generator(scope, settings, disclaimer, "rss.xml", updated or _newest(scope))
    rss = etree.fromstring(
        generator.rss_str(pretty=True), parser=etree.XMLParser(remove_blank_text=True)
    )
    return _finish(rss, rss.find("channel"), scope, settings, "rss.xml")


def _finish(root: Any, container: Any, scope: FeedScope, settings: Settings, name: str) -> bytes:
    """Add the WebSub and RFC 5005 links after the document's own links; serialise."""
    links = []
    if settings.feeds.websub_hub and scope.current is None:  # archives never change: no hub
        links.append(("hub", settings.feeds.websub_hub))
    for rel, directory in (
        ("current", scope.current),
        ("prev-archive", scope.prev_archive),
    ):
        if directory is not None:
            links.append((rel, urljoin(settings.base_url, directory + name)))
    if scope.current is not None:  # an archive document says so (RFC 5005 section 4)
        container.insert(0, etree.Element(_FH_ARCHIVE, nsmap={"fh": _FH}))
    anchor = container.findall(_ATOM_LINK)[-1]
    for rel, href in reversed(links):
        anchor.addnext(etree.Element(_ATOM_LINK, href=href, rel=rel))
    return bytes(etree.tostring(root, pretty_print=True, encoding="UTF-8", xml_declaration=True))


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
        **(
            {"hubs": [{"type": "WebSub", "url": settings.feeds.websub_hub}]}
            if settings.feeds.websub_hub
            else {}
        ),
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


def render_feeds(
    entries: Sequence[Entry],
    settings: Settings,
    disclaimer: Disclaimer,
    *,
    previous: Mapping[str, FeedDate] | None = None,
    now: datetime | None = None,
    present: Callable[[str], bool] | None = None,
) -> FeedFiles:
    """Every feed file of the site: three formats for the site and each topic, and the RSS
    and Atom archive pages of each (RFC 5005).

    ``previous`` is what the ledger recorded per scope (``Ledger.feed_dates``) and ``now``
    the publish's time: together they keep each feed's date from going back
    (``feed_history.feed_date``). Without them the date is the newest entry's.

    An archive page whose inputs are those recorded (``FeedDate.input_key``) and whose files
    ``present`` (a path under public/ -> bool) finds is not rendered again: it would come
    out the same. Its paths are in ``FeedFiles.kept``.
    """
    files: dict[str, bytes] = {}
    kept: list[str] = []
    dates: list[FeedDate] = []
    known = previous or {}
    settings_key = _settings_key(settings, disclaimer)
    for subscription in feed_scopes(entries, settings):
        files[subscription.directory + "feed.json"] = render_json_feed(
            subscription, settings, disclaimer
        )
        for scope in (subscription, *subscription.archives):
            before = known.get(scope.directory)
            input_key = _input_key(scope, settings_key)
            paths = [scope.directory + "rss.xml", scope.directory + "atom.xml"]
            if (
                scope.current is not None
                and before is not None
                and before.input_key == input_key
                and present is not None
                and all(map(present, paths))
            ):
                kept += paths
                continue
            newest = _newest(scope)
            rss = render_rss(scope, settings, disclaimer, newest)
            atom = render_atom(scope, settings, disclaimer, newest)
            body_hash = hashlib.sha256(rss + b"\0" + atom).hexdigest()
            updated = feed_date(newest, body_hash, before, now or newest)
            if updated != newest:
                rss = render_rss(scope, settings, disclaimer, updated)
                atom = render_atom(scope, settings, disclaimer, updated)
            files[paths[0]] = rss
            files[paths[1]] = atom
            stamp = FeedDate(scope.directory, body_hash, updated, input_key)
            if before != stamp:
                dates.append(stamp)
    return FeedFiles(files, tuple(dates), tuple(kept))


# Bump when rendering changes what the same inputs turn into.
_RENDER_VERSION = "1"


def _settings_key(settings: Settings, disclaimer: Disclaimer) -> str:
    """Everything but the entries that a feed document is made from."""
    parts = [
        _RENDER_VERSION,
        settings.base_url,
        repr(settings.site),
        settings.feeds.websub_hub,
        repr(sorted(settings.topics.items())),
        disclaimer.html,
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _input_key(scope: FeedScope, settings_key: str) -> str:
    """A hash of everything a scope's RSS and Atom are made from (not their bytes)."""
    head = (scope.directory, scope.title, scope.description, scope.home_url)
    parts = [settings_key, repr((*head, scope.prev_archive, scope.current))]
    # Timestamps as numbers: formatting ~10,000 datetimes would cost more than the hash.
    parts += [
        f"{e.entry_id}\0{e.url}\0{e.published.timestamp()}\0{e.updated.timestamp()}\0"
        f"{e.article.content_hash}"
        for e in scope.entries
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
