"""Markdown to sanitised HTML: CommonMark with GFM tables and footnotes, by cmark-gfm,
and definition lists, by markdown-it-py's deflist plugin (cmark-gfm has none).

``render_markdown(text, page_url, media=...)`` returns HTML that is safe to embed: nh3 keeps
a small allow-list of tags and attributes (no script, style, iframe, form, event handler or
``style`` attribute), and every link and image URL is made absolute against the page, or,
for a file of the article's bundle, replaced by that file's published URL.

Footnotes come out as cmark-gfm writes them (GitHub's form): a numbered superscript link
``<sup class="footnote-ref"><a href="#fn-1" id="fnref-1">1</a></sup>`` and, at the end, a
``<section class="footnotes">`` list whose items link back. ``plain_footnotes`` turns that
into plain numbered notes for feeds, where fragment links would leave the reader's app.

``references(html)`` lists the images and links of rendered (not yet sanitised) HTML, so the
loader can check that bundle files exist and that every image has alternative text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import cmarkgfm
import nh3
from cmarkgfm.cmark import Options
from markdown_it import MarkdownIt
from mdit_py_plugins.deflist import deflist_plugin

from pipeline.text_rules import drop_unsafe_references, strip_unsafe, valid_url

__all__ = [
    "Reference",
    "definition_lists",
    "is_relative",
    "markdown_to_html",
    "plain_footnotes",
    "references",
    "render_markdown",
    "sanitize_html",
    "strip_control_chars",
]


# CommonMark with GitHub's tables and footnotes, by cmark-gfm (C): about 8x faster than a
# pure-Python parser. Raw HTML passes through ("unsafe") because sanitize_html decides what
# stays.
_MARKDOWN_OPTIONS = Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_FOOTNOTES
_MARKDOWN_EXTENSIONS = ("table",)

# Tags an article may use; everything else (script, style, iframe, forms) is dropped.
_ALLOWED_TAGS = {
    *("a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em"),
    *("figcaption", "figure", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li"),
    *("ol", "p", "pre", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead"),
    *("tr", "ul", "section", "caption"),
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "id", "class", "aria-label"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"class"},
    "th": {"class", "scope"},
    "abbr": {"title"},
    "li": {"id"},
    "sup": {"class"},
    "section": {"class"},
}
# GFM column alignment arrives as the ``align`` attribute, which HTML5 made obsolete (and a
# ``style`` attribute would open the door to CSS injection): it becomes a class instead.
_ALIGN = re.compile(r'(<t[dh]) align="(left|center|right)"')
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
# The only classes and ids that survive: the ones cmark-gfm gives footnotes. An article's
# own raw HTML cannot borrow the page's styling hooks or clobber other element ids.
_CLASSES = {"footnote-ref", "footnote-backref", "footnotes", *_ALIGN_CLASSES}
_FOOTNOTE_ID = re.compile(r"^fn(?:ref)?-[A-Za-z0-9_-]{1,64}$")
_ARIA_LABEL = re.compile(r"^Back to reference \d+$")

UrlMap = Callable[[str], str | None]


def strip_control_chars(text: str) -> str:
    """Remove the characters feeds cannot carry (see ``text_rules``); tab and newlines stay."""
    return strip_unsafe(text)


def is_relative(url: str) -> bool:
    """True for a path relative to the article (``chart.png``, ``img/a.png``), which may
    name a file of its bundle; False for absolute URLs, ``/site`` paths and ``#fragments``."""
    url = url.strip()
    if not url or url.startswith(("#", "/", "?")):
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


