"""``pipeline check`` for the digest templates: everything wrong, with file and line.

The MJML compiler used here (mrml, through mjml-python) is lenient: an unknown tag, a
misspelt attribute or a column outside a section compile without a word, and the email
just looks wrong in some client. So the checks MJML's own strict validation would make are
made here, against the subset of MJML the digest may use (``pipeline.mjml_rules``):

1. **Jinja**: each template parses; it uses only the variables the digest provides; and it
   renders with sample data under ``StrictUndefined`` (a misspelt ``item.titel`` fails).
2. **The MJML source**, line by line: every ``mj-*`` tag is known, every attribute is one
   that tag takes, and colours, sizes, paddings and keywords are well formed. The same pass
   checks accessibility: ``lang`` on ``<mjml>``, ``alt`` on every image, text at least
   14 px (MJML's default is 13 px) and text contrast at least 4.5:1 against the background
   it sits on (WCAG AA), counting ``mj-attributes`` defaults and inline ``style`` colours.
3. **The rendered MJML** of a sample digest: every tag sits inside a parent MJML accepts
   (macros make that invisible in the source), ``lang`` is not empty, it compiles, and no
   ``{{``, ``{%`` or ``{#`` is left in the compiled HTML or the text.

Passes 2 and 3's MJML reading is :mod:`pipeline.mjml_check`; this module runs the Jinja
checks and the sample renders, and gathers every problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import jinja2
from jinja2 import meta, nodes

from pipeline.config import CONFIG_FILE, Settings
from pipeline.digest import EVERY_TOPIC, SLOTS
from pipeline.digest_context import Period, digest_context
from pipeline.digest_layout import Layout
from pipeline.digest_templates import (
    DISCLAIMER_MISSING,
    HTML_TEMPLATE,
    TEXT_TEMPLATE,
    TemplateRenderError,
    compile_mjml,
    missing_disclaimer,
    render_sources,
    template_environment,
)
from pipeline.disclaimer import Disclaimer, load_disclaimer
from pipeline.errors import Problem, TemplateError
from pipeline.mjml_check import check_rendered, check_source
from pipeline.models import Article, Audience, Entry, Therapy

__all__ = ["check_templates"]

# --- Jinja ------------------------------------------------------------------------------


def _sample_audience(settings: Settings) -> Audience:
    """Two sample articles, one new with a therapy and one updated without, to render."""
    when = datetime(2026, 1, 2, tzinfo=UTC)
    topic = next(iter(settings.topics), "sample")

    def entry(slug: str, therapy: Therapy | None) -> Entry:
        article = Article(
            slug, "(sample)", f"Sample {slug}: a title about a therapy", "A one-line summary.",
            when, None, (topic,), therapy, (), False, None, "", "",
        )  # fmt: skip
        return Entry(
            article, f"tag:sample:{slug}", f"{settings.base_url}articles/{slug}/", when, when
        )

    new = entry("new", Therapy("Samplumab", "Example Pharma", ("Samplex",)))
    return Audience(EVERY_TOPIC, frozenset(), (new,), (entry("updated", None),))


def _first_line(ast: nodes.Template, name: str) -> int | None:
    return next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), None)


def _check_variables(env: jinja2.Environment, name: str, known: Iterable[str]) -> list[Problem]:
    file = f"templates/{name}"
    assert env.loader is not None
    try:
        source = env.loader.get_source(env, name)[0]
        ast = env.parse(source)
    except jinja2.TemplateNotFound:
        return [Problem(file, None, None, "missing")]
    except jinja2.TemplateSyntaxError as exc:
        return [Problem(file, exc.lineno, None, exc.message or "syntax error")]
    known = sorted(known)
    return [
        Problem(
            file, _first_line(ast, var), var, f"unknown variable; use one of {', '.join(known)}"
        )
        for var in sorted(meta.find_undeclared_variables(ast) - set(known))
    ]


def check_templates(settings: Settings) -> list[Problem]:
    """Every problem in the digest templates (see the module docstring), empty when sound."""
    templates = settings.paths.templates
    try:
        disclaimer = load_disclaimer(templates, settings.base_url)
    except TemplateError as exc:
        return [Problem("templates/disclaimer.md", None, None, str(exc))]
    env = template_environment(str(templates))
    audience = _sample_audience(settings)
    placeholders = {name: f"sample-{name}" for name in SLOTS}
    try:
        context = digest_context(audience, settings, disclaimer, placeholders)
    except TemplateError as exc:
        return [Problem(CONFIG_FILE, None, "[digest] subject", str(exc))]
    jinja_problems = [
        p for name in (HTML_TEMPLATE, TEXT_TEMPLATE) for p in _check_variables(env, name, context)
    ]
    mjml_file = f"templates/{HTML_TEMPLATE}"
    if any(p.file == mjml_file and p.field is None for p in jinja_problems):
        return jinja_problems  # missing or not parsable: nothing more to read
    assert env.loader is not None
    raw_source = env.loader.get_source(env, HTML_TEMPLATE)[0]
    problems = jinja_problems + check_source(raw_source, mjml_file)
    if jinja_problems:
        return problems  # rendering would only fail on the same unknown variables
    try:
        mjml_source, text = render_sources(env, context)
    except TemplateRenderError as exc:
        return [*problems, Problem(exc.file, exc.line, None, exc.detail)]
    problems += check_rendered(mjml_source, mjml_file)
    problems += _leftovers(f"templates/{TEXT_TEMPLATE}", text)
    problems += _check_periodic(env, audience, settings, disclaimer, placeholders)
    try:
        html = compile_mjml(mjml_source)
    except TemplateError as exc:
        return [*problems, Problem(mjml_file, None, None, str(exc).split(": ", 1)[-1])]
    problems += [
        Problem(file, None, None, DISCLAIMER_MISSING)
        for file in missing_disclaimer(html, text, disclaimer)
    ]
    problems += _check_variants(env, audience, settings, disclaimer, placeholders)
    return problems + _leftovers(mjml_file, html)


def _check_periodic(
    env: jinja2.Environment,
    audience: Audience,
    settings: Settings,
    disclaimer: Disclaimer,
    placeholders: dict[str, str],
) -> list[Problem]:
    """The daily, weekly and monthly digests' subject and their branch of the templates."""
    try:
        context = digest_context(
            audience,
            settings,
            disclaimer,
            placeholders,
            Period("weekly", "23\N{EN DASH}29 November"),
        )
        render_sources(env, context)
    except TemplateRenderError as exc:
        return [Problem(exc.file, exc.line, None, exc.detail)]
    except TemplateError as exc:
        return [Problem(CONFIG_FILE, None, "[digest] periodic_subject", str(exc))]
    return []


