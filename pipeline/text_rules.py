"""What text may reach a feed or a page, and the canonical form a reader sees.

The rules, each checked where the article is parsed so that ``pipeline check`` and
``publish`` refuse exactly the same files:

* **Characters XML cannot carry** (XML 1.0 section 2.2: C0 controls but tab and line ends,
  surrogates, U+FFFE/U+FFFF) and those it discourages and the W3C Feed Validation Service
  warns about (C1 controls U+007F-U+009F, the noncharacters U+FDD0-U+FDEF and U+xFFFE/xFFFF
  of every plane). Refused in every front matter value and in the body, whether typed raw
  or written as a numeric character reference (``&#1;``, ``&#x1F;``) that the Markdown or
  HTML parser would decode. A reference that names no character at all (``&#0;``,
  ``&#xD800;``, beyond U+10FFFF) is refused too: it would show as U+FFFD.
* **Titles are plain text.** RSS ``<title>`` has no type, and the W3C validator warns
  ("should not contain HTML") on an end tag or an entity reference in it; some readers
  render it as HTML, others as text. So a title may not hold tag-like text (``<b>``,
  ``</i>``) or a character reference (``&amp;``): the editor writes the character itself.
  Other plain-text fields (summary) are escaped where a format expects HTML instead.
* **Canonical text**: LF line ends and Unicode NFC, as readers see no difference.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

__all__ = [
    "canonical_text",
    "drop_unsafe_references",
    "normalise_newlines",
    "reference_problems",
    "strip_unsafe",
    "title_problems",
    "unsafe_characters",
    "valid_url",
    "value_problems",
]

# Python's re is slow on classes beyond the BMP (milliseconds per page of text), so the
# class covers the BMP; the last two code points of planes 1-16, noncharacters too
# (Unicode section 23.7), are found by ``_astral`` when the text reaches past the BMP.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_REFERENCE = re.compile(r"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")
_TAG_LIKE = re.compile(r"</?[A-Za-z][^<>]*>|</[A-Za-z]")
_ENTITY_LIKE = re.compile(r"&#?\w+;")


def unsafe_characters(text: str) -> list[str]:
    """The code points of ``text`` no feed may carry, as ``U+XXXX`` names, first seen first."""
    seen: dict[str, None] = {}
    for match in _UNSAFE.finditer(text):
        seen.setdefault(f"U+{ord(match.group()):04X}", None)
    for character in sorted(_astral(text)):
        seen.setdefault(f"U+{ord(character):04X}", None)
    return list(seen)


def strip_unsafe(text: str) -> str:
    """``text`` without the characters ``unsafe_characters`` names (a last line of defence)."""
    text = _UNSAFE.sub("", text)
    astral = _astral(text)
    return "".join(c for c in text if c not in astral) if astral else text


def _astral(text: str) -> set[str]:
    """The noncharacters beyond the BMP in ``text`` (U+1FFFE, U+10FFFF...)."""
    if text.isascii() or max(text) <= "\uffff":
        return set()
    return {c for c in text if ord(c) > 0xFFFF and ord(c) & 0xFFFE == 0xFFFE}


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR line ends as LF, as CommonMark reads them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unsafe_message(names: list[str]) -> str:
    return (
        f"contains {', '.join(names)}, which feeds cannot carry (XML 1.0); "
        "delete the character (often pasted from another program)"
    )


def value_problems(value: Any) -> Iterator[tuple[str, str]]:
    """(sub-field path, message) for each string inside a parsed front matter value.

    ``value`` is whatever YAML gave (str, list, dict, date...); the path is "" for the value
    itself, ``.name`` or ``[2]`` below it.
    """
    if isinstance(value, str):
        names = unsafe_characters(value)
        if names:
            yield "", _unsafe_message(names)
    elif isinstance(value, dict):
        for key, item in value.items():
            for path, message in value_problems(item):
                yield f".{key}{path}", message
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for path, message in value_problems(item):
                yield f"[{index}]{path}", message


def reference_problems(body: str, first_line: int) -> Iterator[tuple[int, str]]:
    """(line, message) for each raw unsafe character or unsafe numeric reference in a body.

    ``first_line`` is the file line of the body's first line. A reference inside a code span
    is refused as well (it is rare, and telling needs a parse): write ``&amp;#1;`` there.
    """
    if "&#" not in body and not unsafe_characters(body):
        return
    for offset, line in enumerate(body.split("\n")):
        names = unsafe_characters(line)
        if names:
            yield first_line + offset, _unsafe_message(names)
        for match in _REFERENCE.finditer(line):
            hex_digits, decimal = match.groups()
            if _unsafe_code(int(hex_digits, 16) if hex_digits else int(decimal)):
                yield (
                    first_line + offset,
                    f"the reference {match.group()} is not a character feeds can carry; delete it",
                )


def title_problems(title: str) -> list[str]:
    """Why ``title`` is not plain text a feed reader shows the same way everywhere."""
    problems = []
    tag = _TAG_LIKE.search(title)
    if tag:
        problems.append(
            f"contains markup {tag.group()!r}; titles are plain text (RSS readers would "
            "read it as HTML): remove the tags"
        )
    entity = _ENTITY_LIKE.search(title)
    if entity:
        problems.append(
            f"contains the character reference {entity.group()!r}; titles are plain text: "
            "write the character itself"
        )
    return problems


def canonical_text(text: str) -> str:
    """``text`` with LF line ends (CRLF and lone CR as CommonMark reads them) in Unicode
    NFC (composed and decomposed letters look the same to readers)."""
    return unicodedata.normalize("NFC", normalise_newlines(text))


def drop_unsafe_references(markdown: str) -> str:
    """``markdown`` without numeric references to unsafe characters (cmark-gfm cannot even
    render some: ``&#xFFFE;`` makes it fail to decode its own output)."""

    def keep(match: re.Match[str]) -> str:
        hex_digits, decimal = match.groups()
        code = int(hex_digits, 16) if hex_digits else int(decimal)
        return "" if _unsafe_code(code) else match.group()

    return _REFERENCE.sub(keep, markdown)


def _unsafe_code(code: int) -> bool:
    if code > 0xFFFF:
        return code > 0x10FFFF or code & 0xFFFE == 0xFFFE
    return code == 0 or bool(_UNSAFE.match(chr(code)))


# What may stand in a URL as written: RFC 3986 reserved and unreserved characters, and "%"
# where it starts an escape.
URL_SAFE = "%:/?#[]@!$&'()*+,;=-._~"
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def valid_url(url: str) -> str:
    """``url`` with every character RFC 3986 does not allow percent-encoded (UTF-8).

    Escapes already present stay as they are; a ``%`` that starts none becomes ``%25``.
    """
    return quote(_BARE_PERCENT.sub("%25", url), safe=URL_SAFE)
