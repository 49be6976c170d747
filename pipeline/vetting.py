"""The checks that need more than one file: the one path ``check`` and ``publish`` share.

``articles.parse_article`` judges each file alone (fields, characters, markup). What it
cannot judge needs the clock or the ledger, and lives here, so that ``pipeline check``
reports everything ``publish`` would refuse and ``publish`` refuses nothing ``check``
passed:

* an ``updated`` date in the future (W3C: an implausible date; readers would sort the
  entry above everything for years). A future ``published`` is an embargo, not an error;
  an embargoed article's ``updated`` may be as late as its ``published``.
* entry id conflicts against the ledger (``detect.detect_changes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from pathlib import Path

from pipeline.detect import detect_changes
from pipeline.errors import ContentError, Problem
from pipeline.models import Article, Changes
from pipeline.store import KnownArticle

__all__ = ["locate", "vet_articles"]


def vet_articles(
    articles: Sequence[Article],
    known: dict[str, KnownArticle],
    *,
    retired: AbstractSet[str],
    now: datetime,
    base_url: str,
    root: Path,
) -> tuple[Changes | None, list[Problem]]:
    """The changes a publish at ``now`` would make, or None, and every problem found.

    ``root`` is the project folder, to find the line of a field in an article's file.
    """
    problems = [
        Problem(
            article.source,
            _line_of(root / article.source, "updated"),
            "updated",
            f"{article.updated:%Y-%m-%d %H:%M} UTC is in the future; an update cannot be "
            "dated later than it is published: write today's date or remove the field",
        )
        for article in articles
        if article.updated is not None and article.updated > max(now, article.published)
    ]
    try:
        changes = detect_changes(articles, known, now=now, base_url=base_url, retired=retired)
    except ContentError as exc:
        return None, [*problems, *locate(exc.problems, root)]
    return (None if problems else changes), problems


# A field whose value another is made from: a minted entry id comes from ``published``.
_MADE_FROM = {"id": "published"}


def locate(problems: Sequence[Problem], root: Path) -> list[Problem]:
    """``problems`` with each article problem that has no line given one: the front-matter
    line of its field (of ``published`` for a minted id; the body's first line for the
    body), else line 1, where the front matter opens and a missing field goes."""
    located = []
    for problem in problems:
        if problem.line is None and problem.file.endswith(".md"):
            path = root / problem.file
            field = problem.field or ""
            line = _body_line(path) if field == "body" else _line_of(path, field) if field else None
            if line is None and field in _MADE_FROM:
                line = _line_of(path, _MADE_FROM[field])
            problem = Problem(problem.file, line or 1, problem.field, problem.message)
        located.append(problem)
    return located


def _body_line(path: Path) -> int | None:
    """The body's first line that is not blank (after the front matter), or None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    closing = next((n for n in range(1, len(lines)) if lines[n].rstrip() in ("---", "...")), None)
    if closing is None:
        return None
    return next((n + 1 for n in range(closing + 1, len(lines)) if lines[n].strip()), None)


def _line_of(path: Path, name: str) -> int | None:
    """The line of ``name:`` in a file's front matter, or None if it cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for number, line in enumerate(lines[1:], start=2):
        if line.rstrip() in ("---", "..."):
            break
        if line.startswith(f"{name}:"):
            return number
    return None