def _check_variants(
    env: jinja2.Environment,
    audience: Audience,
    settings: Settings,
    disclaimer: Disclaimer,
    placeholders: dict[str, str],
) -> list[Problem]:
    """Render the branches a sample digest does not reach: articles collapsed past the
    clipping budget, and the web edition, which may use no personal slot."""
    total = len(audience.new) + len(audience.updated)
    variants = (
        (Layout(total, 0, max(0, total - 1)), True),
        (Layout(total, total), False),
    )
    problems: list[Problem] = []
    for layout, personal in variants:
        context = digest_context(
            audience, settings, disclaimer, placeholders, None, layout, personal=personal
        )
        try:
            sources = render_sources(env, context)
            html = compile_mjml(sources[0])
        except TemplateError as exc:  # a render error names its own file and line
            problems.append(Problem(f"templates/{HTML_TEMPLATE}", None, None, str(exc)))
            continue
        if not personal and "sample-" in html:
            message = "the web copy (personal false) shows a personal value; keep every "
            message += "slot.* inside {% if personal %}"
            problems.append(Problem(f"templates/{HTML_TEMPLATE}", None, None, message))
    return problems


def _leftovers(file: str, output: str) -> list[Problem]:
    """Template syntax that reached the output: a tag someone forgot to close, or escaped."""
    return [
        Problem(file, None, None, f"{mark!r} is left in the output; close the tag")
        for mark in ("{{", "{%", "{#")
        if mark in output
    ]
