"""Copy a whole ledger from one database to another: ``pipeline ledger copy --to URL``.

Both sides are opened (and so migrated) by this code first, so they hold the same tables;
each table's rows move with their ids in one transaction on the target, parents before the
tables that refer to them, and the copy is verified by counting each table on both sides.
A target that already holds rows (beyond those its migrations insert) is refused unless
``replace`` is given, which empties it in the same transaction. Rows written to the source while the copy runs would make the
counts differ: stop publishing and the workers first (the copy says so if they did not).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pipeline.errors import LedgerError
from pipeline.store.database import Database

__all__ = ["copy_ledger", "database_identity", "table_counts"]

BATCH = 5000  # rows read and written at a time
_BOOKKEEPING = {"schema_version"}


def copy_ledger(
    source: Database,
    target: Database,
    *,
    replace: bool = False,
    on_table: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every table of ``source`` into ``target``; return the rows per table.

    ``on_table(name, rows)`` is called as each table is done. Raises ``LedgerError`` when
    the target is not empty (and ``replace`` is false) or the counts differ afterwards.
    """
    tables = _ordered_tables(source)
    missing = set(tables) - set(_tables(target))
    if missing:
        raise LedgerError(f"the target ledger lacks the tables {', '.join(sorted(missing))}")
    seeded = _seeded_counts()
    before = table_counts(target, tables)
    filled_tables = {t: n for t, n in before.items() if n > seeded.get(t, 0)}
    if filled_tables and not replace:
        filled = ", ".join(f"{name} ({rows})" for name, rows in filled_tables.items())
        raise LedgerError(
            f"the target ledger is not empty: {filled}; copy into an empty database, or "
            "give --replace to empty it first"
        )
    expected = table_counts(source, tables)
    with target.transaction():
        for table in reversed(tables):  # children first
            target.execute(f"DELETE FROM {table}")
        for table in tables:
            columns = [c for c in _columns(source, table) if c in set(_columns(target, table))]
            _copy_table(source, target, table, columns)
            if on_table is not None:
                on_table(table, expected[table])
        if target.dialect == "postgresql":
            _advance_identities(target, tables)
    copied = table_counts(target, tables)
    differing = [t for t in tables if copied[t] != expected[t]]
    if differing or table_counts(source, tables) != expected:
        detail = ", ".join(f"{t}: {expected[t]} read, {copied[t]} written" for t in differing)
        raise LedgerError(
            "the copy does not match its source"
            + (f" ({detail})" if detail else " (the source changed while copying)")
            + "; stop publishing and the workers, then copy again with --replace"
        )
    return copied


def database_identity(database: Database) -> tuple[str, ...]:
    """What makes two connections the same ledger, however their URLs are spelled.

    SQLite: the main file's device and inode (a relative or absolute path, a symlink or a
    hard link all lead to one). PostgreSQL: the cluster's system identifier (from
    ``pg_control_system()``; for a role not allowed to call it, the server's start time and
    port, as unique in practice) and the database's name.
    """
    if database.dialect == "postgresql":
        (allowed,) = database.execute(
            "SELECT has_function_privilege('pg_control_system()', 'EXECUTE')"
        ).fetchone()
        cluster_sql = (
            "SELECT system_identifier::text FROM pg_control_system()"
            if allowed
            else "SELECT pg_postmaster_start_time()::text || ' ' || current_setting('port')"
        )
        (cluster,) = database.execute(cluster_sql).fetchone()
        (name,) = database.execute("SELECT current_database()").fetchone()
        return ("postgresql", str(cluster), str(name))
    files = [row[2] for row in database.execute("PRAGMA database_list").fetchall()]
    if not files or not files[0]:  # an in-memory database is only ever itself
        return ("sqlite", f"memory:{id(database)}")
    stat = os.stat(files[0])
    return ("sqlite", str(stat.st_dev), str(stat.st_ino))


def table_counts(database: Database, tables: list[str] | None = None) -> dict[str, int]:
    """Rows per table (every ledger table when ``tables`` is None)."""
    names = tables if tables is not None else _ordered_tables(database)
    counts: dict[str, int] = {}
    for table in names:
        (count,) = database.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        counts[table] = int(count)
    return counts


def _seeded_counts() -> dict[str, int]:
    """Rows the migrations themselves insert (the reserved digest 0): a new ledger's counts."""
    from pipeline.store.sqlite import SqliteDatabase

    fresh = SqliteDatabase.in_memory()
    try:
        return table_counts(fresh)
    finally:
        fresh.close()


def _copy_table(source: Database, target: Database, table: str, columns: list[str]) -> None:
    listed = ", ".join(columns)
    insert = f"INSERT INTO {table} ({listed}) VALUES ({', '.join('?' * len(columns))})"
    cursor = source.execute(f"SELECT {listed} FROM {table}")
    while True:
        rows = cursor.fetchmany(BATCH)
        if not rows:
            return
        target.executemany(insert, rows)


def _advance_identities(target: Database, tables: list[str]) -> None:
    """Move each id sequence past the copied ids, so new rows do not collide with them."""
    rows = target.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND is_identity = 'YES'"""
    ).fetchall()
    for table, column in rows:
        if table in tables:
            target.execute(
                f"""SELECT setval(pg_get_serial_sequence(?, ?),
                                  coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)""",
                (table, column),
            )


def _tables(database: Database) -> list[str]:
    if database.dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
    else:
        sql = """SELECT table_name FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"""
    return sorted(name for (name,) in database.execute(sql) if name not in _BOOKKEEPING)


def _columns(database: Database, table: str) -> list[str]:
    if database.dialect == "sqlite":
        return [row[1] for row in database.execute(f"PRAGMA table_info({table})")]
    rows = database.execute(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position""",
        (table,),
    )
    return [name for (name,) in rows]


def _parents(database: Database, table: str) -> set[str]:
    """The tables ``table``'s foreign keys refer to."""
    if database.dialect == "sqlite":
        return {row[2] for row in database.execute(f"PRAGMA foreign_key_list({table})")}
    rows = database.execute(
        """SELECT DISTINCT ccu.table_name
           FROM information_schema.table_constraints tc
           JOIN information_schema.constraint_column_usage ccu
             ON ccu.constraint_schema = tc.constraint_schema
            AND ccu.constraint_name = tc.constraint_name
           WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()
             AND tc.table_name = ?""",
        (table,),
    )
    return {name for (name,) in rows}


def _ordered_tables(database: Database) -> list[str]:
    """Every ledger table, each after the tables it refers to (then by name)."""
    remaining = {table: _parents(database, table) - {table} for table in _tables(database)}
    ordered: list[str] = []
    while remaining:
        ready = sorted(t for t, parents in remaining.items() if not parents - set(ordered))
        if not ready:  # a cycle: cannot happen in this schema, but never loop forever
            ready = sorted(remaining)
        for table in ready:
            ordered.append(table)
            del remaining[table]
    return ordered
