"""Subscriber lists (``subscribers/*.csv``) and the signed tokens in their links."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from pipeline.errors import Problem
from pipeline.models import Subscriber

__all__ = [
    "SubscriberList",
    "email_key",
    "load_subscribers",
    "normalise_email",
    "sign_token",
    "verify_token",
]

# Syntax only, no look-ups: one @, a dotted domain, no spaces or control characters.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")
_TOPIC = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_HEADER = ["email", "name", "topics"]


@dataclass(frozen=True, slots=True)
class SubscriberList:
    subscribers: tuple[Subscriber, ...]
    problems: tuple[Problem, ...]


def normalise_email(address: str) -> str:
    """Trim and lower-case the domain; the local part keeps the spelling given."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def email_key(address: str) -> str:
    """Two addresses differing only in case are one subscriber."""
    return address.strip().lower()


def load_subscribers(
    directory: Path, root: Path, *, known_topics: frozenset[str] = frozenset()
) -> SubscriberList:
    """Read every CSV list; the first spelling of an address wins, later duplicates merge."""
    found: dict[str, Subscriber] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.csv")):
        source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                continue
            if [h.strip().lower() for h in header] != _HEADER:
                problems.append(
                    Problem(source, 1, None, "the header must be exactly: email,name,topics")
                )
                continue
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 3:
                    problems.append(
                        Problem(source, line, None, f"expected 3 columns, found {len(row)}")
                    )
                    continue
                email, name, topic_text = (cell.strip() for cell in row)
                if not _EMAIL.match(email):
                    problems.append(
                        Problem(source, line, "email", f"{email!r} is not a valid address")
                    )
                    continue
                topics = frozenset(t.strip() for t in topic_text.split(";") if t.strip())
                bad = sorted(
                    t
                    for t in topics
                    if not _TOPIC.match(t) or (known_topics and t not in known_topics)
                )
                if bad:
                    problems.append(
                        Problem(
                            source,
                            line,
                            "topics",
                            f"unknown topic {bad[0]!r}; use {', '.join(sorted(known_topics)) or 'topic slugs'} "
                            "separated by ';', or leave empty for every topic",
                        )
                    )
                    continue
                key = email_key(email)
                if key in found:
                    continue
                found[key] = Subscriber(
                    email=normalise_email(email), name=" ".join(name.split()), topics=topics
                )
    return SubscriberList(tuple(found.values()), tuple(problems))


def sign_token(email: str, key: str, purpose: str = "unsubscribe") -> str:
    """An opaque, signed token naming a subscriber, for links in emails."""
    return str(URLSafeSerializer(key, salt=purpose).dumps(email_key(email)))


def verify_token(token: str, key: str, purpose: str = "unsubscribe") -> str | None:
    """The address a token was made for, or None if it is forged or for another purpose."""
    try:
        value = URLSafeSerializer(key, salt=purpose).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None
