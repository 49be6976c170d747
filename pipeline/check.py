"""``pipeline check``: every problem in the configuration, templates, articles and lists.

Nothing is written and nothing is sent. Each check returns ``Problem`` values, so the
editor sees everything that is wrong in one go, as ``file:line: field: what to fix``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from pipeline.articles import article_url, load_articles
from pipeline.authoring import placeholder_problems
from pipeline.config import CONFIG_FILE, Settings, load_settings, require_project, secret_key
from pipeline.digest import EVERY_TOPIC, render_audience
from pipeline.digest_layout import describe
from pipeline.digest_templates import template_environment
from pipeline.disclaimer import load_disclaimer
from pipeline.errors import ConfigError, PipelineError, Problem
from pipeline.messages import email_settings_problems
from pipeline.models import Audience, Entry
from pipeline.store import open_ledger
from pipeline.subscriber_plans import without_erased
from pipeline.subscribers import SubscriberList, load_subscribers
from pipeline.template_check import check_templates
from pipeline.tokens import key_fingerprint
from pipeline.vetting import locate, vet_articles
from pipeline.webhooks import webhook_problems

__all__ = ["check_project", "digest_size_line", "load_checked", "problem_from_error"]

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


def check_project(settings: Settings, *, now: datetime | None = None) -> list[Problem]:
    """Validate the environment, templates, articles and subscriber lists; report them all.

    The articles go through the same checks as ``publish`` at ``now`` (default: the
    clock), against the ledger read-only: what one refuses, the other reports.
    """
    paths = settings.paths
    topics = frozenset(settings.topics)
    articles = load_articles(paths.articles, paths.root, known_topics=topics)
    with open_ledger(settings, read_only=True) as ledger:
        _, vetted = vet_articles(
            articles.articles,
            ledger.known_articles(),
            retired=ledger.retired_ids(),
            now=now or datetime.now(UTC),
            base_url=settings.base_url,
            root=paths.root,
        )
    lists = load_subscribers(paths.subscribers, paths.root, known_topics=topics)
    return [
        *_check_environment(settings),
        *check_templates(settings),
        *email_settings_problems(settings),
        *webhook_problems(),
        *_in_file_order(
            locate(
                [*articles.problems, *vetted, *placeholder_problems(articles.articles)],
                paths.root,
            )
        ),
        *lists.problems,
        *(p for p in lists.unusable if p not in lists.problems),  # what stops a publish
        *_check_erasures(settings, lists),
    ]


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """By file, then line; problems without a line (a missing field) come first in a file."""
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def _check_erasures(settings: Settings, lists: SubscriberList) -> list[Problem]:
    """List rows naming a forgotten address (their data should go too), and forgotten
    addresses hashed under another secret key (they no longer match, so a list still
    naming one would add it again)."""
    try:
        location = settings.ledger_location()
        if isinstance(location, str):
            secret_key(settings)
    except ConfigError:
        return []  # reported by _check_environment
    if isinstance(location, Path) and not location.exists():
        return []
    with open_ledger(settings, read_only=True) as ledger:
        fingerprints = ledger.erased_fingerprints()
        erased = ledger.erased_hashes()
    if not fingerprints:
        return []
    key = secret_key(settings)
    kept = {e.source for e in without_erased(lists.entries, erased, key)}
    problems = [
        Problem(
            file,
            int(line),
            "email",
            "this address asked to be forgotten (`pipeline subscribers forget`); "
            "delete the line, it is never mailed",
        )
        for file, _, line in (e.source.rpartition(":") for e in lists.entries)
        if f"{file}:{line}" not in kept
    ]
    if fingerprints == {key_fingerprint(key)}:
        return problems
    return [
        *problems,
        Problem(
            "PIPELINE_SECRET_KEY",
            None,
            None,
            "some forgotten addresses were hashed under an earlier secret key and no longer "
            "match; restore that key, or make sure no list names those people",
        ),
    ]


def _check_environment(settings: Settings) -> list[Problem]:
    problems = []
    try:
        settings.smtp_target()
    except ConfigError as exc:
        problems.append(Problem("PIPELINE_SMTP_URL", None, None, str(exc)))
    try:
        if isinstance(settings.ledger_location(), str):
            secret_key(settings)  # a shared ledger needs the key from the environment
    except ConfigError as exc:
        variable = "PIPELINE_SECRET_KEY" if "SECRET_KEY" in str(exc) else "PIPELINE_DATABASE_URL"
        problems.append(Problem(variable, None, None, str(exc)))
    return problems


def digest_size_line(settings: Settings) -> str | None:
    """The size of the largest digest the articles can make (every valid, non-draft article
    new at once, for a reader of every topic) against the clipping budget; None when the
    articles or templates cannot render (``check_project`` reports why)."""
    paths = settings.paths
    loaded = load_articles(paths.articles, paths.root, known_topics=settings.topics)
    entries = tuple(
        Entry(
            a,
            article_url(settings.base_url, a.slug),
            article_url(settings.base_url, a.slug),
            a.published,
            a.updated or a.published,
        )
        for a in sorted(loaded.articles, key=lambda a: (a.published, a.slug), reverse=True)
        if not a.draft
    )
    if not entries:
        return None
    try:
        disclaimer = load_disclaimer(paths.templates, settings.base_url)
        env = template_environment(str(paths.templates))
        audience = Audience(EVERY_TOPIC, frozenset(), entries, ())
        compiled = render_audience(audience, settings, disclaimer, env, "check")
    except PipelineError:
        return None
    return "Largest digest: " + describe(compiled.html_bytes, compiled.layout)
