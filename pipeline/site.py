"""The static site: article pages, the index, topic pages and the digest archive.

Pages are Jinja2 templates under ``templates/site/`` with autoescaping on; article bodies
are already sanitised HTML. Every page names its language and carries autodiscovery links
to its feeds. Navigation links are relative, so the site works under any host; canonical
and feed links are absolute.

A page is rebuilt only when what it is made from changed: each page's *input key* (its
entries, the templates, the settings, the disclaimer) is kept in the ledger with the size
and mtime of the file written, and a page whose key and file both still match is left
alone. Anything else is rendered and written only if its bytes changed. Files under ``articles/`` and ``topics/`` that no page or feed claims any more
(a withdrawn or renamed article, a topic removed from the configuration) are *stale*.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jinja2
from markupsafe import Markup

from pipeline.cache import CACHE_VERSION
from pipeline.config import Settings
from pipeline.digest import edition_name
from pipeline.disclaimer import Disclaimer
from pipeline.errors import TemplateError
from pipeline.feeds import FEED_FORMATS
from pipeline.markdown import render_markdown
from pipeline.models import Entry
from pipeline.parallel import map_forked
from pipeline.site_files import output_stamps, remove_stale, stale_paths, unchanged_on_disk
from pipeline.store import DigestCopy, OutputStamp

__all__ = [
    "SitePlan",
    "digest_page",
    "digest_pages",
    "output_stamps",
    "plan_site",
    "related_entries",
    "remove_stale",
    "trial_url",
]

SITE_TEMPLATES = "site"
SITE_VERSION = "2"  # bump when this module changes what a page looks like
_ROOT_FROM_SUBPAGE = "../../"  # articles/<slug>/, topics/<t>/ and digests/<n>/ are two deep
ABOUT_PAGE = "about/index.html"
RELATED_COUNT = 3  # related articles listed under an article


@dataclass(frozen=True, slots=True)
class SitePlan:
    """The pages of one publish."""

    files: dict[str, bytes]  # pages to write, by path under public/
    keys: dict[str, str]  # every article and list page -> its input key
    stale: tuple[str, ...]  # paths under public/ to remove (directories or files)
    forget: tuple[str, ...] = ()  # page stamps in the ledger for pages no longer made


def trial_url(nct_id: str) -> str:
    """A trial's page on ClinicalTrials.gov."""
    return f"https://clinicaltrials.gov/study/{nct_id}"


def article_page_path(slug: str) -> str:
    return f"articles/{slug}/index.html"


def plan_site(
    entries: Sequence[Entry],
    settings: Settings,
    disclaimer: Disclaimer,
    *,
    stamps: Mapping[str, OutputStamp],
    digests: Sequence[DigestCopy] = (),
    feed_paths: Iterable[str] = (),
) -> SitePlan:
    """Render what changed; list every article page and the stale files. Writes nothing."""
    pages = _Pages(settings, disclaimer)
    public = settings.paths.public
    public_prefix = os.fspath(public) + os.sep
    ordered = sorted(entries, key=lambda e: (e.published, e.slug), reverse=True)
    files: dict[str, bytes] = {}
    keys: dict[str, str] = {}

    def fresh(path: str, key: str) -> bool:
        """Record the page's key; True if the page must be rendered (it is not up to date)."""
        keys[path] = key
        stamp = stamps.get(path)
        return (
            stamp is None
            or stamp.input_key != key
            or not unchanged_on_disk(public_prefix + path, stamp)
        )

    entry_keys: dict[str, str] = {}
    todo: list[tuple[Entry, list[Entry]]] = []
    related = related_entries(ordered)
    for entry in ordered:
        entry_keys[entry.slug] = pages.input_key(entry)
        page_key = pages.page_key(entry_keys[entry.slug], related[entry.slug])
        if fresh(article_page_path(entry.slug), page_key):
            todo.append((entry, related[entry.slug]))
    # A first publish or a template change renders every page: one worker per core then.
    rendered = map_forked(_render_article, (pages, todo), len(todo))
    for (entry, _), page in zip(todo, rendered, strict=True):
        files[article_page_path(entry.slug)] = page
    if fresh(ABOUT_PAGE, pages.fingerprint):
        files[ABOUT_PAGE] = pages.about()
    listings: list[tuple[str, str | None, list[Entry]]] = [("index.html", None, ordered)]
    for topic in sorted(settings.topics):
        chosen = [e for e in ordered if topic in e.article.topics]
        listings.append((f"topics/{topic}/index.html", topic, chosen))
    for list_path, list_topic, chosen in listings:
        if fresh(list_path, pages.listing_key((entry_keys[e.slug] for e in chosen), list_topic)):
            files[list_path] = pages.listing(chosen, list_topic)
    for copy in digests:
        files.update(digest_pages(copy, settings))
    claimed = {*files, *keys, *feed_paths}
    forget = tuple(sorted(p for p in stamps if p not in keys))
    return SitePlan(files, keys, tuple(stale_paths(public, claimed)), forget)


