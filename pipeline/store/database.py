"""The one seam between the stores and a database driver.

Every store module writes its statements against :class:`Database`: ``?`` placeholders,
ISO-8601 UTC text for instants, SQL that SQLite and PostgreSQL both accept
(``INSERT … ON CONFLICT``, ``RETURNING``). A backend adapts the rest: SQLite
(:mod:`pipeline.store.sqlite`) passes statements through to :mod:`sqlite3`; a backend with
another placeholder style rewrites them once per statement text.

The few things that must differ between databases (how claimers skip each other's rows, a
write that gives up instead of waiting for a lock, housekeeping) are members here, not
``if dialect`` branches in the stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Cursor", "Database", "Params"]

Params = Sequence[Any]


class Cursor(Protocol):
    """What a statement returns: rows one at a time or all at once, and ``rowcount``."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any:
        """None unless the statement returns rows (a ``SELECT``, a ``RETURNING``)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """A connection to one ledger database.

    ``execute`` outside :meth:`transaction` commits on its own (autocommit), as a single
    statement must: every outbox row's fate is committed before its connection sends again.
    """

    dialect: str  # "sqlite" or "postgresql"
    # Appended to the sub-select that picks rows to claim: "" where a write transaction
    # already excludes other claimers (SQLite), "FOR UPDATE SKIP LOCKED" on PostgreSQL.
    skip_locked: str
    # The ON CONFLICT target naming an outbox row's recipient, case-blind: SQLite's column
    # is COLLATE NOCASE, PostgreSQL's unique index is on lower(email).
    outbox_recipient: str

    def execute(self, sql: str, params: Params = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed when the block ends, rolled back if it raises.
        SQLite takes the write lock at once (``BEGIN IMMEDIATE``). Inside another
        transaction it is simply part of that one (statements of several stores that must
        be written together: a row's fate and a bounce score)."""
        ...

    def execute_if_free(self, sql: str, params: Params = ()) -> list[Any] | None:
        """Run one write unless another process holds the write lock, and return the rows it
        returns (``RETURNING``); None (nothing written) when the lock is held, instead of
        sleeping for it. Backends with row locks always run it."""
        ...

    def background_checkpoints(self) -> AbstractContextManager[None]:
        """While the block runs (a drain), keep database housekeeping off the commit path:
        SQLite checkpoints its WAL from a thread; PostgreSQL commits without waiting for
        the WAL flush (a server crash may then forget the last moment's "sent" marks)."""
        ...

    def announce(self, channel: str) -> None:
        """Tell other sessions waiting in :meth:`wait_for` that ``channel`` has news; sent
        when the current transaction commits. A no-op where the database cannot."""
        ...

    def wait_for(self, channel: str, seconds: float, stop: Callable[[], bool]) -> bool:
        """Wait up to ``seconds`` for news on ``channel``, looking at ``stop()`` at least
        twice a second; True if news came. Where the database cannot tell, just waits."""
        ...

    def close(self) -> None: ...
