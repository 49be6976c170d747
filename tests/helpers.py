"""Small helpers the tests share: publish through the library, write or edit an article,
compare what ``check`` reports with what ``publish`` refuses, read the ledger (on whichever
backend the project is configured for)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline import ContentError, PublishReport, execute, load_settings, open_ledger, plan_publish
from pipeline.check import check_project
from pipeline.errors import Problem
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


def article_files(root: Path) -> dict[str, Path]:
    """Each article's Markdown file by slug: ``<slug>.md`` and bundles ``<slug>/index.md``."""
    articles = root / "articles"
    found = {p.stem: p for p in articles.glob("*.md")}
    found.update({p.parent.name: p for p in articles.glob("*/index.md")})
    return dict(sorted(found.items()))


def write_article(
    root: Path, slug: str, title: str, published: date, topic: str = "scleroderma"
) -> None:
    """A short valid article ``articles/<slug>.md`` on one topic."""
    (root / "articles" / f"{slug}.md").write_text(
        f"---\ntitle: {title}\nsummary: A short summary of {slug}.\n"
        f"published: {published.isoformat()}\ntopics: [{topic}]\n---\n\nThe body of {slug}.\n",
        encoding="utf-8",
    )


def write(root: Path, slug: str, front: str, body: str = "Some text.\n") -> Path:
    """Write ``articles/<slug>.md`` from front matter lines and a body; return its path."""
    path = root / "articles" / f"{slug}.md"
    path.write_text(f"---\n{front.strip()}\n---\n{body}", "utf-8")
    return path


def refusals(root: Path, *, now: datetime = FIRST_RUN) -> tuple[list[Problem], list[Problem]]:
    """What ``check`` reports about articles and what ``publish`` refuses, side by side."""
    checked = [
        p for p in check_project(load_settings(root), now=now) if p.file.startswith("articles/")
    ]
    try:
        publish(root, now=now, send_email=False)
    except ContentError as exc:
        return checked, list(exc.problems)
    return checked, []


def where(problems: list[Problem]) -> list[tuple[str, int | None, str | None]]:
    """(file, line, field) of each problem, sorted: what two reports must agree on."""
    return sorted((p.file, p.line, p.field) for p in problems)


def downgrade_ledger(path: Path, version: int) -> None:
    """Turn the ledger at ``path`` into one made by the first ``version`` migrations, its
    rows kept (the columns that schema has), as an older release of the pipeline left it."""
    import sqlite3

    from pipeline.store.migrations import SQLITE_MIGRATIONS

    old_path = path.with_name(path.name + ".old")
    old = sqlite3.connect(old_path, isolation_level=None)
    for script in SQLITE_MIGRATIONS[:version]:
        for statement in script.split(";"):
            if statement.strip():
                old.execute(statement)
    old.execute("ATTACH DATABASE ? AS current", (str(path),))
    tables = [
        t
        for (t,) in old.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")
        if not t.startswith("sqlite_")
    ]
    for table in tables:
        columns = [c[1] for c in old.execute(f"PRAGMA main.table_info({table})")]
        names = ", ".join(columns)
        old.execute(f"DELETE FROM main.{table}")
        old.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM current.{table}")
    old.execute("DETACH DATABASE current")
    old.execute(f"PRAGMA user_version = {version}")
    old.close()
    for leftover in path.parent.glob(path.name + "-*"):
        leftover.unlink()
    old_path.replace(path)
