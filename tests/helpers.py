"""Small helpers the tests share: publish through the library, edit an article, read the
ledger (on whichever backend the project is configured for)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import PublishReport, execute, load_settings, open_ledger, plan_publish
from pipeline.store import open_database

FIRST_RUN = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def publish(root: Path, *, now: datetime = FIRST_RUN, send_email: bool = True) -> PublishReport:
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=now)
        return execute(plan, settings, ledger, send_email=send_email)


def edit_article(root: Path, slug: str, old: str, new: str) -> None:
    path = root / "articles" / f"{slug}.md"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def ledger_rows(root: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) read from the project's ledger, SQLite or
    PostgreSQL as its environment says, opened read-only."""
    database = open_database(load_settings(root).ledger_location(), read_only=True)
    try:
        return [tuple(row) for row in database.execute(sql, params).fetchall()]
    finally:
        database.close()
