"""The PostgreSQL backend: one ledger shared by publishers and workers on many machines.

A :class:`PostgresDatabase` is one psycopg 3 connection in autocommit mode: a statement
outside :meth:`~PostgresDatabase.transaction` commits on its own, as the outbox needs.
The stores' ``?`` placeholders become psycopg's ``%s`` once per statement text. Claims use
``FOR UPDATE SKIP LOCKED``, so claimers never wait for each other's rows.

Migrations run on connect, under an advisory lock: two workers starting at once apply them
one after the other, and the second finds nothing left to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg

from pipeline.config_urls import redact_url as redact
from pipeline.errors import LedgerError
from pipeline.store.database import Cursor, Params
from pipeline.store.postgres_migrations import POSTGRES_MIGRATIONS

__all__ = ["PostgresDatabase", "to_pyformat"]

# pg_advisory_lock key held while migrating: "pipe" in ASCII.
MIGRATION_LOCK = 0x70697065
CONNECT_TIMEOUT = 10  # seconds


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``sql`` with each ``?`` placeholder as ``%s`` and each literal ``%`` as ``%%``.

    A ``?`` inside a quoted string or identifier is left alone; psycopg reads ``%`` as the
    start of a placeholder everywhere, so every ``%`` is doubled.
    """
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append("%%" if char == "%" else char)
    return "".join(out)


class PostgresDatabase:
    """:class:`pipeline.store.database.Database` over one psycopg 3 connection."""

    dialect = "postgresql"
    skip_locked = "FOR UPDATE SKIP LOCKED"
    outbox_recipient = "(digest_id, lower(email))"  # the unique index outbox_recipient

    def __init__(self, connection: psycopg.Connection[Any], url: str) -> None:
        self._db = connection
        self.url = url
        self._listening: set[str] = set()

    @classmethod
    def open(cls, url: str, *, read_only: bool = False) -> PostgresDatabase:
        """Connect to ``url`` (``postgresql://user[:password]@host[:port]/db``) and migrate.

        The password comes from the URL, else from libpq's environment (``PGPASSWORD``) or
        ``~/.pgpass``. ``read_only`` refuses every write for the session (after migrating a
        database that lacks tables, so reading a fresh one works). Raises ``LedgerError``
        naming the server when it cannot be reached, refuses the login or the URL is bad.
        """
        try:
            connection = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="pipeline",
            )
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot open the ledger database {redact(url)}: {_first_line(exc)}"
            ) from exc
        database = cls(connection, url)
        try:
            database.migrate()
            if read_only:
                connection.execute("SET default_transaction_read_only = on")
        except BaseException:
            connection.close()
            raise
        return database

    def schema_version(self) -> int:
        """How many migrations this database has run (0 for an empty one)."""
        exists = self._db.execute("SELECT to_regclass('schema_version')").fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row[0])

    def migrate(self) -> None:
        """Apply the migrations this database lacks, each in its own transaction, while
        holding an advisory lock so that concurrent starters apply each exactly once."""
        wanted = len(POSTGRES_MIGRATIONS)
        try:
            if self.schema_version() == wanted:
                return  # the usual case: no lock taken
            self._db.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
                version = self.schema_version()
                if version > wanted:
                    raise LedgerError(
                        f"the ledger database {redact(self.url)} has schema version {version}, "
                        f"newer than this pipeline knows ({wanted}); upgrade the pipeline"
                    )
                for number, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
                    with self._db.transaction():
                        for statement in script.split(";"):
                            if statement.strip():
                                self._db.execute(statement)
                        self._db.execute("DELETE FROM schema_version")
                        self._db.execute("INSERT INTO schema_version VALUES (%s)", (number,))
            finally:
                self._db.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        try:
            return self._db.execute(to_pyformat(sql), tuple(params))
        except psycopg.OperationalError as exc:
            raise self._error(exc) from exc

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        try:
            with self._db.cursor() as cursor:
                cursor.executemany(to_pyformat(sql), [tuple(row) for row in rows])
        except psycopg.OperationalError as exc:
            raise self._error(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self._db.transaction():
                yield
        except psycopg.OperationalError as exc:
            raise self._error(exc) from exc

    def execute_if_free(self, sql: str, params: Params = ()) -> list[Any] | None:
        # Row locks: a write never waits for a database-wide lock.
        cursor = self.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    # A delivery commits once per message. Waiting for each commit's WAL flush would cap a
    # drain at the disk's fsyncs per second (about 400 on the development machine), and
    # stall its event loop meanwhile. While a drain runs, its commits are asynchronous:
    # visible to every other session at once and never torn, but a crash of the database
    # server may forget the last fraction of a second of them (wal_writer_delay, at most
    # three times it). What that loses is only "sent" marks, so those messages go out again:
    # the same trade SQLite's WAL mode with synchronous = NORMAL makes against an OS crash.
    # Everything outside a drain (publishes, unsubscribes) keeps synchronous commits.

    @contextmanager
    def background_checkpoints(self) -> Iterator[None]:
        """While the block runs, commits do not wait for the WAL flush (see above)."""
        self.execute("SET synchronous_commit = off")
        try:
            yield
        finally:
            self.execute("RESET synchronous_commit")

    # LISTEN/NOTIFY: a publish announces its digest when it commits, and idle workers wake
    # at once instead of at their next poll. Polling stays as the fallback for anything
    # missed (a worker reconnecting, deferred rows coming due).

    def announce(self, channel: str) -> None:
        self.execute(f"NOTIFY {channel}")

    def wait_for(self, channel: str, seconds: float, stop: Callable[[], bool]) -> bool:
        try:
            if channel not in self._listening:
                self._db.execute(f"LISTEN {channel}")
                self._listening.add(channel)
            deadline = time.monotonic() + seconds
            while not stop() and (left := deadline - time.monotonic()) > 0:
                for _ in self._db.notifies(timeout=min(left, 0.5), stop_after=1):
                    return True
        except psycopg.OperationalError as exc:
            raise self._error(exc) from exc
        return False

    def close(self) -> None:
        self._db.close()

    def _error(self, exc: psycopg.Error) -> LedgerError:
        return LedgerError(f"the ledger database {redact(self.url)} failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