def related_entries(ordered: Sequence[Entry]) -> dict[str, list[Entry]]:
    """For each entry, up to ``RELATED_COUNT`` others sharing a topic with it: the ones
    published nearest to it (``ordered`` is newest first; ties go to the newer).

    Nearest, not newest: a new article then changes the related list (and so the page) of
    only its few neighbours, not of every article on its topics. Cost: O(n·t·log n) for n
    entries of t topics each.
    """
    by_topic: dict[str, list[int]] = {}
    for position, entry in enumerate(ordered):
        for topic in entry.article.topics:
            by_topic.setdefault(topic, []).append(position)
    related: dict[str, list[Entry]] = {}
    for position, entry in enumerate(ordered):
        near: set[int] = set()
        for topic in entry.article.topics:
            members = by_topic[topic]
            at = bisect_left(members, position)
            near.update(members[max(0, at - RELATED_COUNT) : at + RELATED_COUNT + 1])
        near.discard(position)
        chosen = sorted(near, key=lambda other: (abs(other - position), other))
        related[entry.slug] = [ordered[other] for other in chosen[:RELATED_COUNT]]
    return related


def digest_pages(copy: DigestCopy, settings: Settings) -> dict[str, bytes]:
    """A digest's archive page ``digests/<n>/`` and each audience's web edition
    ``digests/<n>/<edition>/`` (what "view in browser" opens), by path under public/."""
    pages = {f"digests/{copy.id}/index.html": digest_page(copy.web_html, settings)}
    for key, html in copy.editions:
        pages[f"digests/{copy.id}/{edition_name(key)}/index.html"] = digest_page(html, settings)
    return pages


def digest_page(web_html: str, settings: Settings) -> bytes:
    """A digest's web copy with the site's feed autodiscovery links added to its head."""
    links = "".join(
        f'<link rel="alternate" type="{f["type"]}" title="{Markup.escape(f["title"])}" '
        f'href="{Markup.escape(f["href"])}">'
        for f in _feed_links(settings, "")
    )
    head_end = web_html.find("</head>")
    page = web_html if head_end < 0 else web_html[:head_end] + links + web_html[head_end:]
    return page.encode("utf-8")


# --- rendering ------------------------------------------------------------------------------


