"""Email addresses, names and topic choices as subscribers give them, checked and cleaned.

Syntax is checked with email-validator and no network look-ups. The domain is lower-cased
and IDNA-encoded; the local part keeps the spelling given, but two addresses that differ
only in letter case are one subscriber (``email_key``).

A shortcut for speed: every publish and ``check`` reads each list (the plan, the check and
the merge each stream it, so memory stays flat), and email-validator takes about 22 µs an
address, most of it on the domain, which a list repeats (gmail.com, a hospital's domain).
So a plain address (an ASCII dot-atom local part of letters, digits and ``._+-``) has its
domain validated by email-validator once per domain, cached, and only its local part and
lengths checked here; anything else, and any domain email-validator refuses, goes through
email-validator whole, which also words the error. The tests compare both ways on
generated addresses.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable

from email_validator import EmailNotValidError, validate_email

from pipeline.errors import SubscriberError
from pipeline.mime import header_safe

__all__ = ["clean_name", "email_key", "normalise_email", "parse_topics"]

_TOPIC = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_NAME_LIMIT = 100
# RFC 5321 section 4.5.3.1.1 and the path limit email-validator applies (RFC 3696 erratum).
_LOCAL_LIMIT = 64
_ADDRESS_LIMIT = 254
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")


def normalise_email(address: str) -> str:
    """The address to store and send to: syntax checked (no network look-ups), the domain
    lower-cased and IDNA-encoded, the local part spelled as given.

    Raises ``SubscriberError`` saying what is wrong.
    """
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if at and len(local) <= _LOCAL_LIMIT and _PLAIN_LOCAL.fullmatch(local):
        ascii_domain = _checked_domain(domain)
        if ascii_domain is not None and len(local) + 1 + len(ascii_domain) <= _ADDRESS_LIMIT:
            return f"{local}@{ascii_domain}"
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"{text!r} is not a valid email address: {exc}") from exc
    return f"{checked.local_part}@{checked.ascii_domain.lower()}"


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """``domain`` as email-validator accepts it (IDNA, lower-cased), or None if it does not."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return checked.ascii_domain.lower()


def email_key(address: str) -> str:
    """A subscriber's identity: the normalised address, lower-cased as a whole."""
    text = address.strip()
    if not text.isascii():
        with contextlib.suppress(SubscriberError):
            text = normalise_email(text)
    return text.lower()


def clean_name(name: str) -> str:
    """A display name without control characters or runs of spaces, at most 100 characters."""
    return header_safe(name)[:_NAME_LIMIT]


def parse_topics(text: str, known_topics: Iterable[str] = ()) -> frozenset[str]:
    """Topic slugs separated by ';' or ','; empty means every topic. Raises on unknown ones."""
    known = frozenset(known_topics)
    topics = frozenset(t.strip() for t in re.split(r"[;,]", text) if t.strip())
    bad = sorted(t for t in topics if not _TOPIC.match(t) or (known and t not in known))
    if bad:
        choices = ", ".join(sorted(known)) or "topic slugs"
        raise SubscriberError(
            f"unknown topic {bad[0]!r}; use {choices} separated by ';', "
            "or leave empty for every topic"
        )
    return topics
