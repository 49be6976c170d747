"""The W3C Feed Validation Service's rules this project relies on, as assertions.

The validator itself (feedvalidator) is not packaged on PyPI, so the rules that concern
what this pipeline writes are encoded here and run on every feed document a test
produces (subscription feeds and archive pages, RSS and Atom). Each names the validator
message it stands for:

* well-formed XML with only characters XML 1.0 allows, and none it discourages (C1
  controls, noncharacters): "Invalid character" / "Control character";
* titles and names are plain text: no end tag of an HTML element and no character
  reference in their text ("title should not contain HTML", "ContainsHTML");
* Atom ``summary``/``content`` declare ``type="html"`` when they hold HTML, and text
  constructs without a type hold no HTML end tag ("ContainsUndeclaredHTML");
* every link, id-as-URL and ``href`` is an absolute URI of RFC 3986 characters only
  ("InvalidURI", "ContainsRelRef"); Atom ids are absolute IRIs;
* dates are RFC 3339 (Atom) and RFC 822 with a 4-digit year (RSS), not in the future
  ("ImplausibleDate"), and an entry is never updated before it is published;
* the feed's date is not older than any of its entries';
* Atom feeds carry ``rel="self"``, RSS channels ``atom:link rel="self"`` ("MissingSelf");
* RFC 5005: an archive document has ``fh:archive`` and a ``current`` link.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree
from lxml import html as lxml_html

A = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]")
_HTML_END_TAG = re.compile(r"</(\w+)>")
_HTML_TAGS = {"a", "b", "i", "em", "strong", "p", "div", "span", "br", "script", "u", "sup"}
_ENTITY = re.compile(r"&#?\w+;")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
_RFC822 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$")


def feed_documents(public: Path) -> list[Path]:
    """Every RSS and Atom document under ``public/`` (archive pages included)."""
    return sorted([*public.rglob("rss.xml"), *public.rglob("atom.xml")])


def assert_valid(path: Path, *, now: datetime) -> None:
    """Fail with the rule's name if ``path`` breaks one of the rules above."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    assert not _UNSAFE.search(text), f"{path}: control or noncharacter in the document"
    root = etree.fromstring(raw)  # strict: raises on anything not well-formed
    if root.tag == "rss":
        _rss(path, root, now)
    else:
        _atom(path, root, now)


def _plain(path: Path, where: str, value: str | None) -> None:
    value = value or ""
    tags = [t for t in _HTML_END_TAG.findall(value) if t.lower() in _HTML_TAGS]
    assert not tags, f"{path}: {where} should not contain HTML: {value!r}"
    assert not _ENTITY.search(value), f"{path}: {where} contains a character reference: {value!r}"


def _uri(path: Path, where: str, value: str | None) -> None:
    assert value and _URI.match(value), f"{path}: {where} is not a valid URI: {value!r}"
    if value.startswith("http"):
        assert urlsplit(value).hostname, f"{path}: {where} has no host: {value!r}"
    for escape in re.findall(r"%(.{0,2})", value):
        assert re.fullmatch(r"[0-9A-Fa-f]{2}", escape), f"{path}: {where} bad escape in {value!r}"


def _hrefs(path: Path, fragment: str | None) -> None:
    if not fragment:
        return
    document = lxml_html.fragment_fromstring(fragment, create_parent="div")
    for element in document.iter():
        for attribute in ("href", "src"):
            if element.get(attribute) is not None:
                _uri(path, f"<{element.tag} {attribute}>", element.get(attribute))


def _rss(path: Path, root: etree._Element, now: datetime) -> None:
    channel = root.find("channel")
    assert channel is not None
    _plain(path, "channel title", channel.findtext("title"))
    _uri(path, "channel link", channel.findtext("link"))
    links = {link.get("rel"): link.get("href") for link in channel.iter(f"{A}link")}
    assert "self" in links, f"{path}: MissingSelf"
    for rel, href in links.items():
        _uri(path, f"atom:link rel={rel}", href)
    build = parsedate_to_datetime(channel.findtext("lastBuildDate") or "")
    assert build <= now, f"{path}: lastBuildDate in the future"
    for item in channel.findall("item"):
        _plain(path, "item title", item.findtext("title"))
        _uri(path, "item link", item.findtext("link"))
        when = item.findtext("pubDate") or ""
        assert _RFC822.match(when), f"{path}: pubDate {when!r}"
        assert parsedate_to_datetime(when) <= min(now, build), f"{path}: pubDate implausible"
        _hrefs(path, item.findtext("description"))
        _hrefs(path, item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded"))
    if channel.find(f"{FH}archive") is not None:
        assert "current" in links, f"{path}: archive without a current link"


def _atom(path: Path, root: etree._Element, now: datetime) -> None:
    _plain(path, "feed title", root.findtext(f"{A}title"))
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{A}link")}
    assert "self" in links, f"{path}: MissingSelf"
    for rel, href in links.items():
        _uri(path, f"link rel={rel}", href)
    _uri(path, "feed id", root.findtext(f"{A}id"))
    feed_updated = _date(path, root.findtext(f"{A}updated"), now)
    for entry in root.findall(f"{A}entry"):
        title = entry.find(f"{A}title")
        assert title is not None and title.get("type") in (None, "text")
        _plain(path, "entry title", title.text)
        _uri(path, "entry id", entry.findtext(f"{A}id"))
        for link in entry.findall(f"{A}link"):
            _uri(path, "entry link", link.get("href"))
        published = _date(path, entry.findtext(f"{A}published"), now)
        updated = _date(path, entry.findtext(f"{A}updated"), now)
        assert published <= updated <= feed_updated, f"{path}: entry dates out of order"
        for name in ("summary", "content"):
            element = entry.find(f"{A}{name}")
            if element is not None:
                assert element.get("type") == "html", f"{path}: {name} without type html"
                _hrefs(path, element.text)
    if root.find(f"{FH}archive") is not None:
        assert "current" in links, f"{path}: archive without a current link"


def _date(path: Path, value: str | None, now: datetime) -> datetime:
    assert value and _RFC3339.match(value), f"{path}: date {value!r} is not RFC 3339"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment <= now, f"{path}: ImplausibleDate {value}"
    return moment


def shown_text(html_or_text: str, content_type: str) -> str:
    """What a reader displays for a feedparser value: HTML reduced to its text."""
    if "html" not in content_type:
        return html_or_text
    return str(lxml_html.fragment_fromstring(html_or_text, create_parent="div").text_content())
