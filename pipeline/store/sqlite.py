"""The SQLite backend: the embedded default, one file at ``state/pipeline.db``.

WAL mode lets readers (``pipeline status``, the web pages) work while a publish or a drain
writes; ``synchronous = NORMAL`` keeps every commit durable against a process crash (the
guarantee the outbox needs) at a fraction of the fsyncs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pipeline.errors import LedgerError
from pipeline.store.database import Cursor, Params
from pipeline.store.migrations import SQLITE_MIGRATIONS

__all__ = ["SqliteDatabase"]


def _cannot_open(path: Path, exc: Exception) -> LedgerError:
    # A path typed in PIPELINE_DATABASE_URL or `ledger copy --to`, a folder that cannot be made or a file that is
    # not SQLite is the user's to fix: one line naming the file, as for PostgreSQL.
    reason = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        reason = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return LedgerError(
        f"cannot open the ledger database {path}: {reason}; point PIPELINE_DATABASE_URL, "
        "[ledger] url (or `ledger copy --to`) at an SQLite ledger file or a folder that can "
        "hold one"
    )


class SqliteDatabase:
    """:class:`pipeline.store.database.Database` over :mod:`sqlite3` (autocommit mode)."""

    dialect = "sqlite"
    skip_locked = ""  # a claim runs in BEGIN IMMEDIATE: no other writer in between
    outbox_recipient = "(digest_id, email)"  # the column is COLLATE NOCASE

    def __init__(self, connection: sqlite3.Connection, path: Path | None) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> SqliteDatabase:
        """Open (creating if needed) and migrate the ledger at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
        except (OSError, sqlite3.Error) as exc:
            raise _cannot_open(path, exc) from exc
        database = cls(db, path)
        database.migrate()
        return database

    @classmethod
    def in_memory(cls) -> SqliteDatabase:
        """A new, empty, migrated ledger held in memory (gone when closed)."""
        database = cls(sqlite3.connect(":memory:", isolation_level=None), None)
        database.migrate()
        return database

    @classmethod
    def open_read_only(cls, path: Path) -> SqliteDatabase:
        """The ledger at ``path`` for reading only: nothing is created or changed on disk.

        A missing ledger reads as an empty one, held in memory. An existing one is opened
        with writes refused (``query_only``), which still lets SQLite tidy its WAL files on
        close; if its schema is older than this code, a copy in memory is migrated instead.
        """
        if not path.exists():
            return cls.in_memory()
        uri = path.resolve().as_uri()
        try:
            try:
                db = sqlite3.connect(f"{uri}?mode=rw", uri=True, isolation_level=None, timeout=30.0)
            except sqlite3.OperationalError:  # a file we may not write: read it as such
                db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
            (version,) = db.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise _cannot_open(path, exc) from exc
        if version < len(SQLITE_MIGRATIONS):
            memory = sqlite3.connect(":memory:", isolation_level=None)
            db.backup(memory)
            db.close()
            database = cls(memory, None)
            database.migrate()
            return database
        db.execute("PRAGMA query_only = ON")
        return cls(db, path)

    def migrate(self) -> None:
        """Apply the migrations this file lacks, each in its own transaction; the file's
        ``user_version`` counts those applied."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._db.in_transaction:  # inside another: simply part of it
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def execute_if_free(self, sql: str, params: Params = ()) -> list[Any] | None:
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            # Fetching every row also ends the statement, and with it the implicit
            # transaction: the write is committed on return.
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return None
        finally:
            self._db.execute("PRAGMA busy_timeout = 30000")  # as connected: 30 s

    # SQLite folds the WAL back into the database inside whichever commit crosses 1,000 WAL
    # pages, and syncs the database file there: during delivery that stalls every connection
    # of the process for tens of milliseconds, a few times a second. A thread does it instead.

    @contextmanager
    def background_checkpoints(self, every: float = 0.25, restart_at: int = 8192) -> Iterator[None]:
        """While the block runs, checkpoint the WAL from a thread instead of in commits.

        Durability is unchanged: every commit is in the WAL exactly as before; only the
        copying of committed pages into the database file moves out of the commits. The WAL
        starts over once it holds ``restart_at`` pages (32 MB at SQLite's default page size).
        """
        if self.path is None:
            yield
            return
        stop = threading.Event()
        path = self.path

        def checkpoint() -> None:
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            try:
                while not stop.wait(every):
                    with suppress(sqlite3.OperationalError):
                        # PASSIVE copies what it can without waiting for anyone ...
                        (_, frames, _) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if frames >= restart_at:
                            # ... but under a steady stream of commits it never finishes, so
                            # the WAL would grow without end: now and then hold the writers
                            # back for the last few frames, and the WAL starts over.
                            db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                db.close()

        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        thread = threading.Thread(target=checkpoint, name="ledger-checkpoints", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._db.execute("PRAGMA wal_autocheckpoint = 1000")

    def announce(self, channel: str) -> None:
        pass  # no way to reach another process: its worker polls

    def wait_for(self, channel: str, seconds: float, stop: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + seconds
        while not stop() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
        return False

    def close(self) -> None:
        self._db.close()
