"""Load articles: YAML front matter + CommonMark body -> validated, sanitised ``Article``.

Every file is read and every problem collected before anything is returned, so an editor
sees all that is wrong in one go, each with file, line and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import yaml

from pipeline.content_hash import canonical_hash, former_hash
from pipeline.errors import Problem
from pipeline.front_matter import parse_yaml
from pipeline.markdown import (
    markdown_to_html,
    render_markdown,
    sanitize_html,
    strip_control_chars,
)
from pipeline.media import article_sources, bundle_media, media_problems, render_article, with_media
from pipeline.models import Article, Therapy
from pipeline.text_rules import (
    canonical_text,
    reference_problems,
    title_problems,
    value_problems,
)

__all__ = [
    "LoadResult",
    "article_url",
    "load_articles",
    "parse_article",
    "parse_source",
    "render_markdown",
    "sanitize_html",
    "strip_control_chars",
]

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_NCT = re.compile(r"^NCT\d{8}$")
_FIELDS = {"title", "summary", "published", "updated", "topics", "therapy", "trials", "draft"}
_FIELDS |= {"id", "minor_edit"}  # identity and workflow: not content (see content_hash)
# Byline and review date: shown on the page, not content: a new review date alone is not an
# update to announce (the page's input key has them, so the page still shows the change).
_FIELDS |= {"author", "reviewed"}
_THERAPY_FIELDS = {"name", "maker", "brands"}


@dataclass(frozen=True, slots=True)
class LoadResult:
    articles: tuple[Article, ...]
    problems: tuple[Problem, ...]


def article_url(base_url: str, slug: str) -> str:
    """The permanent address of an article's page."""
    return urljoin(base_url, f"articles/{slug}/")


def load_articles(
    directory: Path, root: Path, *, known_topics: Iterable[str] = (), base_url: str = ""
) -> LoadResult:
    """Parse every ``*.md`` and ``<slug>/index.md`` bundle in ``directory``; return the valid
    articles (rendered when ``base_url`` is given) and every problem, media ones included."""
    topics = frozenset(known_topics)
    articles: list[Article] = []
    sources, problems = article_sources(directory)
    for source in sources:
        relative = _relative(source.path, root)
        try:
            text = source.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(relative, None, None, f"not UTF-8 ({exc.reason}); save as UTF-8")
            )
            continue
        article, found = parse_source(source.slug, relative, text, source.folder, topics, base_url)
        problems.extend(found)
        if article is not None and not found:
            articles.append(article)
    return LoadResult(tuple(articles), tuple(problems))


def parse_source(
    slug: str,
    relative: str,
    text: str,
    folder: Path | None,
    topics: frozenset[str],
    base_url: str = "",
) -> tuple[Article | None, list[Problem]]:
    """``parse_article`` plus the bundle's files (``folder``) and the media checks; with a
    ``base_url``, also rendered (the Markdown is converted once for both)."""
    article, problems = parse_article(slug, relative, text, known_topics=topics)
    if article is None:
        return None, problems
    if folder is not None:
        article = with_media(article, bundle_media(folder, slug))
    raw = markdown_to_html(article.body_markdown)
    problems += media_problems(article, text, folder, raw)
    if problems:
        return None, problems
    return (render_article(article, base_url, raw) if base_url else article), problems


