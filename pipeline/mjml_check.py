"""The MJML checks of ``pipeline check``, passes 2 and 3 of :mod:`pipeline.template_check`:
the source read line by line against the subset of MJML the digest may use
(:mod:`pipeline.mjml_rules`: tags, attributes, value forms, accessibility: ``lang``, ``alt``,
font size, WCAG AA contrast), and the rendered source's nesting.

Each function returns every ``Problem`` found, with the template file and line, the tag or
attribute, and the fix; an empty list when the MJML is sound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from pipeline.errors import Problem
from pipeline.mjml_rules import (
    COMPONENTS,
    EVERY_ATTRIBUTE,
    MIN_CONTRAST,
    MIN_FONT_PX,
    MJML_DEFAULTS,
    contrast_ratio,
    value_rule,
)

__all__ = ["check_rendered", "check_source"]

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


def check_source(source: str, file: str) -> list[Problem]:
    """Pass 2: the MJML ``source`` of template ``file`` (Jinja left in), tag by tag."""
    return _SourceChecker(_parse(source), file).check()


def check_rendered(source: str, file: str) -> list[Problem]:
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