class _Pages:
    """The page templates and what every page shares, loaded once per publish."""

    def __init__(self, settings: Settings, disclaimer: Disclaimer) -> None:
        self.settings = settings
        directory = settings.paths.templates / SITE_TEMPLATES
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.common: dict[str, Any] = {
            "site": settings.site,
            "topics": [
                {"slug": t, "label": settings.topic_label(t)} for t in sorted(settings.topics)
            ],
            "disclaimer": Markup(disclaimer.html),
        }
        fingerprint = hashlib.sha256()
        for part in (SITE_VERSION, CACHE_VERSION, repr(settings.site), repr(settings.topics)):
            fingerprint.update(part.encode("utf-8") + b"\0")
        fingerprint.update(disclaimer.html.encode("utf-8") + b"\0")
        # Templates, site.css, about.md and the topics' landing texts.
        for template in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = template.relative_to(directory).as_posix()
            fingerprint.update(name.encode("utf-8") + b"\0" + template.read_bytes())
        self.fingerprint = fingerprint.hexdigest()
        self._texts = {
            name: Markup(render_markdown(text, settings.base_url))
            for name, text in _site_texts(directory).items()
        }
        self._feeds = {t: _feed_links(settings, t) for t in ("", *settings.topics)}

    def feeds(self, topic: str) -> list[dict[str, str]]:
        """Autodiscovery links of the site (``topic`` "") or of one topic."""
        return self._feeds.get(topic) or _feed_links(self.settings, topic)

    def input_key(self, entry: Entry) -> str:
        """Everything an article page depends on, hashed."""
        parts = (
            self.fingerprint,
            entry.slug,
            entry.entry_id,
            entry.url,
            entry.published.isoformat(),
            entry.updated.isoformat(),
            entry.article.content_hash,
            # The byline is not content (no update is announced), but the page shows it.
            entry.article.author,
            entry.article.reviewed.isoformat() if entry.article.reviewed else "",
        )
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()

    def page_key(self, entry_key: str, related: Sequence[Entry]) -> str:
        """An article page's key: its entry's, and what it shows of its related articles."""
        digest = hashlib.sha256(entry_key.encode("ascii"))
        for other in related:
            parts = (other.slug, other.article.title, other.published.isoformat())
            digest.update(("\0" + "\0".join(parts)).encode("utf-8"))
        return digest.hexdigest()

    def about(self) -> bytes:
        return self._render(
            "about.html.j2",
            root=_ROOT_FROM_SUBPAGE[3:],
            canonical=urljoin(self.settings.base_url, "about/"),
            feeds=self.feeds(""),
            body=self._texts.get("about", Markup("")),
        )

    def listing_key(self, entry_keys: Iterable[str], topic: str | None) -> str:
        """Everything a list page depends on: its topic and its entries' keys, in order."""
        digest = hashlib.sha256(f"{self.fingerprint}\0listing\0{topic or ''}".encode())
        for key in entry_keys:
            digest.update(key.encode("ascii"))
        return digest.hexdigest()

    def article(self, entry: Entry, related: Sequence[Entry] = ()) -> bytes:
        settings = self.settings
        article = entry.article
        moved = entry.updated > entry.published
        return self._render(
            "article.html.j2",
            root=_ROOT_FROM_SUBPAGE,
            canonical=entry.url,
            feeds=self.feeds("") + [f for t in article.topics for f in self.feeds(t)],
            article=article,
            published=_when(entry.published),
            updated=_when(entry.updated) if moved else None,
            reviewed=_when(article.reviewed) if article.reviewed else None,
            author=article.author or settings.site.author,
            related=[
                {"slug": e.slug, "title": e.article.title, "published": _when(e.published)}
                for e in related
            ],
            article_topics=[{"slug": t, "label": settings.topic_label(t)} for t in article.topics],
            therapy=article.therapy,
            trials=[{"id": t, "url": trial_url(t)} for t in article.trials],
            body=Markup(article.html),
        )

    def listing(self, entries: Sequence[Entry], topic: str | None) -> bytes:
        settings = self.settings
        items = [
            {
                "slug": e.slug,
                "title": e.article.title,
                "summary": e.article.summary,
                "published": _when(e.published),
                "therapy": e.article.therapy.name if e.article.therapy else "",
            }
            for e in entries
        ]
        if topic is None:
            return self._render(
                "list.html.j2",
                root="",
                canonical=settings.base_url,
                feeds=self.feeds(""),
                heading="Latest articles",
                intro=settings.site.description,
                items=items,
            )
        return self._render(
            "list.html.j2",
            root=_ROOT_FROM_SUBPAGE,
            canonical=urljoin(settings.base_url, f"topics/{topic}/"),
            feeds=self.feeds(topic) + self.feeds(""),
            heading=settings.topic_label(topic),
            intro=self._texts.get(f"topics/{topic}", ""),
            items=items,
        )

    def _render(self, name: str, **context: Any) -> bytes:
        try:
            return self.env.get_template(name).render(self.common, **context).encode("utf-8")
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"templates/{SITE_TEMPLATES}/{exc.name or name}:{exc.lineno}: {exc.message}"
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"templates/{SITE_TEMPLATES}/{exc.name}: missing") from exc
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"templates/{SITE_TEMPLATES}/{name}: {exc.message}") from exc


def _feed_links(settings: Settings, topic: str) -> list[dict[str, str]]:
    """Autodiscovery links for the site's feeds (``topic`` "") or one topic's."""
    directory = f"topics/{topic}/" if topic else ""
    label = (
        f"{settings.site.title}: {settings.topic_label(topic)}" if topic else settings.site.title
    )
    return [
        {
            "type": media_type,
            "title": f"{label} ({kind})",
            "href": urljoin(settings.base_url, directory + name),
        }
        for name, media_type, kind in FEED_FORMATS
    ]


def _when(moment: datetime) -> dict[str, str]:
    utc = moment.astimezone(UTC)
    return {"iso": utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "text": f"{utc.day} {utc:%B %Y}"}


def _render_article(work: tuple[_Pages, Sequence[tuple[Entry, list[Entry]]]], index: int) -> bytes:
    pages, todo = work
    entry, related = todo[index]
    return pages.article(entry, related)


def _site_texts(directory: Path) -> dict[str, str]:
    """The editors' Markdown beside the templates: ``about.md`` and ``topics/<topic>.md``,
    by name without ``.md``."""
    return {
        path.relative_to(directory).as_posix()[:-3]: path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*.md"))
    }
