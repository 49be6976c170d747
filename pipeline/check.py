"""``pipeline check``: every problem in the configuration, templates, articles and lists.

Nothing is written and nothing is sent. Each check returns ``Problem`` values, so the
editor sees everything that is wrong in one go, as ``file:line: field: what to fix``.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from pipeline.articles import article_url, load_articles
from pipeline.authoring import placeholder_problems
from pipeline.config import CONFIG_FILE, Settings, load_settings, require_project
from pipeline.digest import plan_digest
from pipeline.disclaimer import load_disclaimer
from pipeline.errors import ConfigError, PipelineError, Problem
from pipeline.models import Article, Changes, Entry, Subscriber, Therapy
from pipeline.subscribers import load_subscribers

__all__ = ["check_project", "compile_sample_digest", "load_checked", "problem_from_error"]

# "path:line: message" or "path: message", as the library's error messages are written.
_LOCATED = re.compile(r"^(?P<file>[^\s:]+)(?::(?P<line>\d+))?: (?P<message>.+)$", re.DOTALL)


def problem_from_error(error: PipelineError, default_file: str) -> Problem:
    """A ``Problem`` from an error whose message starts with ``file[:line]:``."""
    text = str(error)
    match = _LOCATED.match(text)
    if match is None:
        return Problem(default_file, None, None, text)
    line = match["line"]
    return Problem(match["file"], int(line) if line else None, None, match["message"])


def load_checked(root: Path) -> tuple[Settings | None, list[Problem]]:
    """The project's settings, or the configuration problem that stops them loading.

    Raises ``ConfigError`` when ``root`` is not a project folder at all.
    """
    project = require_project(root)
    try:
        return load_settings(project), []
    except ConfigError as exc:
        return None, [problem_from_error(exc, CONFIG_FILE)]


def check_project(settings: Settings) -> list[Problem]:
    """Validate the environment, templates, articles and subscriber lists; report them all."""
    paths = settings.paths
    topics = frozenset(settings.topics)
    articles = load_articles(paths.articles, paths.root, known_topics=topics)
    return [
        *_check_environment(settings),
        *compile_sample_digest(settings),
        *_in_file_order([*articles.problems, *placeholder_problems(articles.articles)]),
        *load_subscribers(paths.subscribers, paths.root, known_topics=topics).problems,
    ]


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """By file, then line; problems without a line (a missing field) come first in a file."""
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def _check_environment(settings: Settings) -> list[Problem]:
    try:
        settings.smtp_target()
    except ConfigError as exc:
        return [Problem("PIPELINE_SMTP_URL", None, None, str(exc))]
    return []


def compile_sample_digest(settings: Settings) -> list[Problem]:
    """Render the digest templates once against a sample article, new and updated.

    This is the template check's single seam: a stricter check (MJML warnings, unknown
    variables) replaces this call without touching the rest of ``check_project``.
    """
    try:
        disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
        plan_digest(_sample_changes(settings), [_SAMPLE_READER], settings, disclaimer)
    except PipelineError as exc:
        problem = problem_from_error(exc, "templates")
        if problem.line is None and exc.__cause__ is not None:
            problem = replace(problem, line=_template_line(exc.__cause__, problem.file))
        return [problem]
    except jinja2.TemplateError as exc:  # raised at render time, beyond syntax errors
        return [Problem("templates", None, None, f"a template fails to render: {exc}")]
    return []


def _template_line(error: BaseException, template: str) -> int | None:
    """The template line an error was raised at: Jinja maps its frames onto the file."""
    line = None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename.endswith(template.removeprefix("templates/")):
            line = lineno
    return line


_SAMPLE_READER = Subscriber("reader@example.org", "Sample Reader")


def _sample_changes(settings: Settings) -> Changes:
    when = datetime(2000, 1, 1, tzinfo=UTC)
    topics = tuple(sorted(settings.topics))[:1]

    def entry(slug: str, title: str) -> Entry:
        article = Article(
            slug=slug,
            source=f"articles/{slug}.md",
            title=title,
            summary="A sample summary, used only to check that the templates render.",
            published=when,
            updated=None,
            topics=topics,
            therapy=Therapy("Sample therapy", "Sample maker", ("Sample brand",)),
            trials=("NCT00000000",),
            draft=False,
            explicit_id=None,
            body_markdown="Sample text.\n",
            content_hash=slug,
            html="<p>Sample text.</p>",
        )
        url = article_url(settings.base_url, slug)
        return Entry(article, f"tag:example.org,2000:{slug}", url, when, when)

    return Changes(
        new=(entry("sample-new", "A sample new article"),),
        updated=(entry("sample-updated", "A sample updated article"),),
    )
