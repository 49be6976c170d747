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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser

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
from pipeline.mjml_rules import (
    COMPONENTS,
    EVERY_ATTRIBUTE,
    MIN_CONTRAST,
    MIN_FONT_PX,
    MJML_DEFAULTS,
    contrast_ratio,
    value_rule,
)
from pipeline.models import Article, Audience, Entry, Therapy

__all__ = ["check_templates"]

# --- the MJML tree --------------------------------------------------------------------------


@dataclass(slots=True)
class _Element:
    tag: str
    attrs: dict[str, str]
    line: int
    parent: _Element | None

    @property
    def is_mjml(self) -> bool:
        return self.tag == "mjml" or self.tag.startswith("mj-")


@dataclass(slots=True)
class _Tree:
    elements: list[_Element] = field(default_factory=list)
    stray_closers: list[tuple[int, str]] = field(default_factory=list)


class _Collector(HTMLParser):
    """Every element with its nearest enclosing MJML element; HTML inside is kept flat."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tree = _Tree()
        self._stack: list[_Element] = []

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        parent = self._stack[-1] if self._stack else None
        element = _Element(tag, {k: v or "" for k, v in attrs}, self.getpos()[0], parent)
        self.tree.elements.append(element)
        if element.is_mjml and not closed:
            self._stack.append(element)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if not (tag == "mjml" or tag.startswith("mj-")):
            return
        if any(e.tag == tag for e in self._stack):
            while self._stack.pop().tag != tag:
                pass
        else:
            self.tree.stray_closers.append((self.getpos()[0], tag))


def _parse(source: str) -> _Tree:
    collector = _Collector()
    collector.feed(source)
    collector.close()
    return collector.tree


def _has_jinja(value: str) -> bool:
    return "{{" in value or "{%" in value


def _px(value: str) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(px)?", value.strip())
    return float(match.group(1)) if match else None


def _style(attrs: dict[str, str]) -> dict[str, str]:
    pairs = (item.partition(":") for item in attrs.get("style", "").split(";"))
    return {k.strip().lower(): v.strip() for k, _, v in pairs if v.strip()}


class _SourceChecker:
    """Pass 2 of the module docstring: tags, attributes, values and accessibility."""

    def __init__(self, tree: _Tree, file: str) -> None:
        self.tree = tree
        self.file = file
        self.problems: list[Problem] = []
        self.defaults: dict[str, dict[str, str]] = {}
        self.body_background = "#ffffff"
        for element in tree.elements:
            if element.parent is not None and element.parent.tag == "mj-attributes":
                self.defaults.setdefault(element.tag, {}).update(element.attrs)
            if element.tag == "mj-body" and "background-color" in element.attrs:
                self.body_background = element.attrs["background-color"]

    def report(self, element: _Element, message: str) -> None:
        self.problems.append(Problem(self.file, element.line, f"<{element.tag}>", message))

    def attribute(self, element: _Element, name: str) -> str:
        for source in (element.attrs, self.defaults.get(element.tag, {})):
            if name in source:
                return source[name]
        if name not in ("color", "background-color"):  # mj-all sets fonts, not colours
            all_defaults = self.defaults.get("mj-all", {})
            if name in all_defaults:
                return all_defaults[name]
        return MJML_DEFAULTS.get(element.tag, {}).get(name, "")

    def background(self, element: _Element) -> str:
        if element.tag == "mj-button":
            return self.attribute(element, "background-color")
        if element.attrs.get("container-background-color"):
            return element.attrs["container-background-color"]
        ancestor = element.parent
        while ancestor is not None:
            if ancestor.attrs.get("background-color"):
                return ancestor.attrs["background-color"]
            ancestor = ancestor.parent
        return self.body_background  # a macro's section is placed in the body

    def check(self) -> list[Problem]:
        for line, tag in self.tree.stray_closers:
            self.problems.append(Problem(self.file, line, f"</{tag}>", "closes no open tag"))
        for element in self.tree.elements:
            if element.is_mjml:
                self._check_component(element)
            else:
                self._check_html(element)
        return self.problems

    def _check_component(self, element: _Element) -> None:
        component = COMPONENTS.get(element.tag)
        if component is None:
            self.report(element, f"unknown MJML tag; the digest may use {', '.join(COMPONENTS)}")
            return
        in_defaults = element.parent is not None and element.parent.tag == "mj-attributes"
        allowed = EVERY_ATTRIBUTE if element.tag == "mj-all" else component.attributes
        for name, value in element.attrs.items():
            if name not in allowed:
                self.report(element, f"unknown attribute {name!r}; MJML would ignore it")
            elif (
                (rule := value_rule(name))
                and not _has_jinja(value)
                and not rule[0].fullmatch(value.strip())
            ):
                self.report(element, f"{name}={value!r} is not valid; write {rule[1]}")
        if element.tag == "mjml" and "lang" not in element.attrs:
            self.report(element, 'set lang="…" so screen readers pronounce the text right')
        if element.tag == "mj-image" and "alt" not in element.attrs:
            self.report(element, 'add alt="…" describing the image (alt="" if decorative)')
        if element.tag in MJML_DEFAULTS and not in_defaults:
            self._check_text(element, self.attribute(element, "color"))

    def _check_text(self, element: _Element, color: str) -> None:
        size = self.attribute(element, "font-size")
        px = _px(size) if size and not _has_jinja(size) else None
        if px is not None and px < MIN_FONT_PX:
            self.report(element, f"font-size {size} is below {MIN_FONT_PX:g}px; use 14px or more")
        background = self.background(element)
        ratio = contrast_ratio(color, background)
        if ratio is not None and ratio < MIN_CONTRAST:
            self.report(
                element,
                f"text {color} on {background} has contrast {ratio:.2f}:1; "
                f"it needs {MIN_CONTRAST}:1 (darken the text or lighten the background)",
            )

    def _check_html(self, element: _Element) -> None:
        if element.tag == "img" and "alt" not in element.attrs:
            self.report(element, 'add alt="…" describing the image (alt="" if decorative)')
        container = element.parent
        if container is None or container.tag not in MJML_DEFAULTS:
            return
        style = _style(element.attrs)
        size = style.get("font-size", "")
        px = _px(size) if size else None
        if px is not None and px < MIN_FONT_PX:
            self.report(element, f"font-size {size} is below {MIN_FONT_PX:g}px; use 14px or more")
        if "color" in style:
            background = self.background(container)
            ratio = contrast_ratio(style["color"], background)
            if ratio is not None and ratio < MIN_CONTRAST:
                self.report(
                    element,
                    f"text {style['color']} on {background} has contrast {ratio:.2f}:1; "
                    f"it needs {MIN_CONTRAST}:1",
                )


def _check_rendered(source: str, file: str) -> list[Problem]:
    """Pass 3: the nesting MJML accepts, on the rendered source (macros expanded)."""
    problems = []
    for element in _parse(source).elements:
        component = COMPONENTS.get(element.tag)
        if component is None:
            continue  # HTML inside an ending tag, or an unknown tag reported in pass 2
        parent = element.parent.tag if element.parent is not None else ""
        if parent == "mj-attributes" and component.attributes:
            where = ""  # a component's defaults
        elif parent in COMPONENTS and COMPONENTS[parent].ending:
            where = f"inside <{parent}>, whose content is HTML"
        elif parent not in component.parents:
            where = f"inside <{parent or 'nothing'}>"
        else:
            where = ""
        if where:
            expected = " or ".join(f"<{p}>" for p in sorted(component.parents) if p)
            problems.append(
                Problem(
                    file,
                    None,
                    f"<{element.tag}>",
                    f"(rendered line {element.line}) {where}; it belongs in {expected or 'no parent'}",
                )
            )
        if element.tag == "mjml" and not element.attrs.get("lang", "").strip():
            problems.append(Problem(file, None, "<mjml>", "lang is empty; set [site] language"))
    return problems


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
    problems = jinja_problems + _SourceChecker(_parse(raw_source), mjml_file).check()
    if jinja_problems:
        return problems  # rendering would only fail on the same unknown variables
    try:
        mjml_source, text = render_sources(env, context)
    except TemplateRenderError as exc:
        return [*problems, Problem(exc.file, exc.line, None, exc.detail)]
    problems += _check_rendered(mjml_source, mjml_file)
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
