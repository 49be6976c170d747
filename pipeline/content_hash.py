"""What counts as an edit: a hash of what readers see, not of the file's bytes.

Feed readers re-show an entry whose ``updated`` moves and digests announce updates, so an
edit no reader can see (line ends, trailing spaces, a double space, YAML quoting or list
style, composed or decomposed letters) must leave the hash alone. The hash covers the
parsed field values (dates as instants, titles and summaries with white space collapsed
as pages show them) and the body as rendered by CommonMark with white space outside
``<pre>`` collapsed. ``id``, ``draft`` and ``minor_edit`` are identity and workflow, not
content, and are left out.

``former_hash`` is the hash ledgers written before this one hold (raw front matter and
body bytes); ``detect`` accepts it as "unchanged" so that upgrading announces nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import cmarkgfm

from pipeline.models import Therapy
from pipeline.text_rules import drop_unsafe_references

__all__ = ["canonical_body", "canonical_hash", "former_hash"]

_PRE = re.compile(r"(<pre\b.*?</pre>)", re.DOTALL | re.IGNORECASE)


def canonical_body(markdown: str, render: Callable[[str], str] | None = None) -> str:
    """The body as a reader sees it: rendered, white space collapsed outside ``<pre>``.

    ``render`` turns CommonMark into HTML (default: cmark-gfm without sanitising, which
    does not depend on the site's address, so moving the site changes no hash).
    """
    if "&#" in markdown:  # cmark-gfm cannot even render some (&#xFFFE;)
        markdown = drop_unsafe_references(markdown)
    html = (render or cmarkgfm.markdown_to_html)(markdown)
    parts = _PRE.split(html) if "<pre" in html else [html]
    return "".join(
        part if index % 2 else " ".join(part.split()) for index, part in enumerate(parts)
    )


def canonical_hash(fields: dict[str, Any], body: str) -> str:
    """Hash of what a reader sees: parsed field values and the body as rendered.

    Line ends, trailing spaces, white space runs and YAML style do not count (the fields
    are parsed values, titles and summaries with white space collapsed as shown; the body
    goes through ``canonical_body``; the text is NFC already). ``fields`` holds only
    content, never ``id``, ``draft`` or ``minor_edit``. The ``v2:`` prefix tells these
    hashes from the former ones.
    """
    canonical = json.dumps(fields, sort_keys=True, default=_json_default, ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8"))
    digest.update(b"\0")
    digest.update(canonical_body(body).encode("utf-8"))
    return "v2:" + digest.hexdigest()


def former_hash(front_matter: dict[str, Any], body: str) -> str:
    """The former hash: raw parsed front matter and body bytes (kept to read old ledgers)."""
    canonical = json.dumps(front_matter, sort_keys=True, default=_json_default, ensure_ascii=False)
    digest = hashlib.sha256()
    digest.update(canonical.encode("utf-8"))
    digest.update(b"\0")
    digest.update(body.encode("utf-8"))
    return digest.hexdigest()


def _json_default(value: object) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Therapy):
        return [value.name, value.maker, list(value.brands)]
    return str(value)
