"""Plain values passed between the stages. Nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Article",
    "Audience",
    "Changes",
    "Entry",
    "MediaFile",
    "Subscriber",
    "Therapy",
]


@dataclass(frozen=True, slots=True)
class Therapy:
    name: str
    maker: str = ""
    brands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaFile:
    """A file of an article's bundle (``articles/<slug>/``), published under a name that
    changes when its bytes change: ``media/<slug>/<stem>.<sha256[:8]><suffix>``."""

    name: str  # its path in the bundle folder, with "/" separators: "fvc-chart.png"
    public_path: str  # its path under public/
    sha256: str  # hex digest of its bytes
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class Article:
    """One article as the editor wrote it, validated, with its body rendered and sanitised."""

    slug: str
    source: str  # path relative to the project root, for messages
    title: str
    summary: str
    published: datetime  # aware, UTC
    updated: datetime | None  # from front matter, if the editor set it
    topics: tuple[str, ...]
    therapy: Therapy | None
    trials: tuple[str, ...]
    draft: bool
    explicit_id: str | None
    body_markdown: str
    content_hash: str
    html: str = ""  # filled by the renderer, sanitised, links absolute
    minor_edit: bool = False  # a correction: rewrite the entry, do not move `updated`
    former_hash: str = ""  # content_hash as ledgers before canonical hashing computed it
    media: tuple[MediaFile, ...] = ()  # the bundle's files; () for a single-file article
    author: str = ""  # who wrote it (front matter ``author``); "" -> the site's author
    reviewed: datetime | None = None  # last medical review (front matter ``reviewed``)
    bundle: bool = False  # True for articles/<slug>/index.md


@dataclass(frozen=True, slots=True)
class Entry:
    """A published article with the identity and dates the ledger gave it."""

    article: Article
    entry_id: str
    url: str
    published: datetime
    updated: datetime

    @property
    def slug(self) -> str:
        return self.article.slug


class ChangeKind(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class Changes:
    """What a publish would change, against the ledger."""

    new: tuple[Entry, ...] = ()
    updated: tuple[Entry, ...] = ()
    withdrawn: tuple[str, ...] = ()  # slugs
    unchanged: tuple[Entry, ...] = ()
    scheduled: tuple[Article, ...] = ()  # drafts are not listed; future-dated ones are
    renamed: tuple[Entry, ...] = ()  # same content and id under a new slug; not announced
    corrected: tuple[Entry, ...] = ()  # recorded with their dates kept; not announced

    @property
    def live(self) -> tuple[Entry, ...]:
        """Every entry that is published after this run, newest first."""
        entries = [*self.new, *self.updated, *self.renamed, *self.corrected, *self.unchanged]
        return tuple(sorted(entries, key=lambda e: (e.published, e.slug), reverse=True))

    @property
    def announced(self) -> tuple[Entry, ...]:
        return (*self.new, *self.updated)

    @property
    def any(self) -> bool:
        return bool(self.new or self.updated or self.withdrawn or self.renamed or self.corrected)


@dataclass(frozen=True, slots=True)
class Subscriber:
    email: str
    name: str = ""
    topics: frozenset[str] = field(default_factory=frozenset)  # empty: every topic
    frequency: str = "immediately"  # or "daily", "weekly", "monthly" (periodic digests)

    def wants(self, topics: tuple[str, ...]) -> bool:
        return not self.topics or bool(self.topics.intersection(topics))


@dataclass(frozen=True, slots=True)
class Audience:
    """Subscribers who chose the same topics receive the same digest body."""

    key: str  # the sorted topic list joined by ';', or '*' for every topic
    topics: frozenset[str]
    new: tuple[Entry, ...]
    updated: tuple[Entry, ...]
