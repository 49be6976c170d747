"""The ledger: the only code that speaks SQL.

The ledger is what makes publishing safe to repeat: an article's identity and dates live
here, so feeds stay stable; each digest's recipients are written as outbox rows in the same
transaction as the article versions they announce, so a crash leaves either nothing or a
complete list of pending messages.

One module per aggregate, each a mixin over the :class:`~pipeline.store.database.Database`
seam, and :class:`Ledger` composing them::

    articles.py     published article versions, the parsed-article cache
    site.py         stamps of generated files
    feeds.py        each feed's date, WebSub pings still owed
    bounces.py      bounce events and scores
    digests.py      publishes, digests, audiences, web copies
    outbox.py       claims, leases, the fate of each message
    subscribers.py  subscribers, sign-ups, suppressions
    inbound.py      mail that came back and webhook events already handled
    personal.py     one person's data: export, erasure, erased addresses' keyed hashes
    cadence.py      the article version log, reader windows, periodic runs
    records.py      the values they take and return
    migrations.py   the versioned schema
    sqlite.py       the SQLite backend (the embedded default)
    postgres.py     the PostgreSQL backend (one ledger for workers on many machines)
    postgres_migrations.py  its versioned schema
    copy.py         copying a whole ledger from one database to another

``open_ledger(settings)`` opens the ledger the configuration names.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.store.articles import ArticleStore
from pipeline.store.bounces import BounceStore
from pipeline.store.cadence import (
    FREQUENCIES,
    PERIODIC,
    ArticleVersion,
    CadenceStore,
    ReaderWindow,
    VersionRow,
    WindowDigest,
)
from pipeline.store.database import Database
from pipeline.store.digests import DigestStore
from pipeline.store.feeds import FeedStore
from pipeline.store.inbound import InboundStore
from pipeline.store.outbox import OutboxStore
from pipeline.store.personal import PersonalDataStore
from pipeline.store.records import (
    SUBSCRIBER_STATUSES,
    SUPPRESSED_STATUSES,
    TRANSACTIONAL_DIGEST,
    AudienceRecord,
    CachedArticle,
    DeliveryCounts,
    DigestCopy,
    DigestDelivery,
    FeedDate,
    KnownArticle,
    MergeCounts,
    OutboxRow,
    OutputStamp,
    PublishRecord,
    SignupRecord,
    SubscriberRecord,
    SubscriberRow,
    merge_action,
)
from pipeline.store.site import SiteStore
from pipeline.store.sqlite import SqliteDatabase
from pipeline.store.subscribers import SubscriberStore

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = [
    "FREQUENCIES",
    "PERIODIC",
    "SUBSCRIBER_STATUSES",
    "SUPPRESSED_STATUSES",
    "TRANSACTIONAL_DIGEST",
    "ArticleVersion",
    "AudienceRecord",
    "CachedArticle",
    "DeliveryCounts",
    "DigestCopy",
    "DigestDelivery",
    "FeedDate",
    "KnownArticle",
    "Ledger",
    "MergeCounts",
    "OutboxRow",
    "OutputStamp",
    "PublishRecord",
    "ReaderWindow",
    "SignupRecord",
    "SubscriberRecord",
    "SubscriberRow",
    "VersionRow",
    "WindowDigest",
    "merge_action",
    "open_database",
    "open_ledger",
]


class Ledger(
    ArticleStore,
    SiteStore,
    FeedStore,
    DigestStore,
    OutboxStore,
    SubscriberStore,
    PersonalDataStore,
    BounceStore,
    CadenceStore,
    InboundStore,
):
    """One connection to the ledger; use as a context manager.

    ``Ledger(path)`` opens (creating and migrating) the SQLite ledger at ``path``;
    ``Ledger(database)`` wraps an already open backend.
    """

    def __init__(self, where: Path | Database) -> None:
        self._db = SqliteDatabase.open(where) if isinstance(where, Path) else where

    @classmethod
    def read_only(cls, path: Path) -> Ledger:
        """The ledger at ``path`` for reading only: nothing is created or changed on disk
        (see :meth:`SqliteDatabase.open_read_only`)."""
        return cls(SqliteDatabase.open_read_only(path))

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction around statements of several stores (a row's fate and a
        bounce score); inside another, simply part of it."""
        return self._db.transaction()

    def checkpoints_in_background(self) -> AbstractContextManager[None]:
        """Keep the database's housekeeping off the commit path while the block runs."""
        return self._db.background_checkpoints()


def open_database(location: Path | str, *, read_only: bool = False) -> Database:
    """The database at ``location``: a SQLite file (a path) or a PostgreSQL URL, migrated.

    ``read_only`` opens it for reading only (see :meth:`SqliteDatabase.open_read_only`; on
    PostgreSQL, every transaction of the session is read-only). Raises ``LedgerError`` when
    a PostgreSQL server cannot be reached or refuses the login.
    """
    if isinstance(location, Path):
        if read_only:
            return SqliteDatabase.open_read_only(location)
        return SqliteDatabase.open(location)
    from pipeline.store.postgres import PostgresDatabase  # psycopg only when configured

    return PostgresDatabase.open(location, read_only=read_only)


def open_ledger(settings: Settings, *, read_only: bool = False) -> Ledger:
    """The project's ledger, where ``PIPELINE_DATABASE_URL`` or ``[ledger] url`` say (the
    SQLite file ``state/pipeline.db`` when neither is set). Raises ``ConfigError`` for a
    URL of an unknown kind and ``LedgerError`` when the database cannot be opened."""
    return Ledger(open_database(settings.ledger_location(), read_only=read_only))