def parse_article(
    slug: str, source: str, text: str, *, known_topics: frozenset[str] = frozenset()
) -> tuple[Article | None, list[Problem]]:
    """Parse one article's text. Returns the article (None if unusable) and its problems."""
    problems: list[Problem] = []

    def problem(line: int | None, fieldname: str | None, message: str) -> None:
        problems.append(Problem(source, line, fieldname, message))

    if not _SLUG.match(slug):
        problem(None, None, "file name must be a slug: lower-case letters, digits and hyphens")

    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        problem(1, None, "the file must start with a '---' line opening the YAML front matter")
        return None, problems
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "..."))
    except StopIteration:
        problem(1, None, "the front matter is never closed; add a '---' line after it")
        return None, problems
    # As readers see it: LF line ends, Unicode NFC (composed and decomposed letters look
    # alike, and the W3C asks the web for NFC), so neither is ever an edit.
    front_text = canonical_text("\n".join(lines[1:end]))
    raw_body = "\n".join(lines[end + 1 :]).strip("\n") + "\n"
    body = canonical_text(raw_body)

    try:
        node, data = parse_yaml(front_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        source_line = lines[line - 1] if mark is not None and line <= end else ""
        if isinstance(exc, yaml.reader.ReaderError):
            # A character typed raw that YAML's reader refuses before any field is built:
            # named on its own line with the words an escaped one gets (value_problems).
            line = front_text[: exc.position].count("\n") + 2
            key = re.match(r"([^\s:#][^:]*):", lines[line - 1])
            words = [m for _, m in value_problems(lines[line - 1])] or [
                f"contains U+{ord(str(exc.character)[:1] or ' '):04X}, which YAML refuses; delete it"
            ]
            problem(line, key.group(1) if key else None, words[0])
        elif "\t" in source_line:  # the parser's words ("cannot start any token") hide the cause
            problem(line, None, "a tab character; YAML allows only spaces here: use spaces")
        else:
            problem(line, None, f"front matter is not valid YAML: {getattr(exc, 'problem', exc)}")
        return None, problems
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        problem(2, None, "front matter must be a mapping of 'field: value' lines")
        return None, problems
    line_of: dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        if key_node.value in line_of:  # YAML 1.2 forbids it; PyYAML would keep the last
            problem(
                key_node.start_mark.line + 2,
                key_node.value,
                f"is given twice (also on line {line_of[key_node.value]}); keep one",
            )
        line_of.setdefault(key_node.value, key_node.start_mark.line + 2)

    for key, value in data.items():
        for path, message in value_problems(value):
            problem(line_of.get(str(key)), f"{key}{path}", message)
    for line, message in reference_problems(body, end + 2):
        problem(line, "body", message)

    for unknown in sorted(set(map(str, data)) - _FIELDS):
        problem(
            line_of.get(unknown),
            unknown,
            f"unknown field; known fields are {', '.join(sorted(_FIELDS))}",
        )

    title = _text(data, "title", line_of, problem, required=True)
    for message in title_problems(title or ""):
        problem(line_of.get("title"), "title", message)
    summary = _text(data, "summary", line_of, problem, required=True)
    published = _when(data, "published", line_of, problem, required=True)
    updated = _when(data, "updated", line_of, problem, required=False)
    if published and updated and updated < published:
        problem(line_of.get("updated"), "updated", "is earlier than 'published'; fix one of them")
    reviewed = _when(data, "reviewed", line_of, problem, required=False)
    if published and reviewed and reviewed < published:
        problem(line_of.get("reviewed"), "reviewed", "is earlier than 'published'; fix one of them")
    author = _text(data, "author", line_of, problem, required=False) or ""

    topics = _list(data, "topics", line_of, problem)
    for topic in topics:
        if not _SLUG.match(topic):
            problem(
                line_of.get("topics"),
                "topics",
                f"{topic!r} is not a slug; use lower-case words joined by hyphens",
            )
        elif known_topics and topic not in known_topics:
            problem(
                line_of.get("topics"),
                "topics",
                f"{topic!r} is not a known topic; use one of {', '.join(sorted(known_topics))} "
                "or add it under [topics] in pipeline.toml",
            )
    trials = _list(data, "trials", line_of, problem)
    for trial in trials:
        if not _NCT.match(trial):
            problem(
                line_of.get("trials"),
                "trials",
                f"{trial!r} is not an NCT id; write NCT followed by 8 digits",
            )

    therapy = _therapy(data.get("therapy"), line_of.get("therapy"), problem)
    draft = data.get("draft", False)
    if not isinstance(draft, bool):
        problem(line_of.get("draft"), "draft", "must be true or false")
        draft = False
    minor_edit = data.get("minor_edit", False)
    if not isinstance(minor_edit, bool):
        problem(line_of.get("minor_edit"), "minor_edit", "must be true or false")
        minor_edit = False
    explicit_id = data.get("id")
    if explicit_id is not None and (
        not isinstance(explicit_id, str) or ":" not in explicit_id or re.search(r"\s", explicit_id)
    ):
        problem(
            line_of.get("id"), "id", "must be an absolute IRI such as tag:example.org,2024:therapy"
        )
        explicit_id = None
    if not body.strip() and not draft:
        problem(end + 2, "body", "the article has no text below the front matter")

    if problems or title is None or summary is None or published is None:
        return None, problems

    content_hash = canonical_hash(
        {
            "title": title,
            "summary": summary,
            "published": published,
            "updated": updated,
            "topics": topics,
            "therapy": therapy,
            "trials": trials,
        },
        body,
    )
    article = Article(
        slug=slug,
        source=source,
        title=title,
        summary=summary,
        published=published,
        updated=updated,
        topics=tuple(topics),
        therapy=therapy,
        trials=tuple(trials),
        draft=draft,
        explicit_id=explicit_id,
        body_markdown=body,
        content_hash=content_hash,
        minor_edit=minor_edit,
        # The hash ledgers written before canonical hashing hold (see detect.py).
        former_hash=former_hash({k: v for k, v in data.items() if k != "id"}, raw_body),
        author=author,
        reviewed=reviewed,
    )
    return article, problems


def with_html(article: Article, base_url: str) -> Article:
    """The article with its body rendered (separate so unchanged articles can skip it)."""
    return render_article(article, base_url)


# --- field helpers -------------------------------------------------------------------------

Report = Any  # the local ``problem`` callback


def _text(
    data: dict[str, Any], name: str, line_of: dict[str, int], problem: Report, *, required: bool
) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            problem(None, name, f"is required; add a line '{name}: …' to the front matter")
        return None
    if not isinstance(value, str) or not value.strip():
        problem(line_of.get(name), name, "must be non-empty text")
        return None
    return " ".join(value.split())


EARLIEST_YEAR = 1900  # earlier dates are typos here, and feed validators call them implausible


def _when(
    data: dict[str, Any], name: str, line_of: dict[str, int], problem: Report, *, required: bool
) -> datetime | None:
    value = data.get(name)
    if value is None:
        if required:
            problem(None, name, f"is required; add '{name}: YYYY-MM-DD' (or a full ISO date-time)")
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            problem(
                line_of.get(name),
                name,
                f"{value!r} is not a date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ",
            )
            return None
    if not isinstance(value, date):
        problem(line_of.get(name), name, "must be a date such as 2024-05-01")
        return None
    try:
        if isinstance(value, datetime):
            when = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        else:
            when = datetime.combine(value, time(0, 0), tzinfo=UTC)
    except OverflowError:  # year 1 or 9999 shifted across midnight into UTC
        when = None
    if when is None or when.year < EARLIEST_YEAR:
        # Feeds, pages and tag ids write a four-digit year (RFC 822, RFC 3339, RFC 4151).
        problem(
            line_of.get(name),
            name,
            f"{value} is out of range; write a date from {EARLIEST_YEAR} to 9999",
        )
        return None
    return when


def _list(data: dict[str, Any], name: str, line_of: dict[str, int], problem: Report) -> list[str]:
    value = data.get(name, [])
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problem(line_of.get(name), name, "must be a list of text items, e.g. [a, b]")
        return []
    return [v.strip() for v in value]


def _therapy(value: Any, line: int | None, problem: Report) -> Therapy | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problem(line, "therapy", "must be a mapping with name, maker and brands")
        return None
    for unknown in sorted(set(map(str, value)) - _THERAPY_FIELDS):
        problem(line, f"therapy.{unknown}", "unknown field; use name, maker and brands")
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        problem(line, "therapy.name", "is required when 'therapy' is given")
        return None
    maker = value.get("maker", "")
    if not isinstance(maker, str):
        problem(line, "therapy.maker", "must be text")
        maker = ""
    brands = value.get("brands", [])
    if isinstance(brands, str):
        brands = [brands]
    if not isinstance(brands, list) or not all(isinstance(b, str) for b in brands):
        problem(line, "therapy.brands", "must be a list of brand names")
        brands = []
    # White space as a page shows it, so a double space is not an edit.
    return Therapy(
        name=" ".join(name.split()),
        maker=" ".join(maker.split()),
        brands=tuple(" ".join(b.split()) for b in brands),
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
