"""The values the stores take and return: frozen dataclasses, no database types.

Instants are aware UTC datetimes here; the stores keep them as ISO-8601 text
(:func:`iso`), which sorts in time order in both SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.store.cadence import ArticleVersion

__all__ = [
    "SUBSCRIBER_STATUSES",
    "SUPPRESSED_STATUSES",
    "TRANSACTIONAL_DIGEST",
    "AudienceRecord",
    "CachedArticle",
    "DeliveryCounts",
    "DigestCopy",
    "DigestDelivery",
    "FeedDate",
    "KnownArticle",
    "MergeCounts",
    "OutboxRow",
    "OutputStamp",
    "PublishRecord",
    "SignupRecord",
    "SubscriberRecord",
    "SubscriberRow",
    "iso",
    "merge_action",
    "parse_instant",
]


# The reserved digest whose outbox rows are single prepared messages (sign-up
# confirmations): they share the digests' outbox, so the same drain retries them.
TRANSACTIONAL_DIGEST = 0


def iso(moment: datetime) -> str:
    """``moment`` as stored: ISO-8601 in UTC, whole seconds (``2026-12-07T01:24:36+00:00``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def parse_instant(text: str) -> datetime:
    """The inverse of :func:`iso`."""
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class FeedDate:
    """What the last publish gave one feed document: its canonical hash and its date."""

    scope: str  # the document's directory: "", "topics/<t>/", "archive/<n>/"...
    body_hash: str  # sha256 of its RSS and Atom rendered with their newest entry's date
    updated: datetime
    input_key: str = ""  # a hash of what it is made from, to skip rendering it again


@dataclass(frozen=True, slots=True)
class KnownArticle:
    slug: str
    entry_id: str
    content_hash: str
    published: datetime
    updated: datetime
    live: bool


@dataclass(frozen=True, slots=True)
class AudienceRecord:
    key: str
    subject: str
    slot_nonce: str
    html: str
    text: str
    web_html: str = ""  # the edition with no personal slot, for "view in browser"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    digest_id: int
    audience_key: str
    email: str
    name: str
    attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    pending: int = 0
    deferred: int = 0
    sent: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class DigestDelivery:
    """Where one digest's delivery stands: its outbox rows counted by status."""

    digest_id: int
    subject: str
    created_at: datetime
    counts: DeliveryCounts


@dataclass(frozen=True, slots=True)
class PublishRecord:
    """Everything one publish writes, in one transaction."""

    articles: tuple[KnownArticle, ...]  # new and updated versions (live)
    withdrawn: tuple[str, ...]
    digest_subject: str | None
    web_html: str
    audiences: tuple[AudienceRecord, ...]
    # (audience_key, email, name); those on a periodic frequency when it is recorded are left
    # out (they get the daily, weekly or monthly digest)
    recipients: Iterable[tuple[str, str, str]]
    new_count: int = 0
    versions: tuple[ArticleVersion, ...] = ()  # for the version log periodic digests read


@dataclass(frozen=True, slots=True)
class CachedArticle:
    """An article as parsed and rendered last time, valid while ``source_hash`` matches."""

    slug: str
    source_hash: str
    article: str  # JSON of the parsed fields but the body
    html: str
    file_stat: str = ""  # the file's size, times and inode when read; "" to always read it
    markdown: str = ""  # the body as written


@dataclass(frozen=True, slots=True)
class OutputStamp:
    """A generated file as last written: what it was made from, its size and mtime."""

    path: str
    input_key: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class DigestCopy:
    """The public web copy of one digest, as stored when it was sent."""

    id: int
    created_at: datetime
    subject: str
    web_html: str
    # (audience key, web edition HTML) for each audience: the "view in browser" pages
    editions: tuple[tuple[str, str], ...] = ()


# --- subscriber values ---------------------------------------------------------------------

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced")
SUPPRESSED_STATUSES = ("unsubscribed", "bounced")  # never mailed again


@dataclass(frozen=True, slots=True)
class SubscriberRecord:
    id: int
    email_key: str  # the address lower-cased: its identity
    email: str  # the first-seen spelling, for sending
    name: str
    topics: frozenset[str]  # empty: every topic
    status: str  # one of SUBSCRIBER_STATUSES
    source: str  # where it came from: a list file, "web", "cli", "bounce"
    ref: str | None  # the opaque reference signed into its links
    reason: str  # why it was suppressed, if it was
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    frequency: str = "immediately"  # or "daily", "weekly", "monthly"

    @property
    def suppressed(self) -> bool:
        return self.status in SUPPRESSED_STATUSES


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    """One subscriber to merge in from a list."""

    email_key: str
    email: str
    name: str
    topics: frozenset[str]
    status: str
    source: str
    ref: str
    frequency: str = "immediately"


@dataclass(frozen=True, slots=True)
class SignupRecord:
    id: str  # random, signed into the confirmation link
    email_key: str
    email: str
    name: str
    topics: frozenset[str]
    requested_at: datetime
    confirmed_at: datetime | None = None
    frequency: str = "immediately"


@dataclass(frozen=True, slots=True)
class MergeCounts:
    added: int = 0
    activated: int = 0
    suppressed: int = 0
    unchanged: int = 0


def merge_action(current: str | None, incoming: str) -> str:
    """What importing a list row with status ``incoming`` does to an address whose status is
    ``current`` (None: unknown): "add", "activate", "suppress" or "keep".

    The one statement of the import rules; ``merge_subscribers`` applies them and a publish
    plan previews them. No row ever makes an unsubscribed or bounced address active.
    """
    if current is None:
        return "add"
    if current == "pending" and incoming == "active":
        return "activate"
    if current in ("pending", "active") and incoming in ("unsubscribed", "bounced"):
        return "suppress"
    return "keep"
