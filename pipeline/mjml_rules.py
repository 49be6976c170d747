"""The subset of MJML the digest may use, and the rules its values must follow.

MJML's own strict validation knows every component's attributes and allowed parents; the
compiler used here (mrml) does not check them, so ``pipeline.template_check`` checks the
digest against this table. It lists the components a newsletter needs (add a row to use
another), each with the parents MJML accepts and the attributes it documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "COMPONENTS",
    "EVERY_ATTRIBUTE",
    "MIN_CONTRAST",
    "MIN_FONT_PX",
    "MJML_DEFAULTS",
    "Component",
    "contrast_ratio",
    "value_rule",
]

MIN_FONT_PX = 14.0
MIN_CONTRAST = 4.5

_PADDING = {"padding", "padding-top", "padding-bottom", "padding-left", "padding-right"}
_BORDER = {"border", "border-top", "border-bottom", "border-left", "border-right", "border-radius"}
_CLASS = {"css-class", "mj-class"}
_FONT = {
    "color", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "letter-spacing", "text-decoration", "text-transform", "align", "container-background-color",
}  # fmt: skip
_SECTION = _PADDING | _BORDER | _CLASS | {
    "background-color", "background-url", "background-repeat", "background-size",
    "background-position", "direction", "full-width", "text-align",
}  # fmt: skip
_CONTENT_PARENTS = frozenset({"mj-column", "mj-hero"})
_HEAD = frozenset({"mj-head"})


@dataclass(frozen=True, slots=True)
class Component:
    parents: frozenset[str]
    attributes: frozenset[str] = frozenset()
    ending: bool = False  # its content is HTML, not more MJML


COMPONENTS: dict[str, Component] = {
    "mjml": Component(frozenset({""}), frozenset({"lang", "dir", "owa"})),
    "mj-head": Component(frozenset({"mjml"})),
    "mj-body": Component(
        frozenset({"mjml"}), frozenset({"background-color", "css-class", "width"})
    ),
    "mj-title": Component(_HEAD, ending=True),
    "mj-preview": Component(_HEAD, ending=True),
    "mj-attributes": Component(_HEAD),
    "mj-style": Component(_HEAD, frozenset({"inline"}), ending=True),
    "mj-font": Component(_HEAD, frozenset({"name", "href"})),
    "mj-breakpoint": Component(_HEAD, frozenset({"width"})),
    "mj-raw": Component(
        frozenset({"mj-head", "mj-body", "mj-wrapper", "mj-section", "mj-column"}),
        frozenset({"position"}),
        ending=True,
    ),
    "mj-wrapper": Component(frozenset({"mj-body"}), frozenset(_SECTION | {"gap"})),
    "mj-section": Component(frozenset({"mj-body", "mj-wrapper"}), frozenset(_SECTION)),
    "mj-group": Component(
        frozenset({"mj-section"}),
        frozenset(_CLASS | {"width", "vertical-align", "background-color", "direction"}),
    ),
    "mj-column": Component(
        frozenset({"mj-section", "mj-group"}),
        frozenset(
            _PADDING
            | _BORDER
            | _CLASS
            | {"background-color", "inner-background-color", "width", "vertical-align"}
        ),
    ),
    "mj-text": Component(
        _CONTENT_PARENTS, frozenset(_FONT | _PADDING | _CLASS | {"height"}), ending=True
    ),
    "mj-button": Component(
        _CONTENT_PARENTS,
        frozenset(
            _FONT
            | _PADDING
            | _BORDER
            | _CLASS
            | {"background-color", "height", "href", "inner-padding", "rel", "target"}
            | {"title", "text-align", "vertical-align", "width", "name"}
        ),
        ending=True,
    ),
    "mj-image": Component(
        _CONTENT_PARENTS,
        frozenset(
            _PADDING
            | _CLASS
            | {"align", "alt", "border", "border-radius", "container-background-color"}
            | {"fluid-on-mobile", "height", "href", "name", "rel", "sizes", "src", "srcset"}
            | {"target", "title", "usemap", "width"}
        ),
    ),
    "mj-divider": Component(
        _CONTENT_PARENTS,
        frozenset(
            _PADDING
            | _CLASS
            | {"align", "border-color", "border-style", "border-width", "width"}
            | {"container-background-color"}
        ),
    ),
    "mj-spacer": Component(
        _CONTENT_PARENTS, frozenset(_PADDING | _CLASS | {"height", "container-background-color"})
    ),
}
EVERY_ATTRIBUTE = frozenset().union(*(c.attributes for c in COMPONENTS.values()))
COMPONENTS["mj-all"] = Component(frozenset({"mj-attributes"}), EVERY_ATTRIBUTE)
COMPONENTS["mj-class"] = Component(frozenset({"mj-attributes"}), EVERY_ATTRIBUTE | {"name"})
# MJML's own defaults where the template sets nothing.
MJML_DEFAULTS = {
    "mj-text": {"font-size": "13px", "color": "#000000"},
    "mj-button": {"font-size": "13px", "color": "#ffffff", "background-color": "#414141"},
}

_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})|rgba?\([\d.,\s%]+\)|[a-zA-Z]+")
_LENGTH = r"-?\d+(?:\.\d+)?(?:px|%|em)?"
_VALUE_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "size": (re.compile(_LENGTH), "a number of px or %, like 16px"),
    "padding": (re.compile(rf"{_LENGTH}(?:\s+{_LENGTH}){{0,3}}"), "one to four lengths"),
    "align": (re.compile(r"left|right|center|justify"), "left, right, center or justify"),
    "vertical-align": (re.compile(r"top|bottom|middle"), "top, bottom or middle"),
    "font-weight": (re.compile(r"normal|bold|bolder|lighter|[1-9]00"), "normal, bold or 100-900"),
    "text-transform": (re.compile(r"uppercase|lowercase|capitalize|none"), "a text-transform"),
    "direction": (re.compile(r"ltr|rtl"), "ltr or rtl"),
    "color": (_COLOR, "a colour like #1b2a3a"),
}
_SIZE_ATTRIBUTES = {
    "font-size",
    "letter-spacing",
    "line-height",
    "width",
    "height",
    "border-radius",
}


def value_rule(attribute: str) -> tuple[re.Pattern[str], str] | None:
    if attribute.endswith("color"):
        return _VALUE_RULES["color"]
    if attribute in _SIZE_ATTRIBUTES:
        return _VALUE_RULES["size"]
    if attribute in _PADDING or attribute == "inner-padding":
        return _VALUE_RULES["padding"]
    return _VALUE_RULES.get(attribute)


# --- colours --------------------------------------------------------------------------------

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}


def _rgb(value: str) -> tuple[int, int, int] | None:
    value = value.strip().lower()
    if value in _NAMED:
        return _NAMED[value]
    if re.fullmatch(r"#[0-9a-f]{3}", value):
        return (int(value[1] * 2, 16), int(value[2] * 2, 16), int(value[3] * 2, 16))
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    return None  # rgb() and other names: not judged


def contrast_ratio(foreground: str, background: str) -> float | None:
    """WCAG 2 contrast ratio of two CSS colours (hex or white/black), None if unknown."""
    colours = _rgb(foreground), _rgb(background)
    if colours[0] is None or colours[1] is None:
        return None

    def luminance(rgb: tuple[int, int, int]) -> float:
        linear = [(c / 255) / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(colours[0]), luminance(colours[1])), reverse=True)
    return (light + 0.05) / (dark + 0.05)
