"""``pipeline new "Title"``: start an article with its front matter filled in.

The new file is a draft (``draft: true``): a half-written article cannot reach the feeds
or anyone's inbox until the editor says it is ready.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from pipeline.atomic import write_new
from pipeline.config import Settings
from pipeline.errors import PipelineError, Problem
from pipeline.models import Article

__all__ = ["article_template", "create_article", "placeholder_problems", "slugify"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
MAX_SLUG = 60
PLACEHOLDER_SUMMARY = "One or two plain-language sentences for the feeds and the digest."
PLACEHOLDER_BODY = "Write the article here, in Markdown."


def slugify(title: str) -> str:
    """Lower-case ASCII words joined by hyphens: "Tocilizumab & SSc-ILD" -> "tocilizumab-ssc-ild".

    Accents are dropped ("Chloé" -> "chloe"); long titles are cut at a word boundary.
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SLUG.sub("-", ascii_title.lower()).strip("-")
    if len(slug) > MAX_SLUG:
        cut = slug[: MAX_SLUG + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:MAX_SLUG]
    return slug.strip("-")


def _quoted(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: colons, quotes and '#' stay text.
    return json.dumps(text, ensure_ascii=False)


def article_template(title: str, today: date, topics: Iterable[str] = ()) -> str:
    """The text of a new article: front matter with the title, today's date and a draft flag."""
    topic_list = ", ".join(topics)
    return (
        "---\n"
        f"title: {_quoted(title)}\n"
        f"summary: {_quoted(PLACEHOLDER_SUMMARY)}\n"
        f"published: {today.isoformat()}\n"
        f"topics: [{topic_list}]\n"
        "# therapy: {name: Nintedanib, maker: Boehringer Ingelheim, brands: [Ofev]}\n"
        "# trials: [NCT02597933]\n"
        "draft: true  # set to false when the article is ready to publish\n"
        "---\n"
        "\n"
        "## What it is\n"
        "\n"
        f"{PLACEHOLDER_BODY}\n"
    )


def create_article(
    settings: Settings,
    title: str,
    *,
    today: date,
    topics: Iterable[str] = (),
    slug: str | None = None,
) -> Path:
    """Create ``articles/<slug>.md`` for ``title``; never overwrite an existing file."""
    clean_title = " ".join(title.split())
    if not clean_title:
        raise PipelineError("the title is empty; give the article's title in quotes")
    slug = slug or slugify(clean_title)
    if not slug or slugify(slug) != slug:
        raise PipelineError(
            f"cannot make a file name from {slug or clean_title!r}; "
            "give one with --slug, in lower-case letters, digits and hyphens"
        )
    chosen = tuple(topics)
    unknown = [t for t in chosen if settings.topics and t not in settings.topics]
    if unknown:
        raise PipelineError(
            f"unknown topic {unknown[0]!r}; use one of {', '.join(sorted(settings.topics))} "
            "or add it under [topics] in pipeline.toml"
        )
    directory = settings.paths.articles
    target = directory / f"{slug}.md"
    text = article_template(clean_title, today, chosen)
    directory.mkdir(parents=True, exist_ok=True)
    _create_exclusively(target, text.encode("utf-8"))
    return target


def placeholder_problems(articles: Iterable[Article]) -> list[Problem]:
    """Articles about to be published that still hold the text ``pipeline new`` put there."""
    problems: list[Problem] = []
    for article in articles:
        if article.draft:
            continue
        if article.summary == PLACEHOLDER_SUMMARY:
            problems.append(
                Problem(
                    article.source, None, "summary", "still the placeholder; summarise the article"
                )
            )
        if PLACEHOLDER_BODY in article.body_markdown:
            problems.append(
                Problem(
                    article.source,
                    None,
                    "body",
                    f"still says {PLACEHOLDER_BODY!r}; write the article",
                )
            )
    return problems


def _create_exclusively(target: Path, data: bytes) -> None:
    """Write whole, and only if ``target`` does not exist."""
    try:
        write_new(target, data)
    except FileExistsError as exc:
        raise PipelineError(
            f"{target.parent.name}/{target.name} already exists; edit it, or choose "
            "another title or --slug"
        ) from exc
