"""What the digest templates see: the subject (``[digest] subject`` or
``periodic_subject``), one card per article, the inbox preview line, the collapsed links
past the layout's full cards, the disclaimer and the slot markers.

A pure function of the audience, the settings and the layout; rendering is
:mod:`pipeline.digest_templates`', choosing the layout :mod:`pipeline.digest_layout`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

from markupsafe import Markup

from pipeline.config import Settings
from pipeline.digest_layout import Layout
from pipeline.disclaimer import Disclaimer
from pipeline.errors import TemplateError
from pipeline.models import Audience, Entry

__all__ = ["Period", "digest_context", "digest_subject", "periodic_subject"]


@dataclass(frozen=True, slots=True)
class Period:
    """What a periodic digest covers, for its subject and intro: ("weekly", "23-29 November")."""

    frequency: str
    label: str


def digest_subject(settings: Settings, entries: Sequence[Entry]) -> str:
    """The subject from ``[digest] subject``, e.g. "Therapy news: Alemtuzumab and 2 more"."""
    first = entries[0].article
    others = len(entries) - 1
    try:
        subject = settings.digest.subject.format(
            site=settings.site.title,
            first=first.therapy.name if first.therapy else first.title,
            more=f" and {others} more" if others else "",
            count=len(entries),
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(
            f"pipeline.toml: [digest] subject: {exc!s} is not a known field; "
            "use {site}, {first}, {more} and {count}"
        ) from exc
    return " ".join(subject.split())  # a newline in a title must never reach a header


def periodic_subject(settings: Settings, period: Period, count: int) -> str:
    """The subject from ``[digest] periodic_subject``, e.g. "Your weekly digest, 23-29 November"."""
    try:
        subject = settings.digest.periodic_subject.format(
            site=settings.site.title, frequency=period.frequency, period=period.label, count=count
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(
            f"pipeline.toml: [digest] periodic_subject: {exc!s} is not a known field; "
            "use {site}, {frequency}, {period} and {count}"
        ) from exc
    return " ".join(subject.split())


def _card(entry: Entry, settings: Settings) -> dict[str, object]:
    article = entry.article
    therapy = article.therapy
    return {
        "title": article.title,
        "url": entry.url,
        "summary": article.summary,
        "therapy": therapy.name if therapy else "",
        "maker": therapy.maker if therapy else "",
        "brands": list(therapy.brands) if therapy else [],
        "topics": [settings.topic_label(t) for t in article.topics],
        "published": entry.published,
        "updated": entry.updated,
    }


def _preheader(entries: Sequence[Entry], limit: int = 140) -> str:
    """The inbox preview line: the titles, cut at a word, never mid-word."""
    text = "; ".join(e.article.title for e in entries)
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(";,:") + "…"


def digest_context(
    audience: Audience,
    settings: Settings,
    disclaimer: Disclaimer,
    slot: Mapping[str, str],
    period: Period | None = None,
    layout: Layout | None = None,
    *,
    personal: bool = True,
) -> dict[str, object]:
    """What both templates see; ``slot`` holds slot markers, or real values when rendering
    a single copy directly (the benchmark's straightforward way). ``period`` is set for a
    daily, weekly or monthly digest and None for the one sent at a publish. ``layout``
    says how many articles get full cards (default: all); ``personal`` False renders the
    web edition, whose footer has no personal value or link."""
    entries = [*audience.new, *audience.updated]
    if period is None:
        subject = digest_subject(settings, entries)
    else:
        subject = periodic_subject(settings, period, len(entries))
    layout = layout or Layout(len(entries), len(entries))
    fresh = len(audience.new)
    linked = range(layout.full, layout.full + layout.links)
    return {
        "personal": personal,
        "collapsed": [
            {"title": entries[i].article.title, "url": entries[i].url, "updated": i >= fresh}
            for i in linked
        ],
        "more_count": layout.more,
        "more_url": settings.base_url,
        "subscribe_url": urljoin(settings.base_url, "subscribe/"),
        "site": settings.site,
        "base_url": settings.base_url,
        "sender": settings.sender,
        "subject": subject,
        "preheader": _preheader(entries),
        "new": [_card(e, settings) for e in audience.new[: layout.full]],
        "updated": [_card(e, settings) for e in audience.updated[: max(0, layout.full - fresh)]],
        "disclaimer_html": Markup(disclaimer.html),
        "disclaimer_text": disclaimer.text,
        "slot": slot,
        "period": period,
    }
