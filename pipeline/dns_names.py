"""Domain names as DNS can carry them: one rule for every name the pipeline writes.

A name the pipeline puts on the wire (a DKIM selector or signing domain, an EHLO host name,
the domain of an address in a header) must be one a resolver could ever look up, or the
mail goes out and fails far away (every receiver's DKIM check, say). The rule is RFC 1034
section 3.1 with RFC 1123 section 2.1's host-name labels:

- labels of ASCII letters, digits and inner hyphens, joined by dots, no trailing dot;
- each label 1 to 63 octets (``MAX_LABEL``), the whole name at most 253 (``MAX_NAME``:
  255 octets on the wire, less the length octets).

Internationalised names are checked in their punycode (``xn--``) form. Underscores are
not allowed: DKIM selectors and the names here are host-name-like (RFC 6376 section 3.1).
"""

from __future__ import annotations

import re

__all__ = ["MAX_LABEL", "MAX_NAME", "is_dns_name"]

MAX_LABEL = 63
MAX_NAME = 253

_LABEL = rf"[A-Za-z0-9](?:[A-Za-z0-9-]{{0,{MAX_LABEL - 2}}}[A-Za-z0-9])?"
_NAME = re.compile(rf"(?=.{{1,{MAX_NAME}}}\Z){_LABEL}(?:\.{_LABEL})*")


def is_dns_name(name: str) -> bool:
    """Whether ``name`` is one or more DNS labels within the length limits above."""
    return _NAME.fullmatch(name) is not None
