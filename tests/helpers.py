"""Small helpers the tests share: publish through the library, edit an article."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from pipeline import PublishReport, execute, load_settings, open_ledger, plan_publish

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


def write_article(
    root: Path, slug: str, title: str, published: date, topic: str = "scleroderma"
) -> None:
    """A short valid article ``articles/<slug>.md`` on one topic."""
    (root / "articles" / f"{slug}.md").write_text(
        f"---\ntitle: {title}\nsummary: A short summary of {slug}.\n"
        f"published: {published.isoformat()}\ntopics: [{topic}]\n---\n\nThe body of {slug}.\n",
        encoding="utf-8",
    )