def sanitize_html(html: str, page_url: str, media: UrlMap | None = None) -> str:
    """Allow a small set of tags; make every link and image absolute against ``page_url``.

    ``media`` maps a relative URL to the published URL of a bundle file (or None when it is
    not one); such references are rewritten to that URL.
    """

    def attribute(tag: str, name: str, value: str) -> str | None:
        if name in ("href", "src"):
            value = value.strip()
            if tag == "a" and _FOOTNOTE_ID.match(value[1:]) and value.startswith("#"):
                return value  # footnote links stay in the page; plain_footnotes drops them
            if media is not None and is_relative(value):
                mapped = media(value)
                if mapped is not None:
                    return valid_url(mapped)
            return valid_url(urljoin(page_url, value))
        if name == "class":
            kept = " ".join(c for c in value.split() if c in _CLASSES)
            return kept or None
        if name == "id":
            return value if _FOOTNOTE_ID.match(value) else None
        if name == "aria-label":
            return value if _ARIA_LABEL.match(value) else None
        return value

    cleaned = nh3.clean(
        _align_classes(html),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        attribute_filter=attribute,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    # The HTML parser decodes references in raw HTML too (<p>&#x1b;</p>): strip after it.
    return strip_unsafe(cleaned)


# A line opening a definition (": text") is the cheap sign that a document may hold a
# definition list; only such documents are parsed a second time.
_DEFINITION = re.compile(r"^ {0,3}:[ \t]", re.MULTILINE)


@cache
def _deflist_parser() -> MarkdownIt:
    return MarkdownIt("commonmark").use(deflist_plugin)


def definition_lists(markdown: str) -> str:
    """``markdown`` with each top-level definition list (a term line, then lines starting
    ``: `` with its definitions, as in PHP Markdown Extra and Pandoc) replaced by the HTML
    markdown-it-py's deflist plugin makes of it, as a raw HTML block for cmark-gfm, which
    has no definition lists. Everything else is left to cmark-gfm. A definition's own
    footnote references are not linked (markdown-it renders that block)."""
    if not _DEFINITION.search(markdown):
        return markdown
    parser = _deflist_parser()
    tokens = parser.parse(markdown)
    spans: list[tuple[int, int, str]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "dl_open" and token.level == 0 and token.map:
            end = next(
                i
                for i in range(index + 1, len(tokens))
                if tokens[i].type == "dl_close" and tokens[i].level == 0
            )
            html = parser.renderer.render(tokens[index : end + 1], parser.options, {})
            spans.append((token.map[0], token.map[1], html))
            index = end + 1
        else:
            index += 1
    lines = markdown.split("\n")
    for start, stop, html in reversed(spans):
        # One HTML block for cmark-gfm: it runs until the first blank line.
        lines[start:stop] = [line for line in html.split("\n") if line.strip()] + [""]
    return "\n".join(lines)


def markdown_to_html(markdown: str) -> str:
    """cmark-gfm's HTML, not yet sanitised (for ``references`` and ``sanitize_html``)."""
    html: str = cmarkgfm.markdown_to_html_with_extensions(
        definition_lists(drop_unsafe_references(strip_control_chars(markdown))),
        options=_MARKDOWN_OPTIONS,
        extensions=list(_MARKDOWN_EXTENSIONS),
    )
    return html


def render_markdown(markdown: str, page_url: str, media: UrlMap | None = None) -> str:
    """CommonMark (+ GFM tables and footnotes) to sanitised HTML with absolute URLs."""
    return sanitize_html(markdown_to_html(markdown), page_url, media)


def _align_classes(html: str) -> str:
    return _ALIGN.sub(r'\1 class="align-\2"', html) if "<t" in html else html


_BACKREF = re.compile(r'\s*<a [^>]*class="footnote-backref"[^>]*>.*?</a>', re.DOTALL)
_REF = re.compile(r'<sup class="footnote-ref"><a [^>]*>(.*?)</a></sup>', re.DOTALL)


def plain_footnotes(html: str) -> str:
    """Sanitised article HTML with footnotes as plain numbered notes: the superscript number
    stays, its link and the notes' back-links go (feed readers show entries out of page)."""
    if "footnote-" not in html:
        return html
    return _REF.sub(r"<sup>\1</sup>", _BACKREF.sub("", html))


@dataclass(frozen=True, slots=True)
class Reference:
    """One image or link in an article: its tag, URL and, for images, the alt text."""

    tag: str  # "img" or "a"
    url: str
    alt: str | None  # None: no alt attribute at all; "" an empty one


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[Reference] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" and values.get("src"):
            self.found.append(Reference("img", values["src"] or "", values.get("alt")))
        elif tag == "a" and values.get("href"):
            self.found.append(Reference("a", values["href"] or "", None))


def references(html: str) -> list[Reference]:
    """Every ``img`` and ``a`` of ``html`` with its URL, in document order."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.found
