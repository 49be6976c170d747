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

__all__ = ["MAX_LABEL", "MAX_NAME", "is_dns_name", "why_not_dns_name"]

MAX_LABEL = 63
MAX_NAME = 253

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The whole rule in one expression, for the common case of a good name (addresses are
# checked once a message); the reasons below are only looked for when it fails.
_NAME = re.compile(rf"(?=.{{1,{MAX_NAME}}}\Z){_LABEL}(?:\.{_LABEL})*")
_ONE_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


def why_not_dns_name(name: str) -> str | None:
    """None if ``name`` is one or more DNS labels within the limits above; else what is
    wrong, as a phrase for an error line ("a label of 64 characters, over 63")."""
    if _NAME.fullmatch(name):
        return None
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is {len(name)} characters, over {MAX_NAME}"
    for label in name.split("."):
        if not label:
            return "it has an empty label (a dot at an end, or two dots together)"
        if len(label) > MAX_LABEL:
            return f"a label of {len(label)} characters, over {MAX_LABEL}"
        if not _ONE_LABEL.fullmatch(label):
            if label.startswith("-") or label.endswith("-"):
                return f"the label {label!r} starts or ends with a hyphen"
            return f"the label {label!r} has characters other than ASCII letters, digits, hyphens"
    return "it is not a DNS name"  # not reached: each failure of _NAME has a reason above


def is_dns_name(name: str) -> bool:
    """Whether ``name`` is one or more DNS labels within the length limits above."""
    return _NAME.fullmatch(name) is not None
