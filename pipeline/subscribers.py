"""Subscribers: address validation, the editors' CSV lists, the store, signed link tokens.

Subscribers live in the ledger. Each has a status: *pending* (signed up on the web, not
confirmed yet), *active*, *unsubscribed* or *bounced*; the last two are suppressions, and
only a new confirmed sign-up makes such an address active again. Two addresses that differ
only in letter case are one subscriber; the first spelling seen is kept for sending.

Links in emails carry tokens signed with the secret key, bound to one purpose (unsubscribe,
preferences, confirm). They never contain the address: unsubscribe and preference links
sign a keyed reference derived from it, confirmation links a random sign-up id.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import hmac
import io
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from itsdangerous import BadData, URLSafeTimedSerializer

from pipeline.config import Settings, secret_key
from pipeline.errors import Problem, SubscriberError
from pipeline.ledger import (
    Ledger,
    MergeCounts,
    SignupRecord,
    SubscriberRecord,
    SubscriberRow,
    merge_action,
)
from pipeline.models import Subscriber

__all__ = [
    "CONFIRM_MAX_AGE",
    "EXPORT_COLUMNS",
    "PURPOSES",
    "ListEntry",
    "SignupRequest",
    "SubscriberList",
    "SubscriberStore",
    "TokenError",
    "clean_name",
    "email_key",
    "export_csv",
    "load_subscribers",
    "make_token",
    "normalise_email",
    "open_store",
    "parse_topics",
    "planned_recipients",
    "read_list",
    "read_token",
    "sign_token",
    "subscriber_ref",
    "verify_token",
]

PURPOSES = ("unsubscribe", "preferences", "confirm")
CONFIRM_MAX_AGE = timedelta(days=7)
# One confirmation email per address in this window, however often the form is sent.
RESEND_AFTER = timedelta(minutes=5)
EXPORT_COLUMNS = (
    "email",
    "name",
    "topics",
    "status",
    "source",
    "reason",
    "created_at",
    "updated_at",
    "confirmed_at",
)
_IMPORT_COLUMNS = ("email", "name", "topics", "status")
_IMPORT_STATUSES = ("active", "pending", "unsubscribed", "bounced")
_TOPIC = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAME_LIMIT = 100


# --- addresses -----------------------------------------------------------------------------


def normalise_email(address: str) -> str:
    """The address to store and send to: syntax checked (no network look-ups), the domain
    lower-cased and IDNA-encoded, the local part spelled as given.

    Raises ``SubscriberError`` saying what is wrong.
    """
    text = address.strip()
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"{text!r} is not a valid email address: {exc}") from exc
    return f"{checked.local_part}@{checked.ascii_domain.lower()}"


def email_key(address: str) -> str:
    """A subscriber's identity: the normalised address, lower-cased as a whole."""
    text = address.strip()
    if not text.isascii():
        with contextlib.suppress(SubscriberError):
            text = normalise_email(text)
    return text.lower()


def clean_name(name: str) -> str:
    """A display name without control characters or runs of spaces, at most 100 characters."""
    return " ".join(_CONTROL.sub(" ", name).split())[:_NAME_LIMIT]


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


# --- the editors' lists --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One valid row of a list file."""

    subscriber: Subscriber
    status: str  # active unless the file says otherwise
    source: str  # "subscribers/list.csv:3"


@dataclass(frozen=True, slots=True)
class SubscriberList:
    entries: tuple[ListEntry, ...]
    problems: tuple[Problem, ...]

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return tuple(e.subscriber for e in self.entries if e.status == "active")


def load_subscribers(
    directory: Path, root: Path, *, known_topics: Iterable[str] = ()
) -> SubscriberList:
    """Read every ``*.csv`` in ``directory``; an address seen again (in any case) is merged
    into its first row; invalid rows are skipped and reported."""
    entries: list[ListEntry] = []
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.csv")):
        found = read_list(path, root, known_topics=known_topics)
        entries.extend(found.entries)
        problems.extend(found.problems)
    seen: set[str] = set()
    unique = []
    for entry in entries:
        key = email_key(entry.subscriber.email)
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return SubscriberList(tuple(unique), tuple(problems))


def read_list(path: Path, root: Path, *, known_topics: Iterable[str] = ()) -> SubscriberList:
    """Read one list: a CSV file whose header names ``email`` and optionally ``name``,
    ``topics`` and ``status`` (the columns of an export are accepted and the rest ignored)."""
    source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    known = tuple(known_topics)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return SubscriberList((), (Problem(source, None, None, f"cannot read it: {exc}"),))
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if not header:
        return SubscriberList((), ())
    unknown = [h for h in header if h not in EXPORT_COLUMNS]
    if "email" not in header or unknown or len(set(header)) != len(header):
        what = f"unknown column {unknown[0]!r}" if unknown else "no 'email' column or a repeat"
        return SubscriberList(
            (),
            (
                Problem(
                    source,
                    1,
                    None,
                    f"{what}; the header names the columns email,name,topics "
                    "(and optionally status)",
                ),
            ),
        )
    entries: list[ListEntry] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                Problem(source, line, None, f"expected {len(header)} columns, found {len(row)}")
            )
            continue
        cells = dict(zip(header, (cell.strip() for cell in row), strict=True))
        try:
            address = normalise_email(cells["email"])
        except SubscriberError as exc:
            problems.append(Problem(source, line, "email", str(exc)))
            continue
        try:
            topics = parse_topics(cells.get("topics", ""), known)
        except SubscriberError as exc:
            problems.append(Problem(source, line, "topics", str(exc)))
            continue
        status = cells.get("status", "").lower() or "active"
        if status not in _IMPORT_STATUSES:
            problems.append(
                Problem(source, line, "status", f"use one of {', '.join(_IMPORT_STATUSES)}")
            )
            continue
        if email_key(address) in seen:
            continue
        seen.add(email_key(address))
        subscriber = Subscriber(address, clean_name(cells.get("name", "")), topics)
        entries.append(ListEntry(subscriber, status, f"{source}:{line}"))
    return SubscriberList(tuple(entries), tuple(problems))


def planned_recipients(ledger: Ledger, lists: SubscriberList) -> list[Subscriber]:
    """Who is active once ``lists`` are merged in, without writing anything (a publish plan)."""
    current = {record.email_key: record for record in ledger.subscribers()}
    active = {key: _subscriber(r) for key, r in current.items() if r.status == "active"}
    for entry in lists.entries:
        key = email_key(entry.subscriber.email)
        record = current.get(key)
        action = merge_action(None if record is None else record.status, entry.status)
        if action == "add" and entry.status == "active":
            active[key] = entry.subscriber
        elif action == "activate" and record is not None:
            active[key] = _subscriber(record)
        elif action == "suppress":
            active.pop(key, None)
    return list(active.values())


def export_csv(records: Iterable[SubscriberRecord]) -> str:
    """Every subscriber with its status, as CSV that ``read_list`` can import again."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in records:
        writer.writerow(
            [
                r.email,
                r.name,
                ";".join(sorted(r.topics)),
                r.status,
                r.source,
                r.reason,
                _stamp(r.created_at),
                _stamp(r.updated_at),
                _stamp(r.confirmed_at),
            ]
        )
    return out.getvalue()


# --- signed tokens -------------------------------------------------------------------------


class TokenError(SubscriberError):
    """A link's token is forged, altered, made for another purpose or site, or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def _serializer(key: str, purpose: str) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}; use one of {PURPOSES}")
    return URLSafeTimedSerializer(key, salt=f"pipeline.{purpose}")


def make_token(value: str, key: str, purpose: str) -> str:
    """Sign ``value`` (an opaque id, never an address) for one purpose."""
    return str(_serializer(key, purpose).dumps(value))


def read_token(
    token: str,
    key: str,
    purpose: str,
    *,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """The value signed into ``token``; raises ``TokenError`` if it is not valid here."""
    try:
        value, signed_at = _serializer(key, purpose).loads(token, return_timestamp=True)
    except BadData as exc:
        raise TokenError(
            "the link is not valid: it was altered or made for something else"
        ) from exc
    if not isinstance(value, str):
        raise TokenError("the link is not valid")
    if max_age is not None and (now or datetime.now(UTC)) - signed_at > max_age:
        raise TokenError("the link has expired", expired=True)
    return value


def subscriber_ref(email: str, key: str) -> str:
    """The opaque reference to a subscriber in links: a keyed hash of the address."""
    mac = hmac.new(key.encode(), b"subscriber-ref\0" + email_key(email).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).decode("ascii").rstrip("=")


def sign_token(email: str, key: str, purpose: str = "unsubscribe") -> str:
    """The token for a subscriber's unsubscribe or preferences link (no look-up needed)."""
    return make_token(subscriber_ref(email, key), key, purpose)


def verify_token(token: str, key: str, purpose: str = "unsubscribe") -> str | None:
    """The subscriber reference a link token carries, or None if it is not valid here."""
    try:
        return read_token(token, key, purpose)
    except TokenError:
        return None


def _key_fingerprint(key: str) -> str:
    return hmac.new(key.encode(), b"ref-key-fingerprint", hashlib.sha256).hexdigest()[:16]


# --- the store -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """What a web sign-up led to: a confirmation token to email, or nothing to send."""

    email: str
    token: str | None  # None: send nothing (already active, or a confirmation just went out)


class SubscriberStore:
    """The subscribers in the ledger, changed only by the rules of this module."""

    def __init__(self, ledger: Ledger, key: str, known_topics: Iterable[str] = ()) -> None:
        self.ledger = ledger
        self._key = key
        self.known_topics = frozenset(known_topics)
        # Refs derive from the key: a new key re-derives them so fresh links keep working.
        ledger.refresh_refs(_key_fingerprint(key), lambda k: subscriber_ref(k, key))

    def find(self, email: str) -> SubscriberRecord | None:
        return self.ledger.subscriber(email_key(email))

    def records(self, status: str | None = None) -> list[SubscriberRecord]:
        return self.ledger.subscribers((status,) if status else ())

    def active(self) -> list[Subscriber]:
        return [_subscriber(r) for r in self.ledger.subscribers(("active",))]

    def merge(self, entries: Iterable[ListEntry], now: datetime) -> MergeCounts:
        """Merge list rows in (see ``Ledger.merge_subscribers`` for the rules)."""
        rows = (self._row(e.subscriber, e.status, e.source) for e in entries)
        return self.ledger.merge_subscribers(rows, now)

    def import_file(
        self, path: Path, root: Path, now: datetime
    ) -> tuple[MergeCounts, SubscriberList]:
        """Read one list file and merge its valid rows; the list carries the skipped rows."""
        found = read_list(path, root, known_topics=self.known_topics)
        return self.merge(found.entries, now), found

    def add(self, email: str, name: str, topics: frozenset[str], now: datetime) -> SubscriberRecord:
        """An editor adds (or updates) a subscriber, active at once. Refuses to bring back
        an unsubscribed or bounced address: only their own confirmed sign-up may."""
        subscriber = Subscriber(normalise_email(email), clean_name(name), topics)
        record = self.find(subscriber.email)
        if record is None:
            self.ledger.merge_subscribers([self._row(subscriber, "active", "cli")], now)
        elif record.suppressed:
            raise SubscriberError(
                f"{record.email} is {record.status} and stays so; only a new sign-up "
                "confirmed by its owner can make it active again"
            )
        else:
            self.ledger.update_subscriber(
                record.email_key, name=subscriber.name, topics=topics, now=now, activate=True
            )
        added = self.find(subscriber.email)
        assert added is not None
        return added

    def remove(self, email: str, now: datetime, *, reason: str = "removed by an editor") -> bool:
        """Unsubscribe an address for good (kept as suppressed so no list brings it back)."""
        return self.ledger.unsubscribe(email_key(email), reason, now)

    def request_signup(
        self, email: str, name: str, topics: frozenset[str], now: datetime
    ) -> SignupRequest:
        """A web sign-up: a confirmation token to email, unless the address is already active
        or was sent one moments ago. The caller answers the same either way."""
        address = normalise_email(email)
        key = email_key(address)
        record = self.ledger.subscriber(key)
        if record is not None and record.status == "active":
            return SignupRequest(address, None)
        last = self.ledger.last_signup_at(key)
        if last is not None and now - last < RESEND_AFTER:
            return SignupRequest(address, None)
        signup = SignupRecord(
            secrets.token_urlsafe(16), key, address, clean_name(name), topics, now
        )
        self.ledger.add_signup(signup, subscriber_ref(key, self._key))
        return SignupRequest(address, make_token(signup.id, self._key, "confirm"))

    def confirm(
        self, token: str, now: datetime, *, max_age: timedelta = CONFIRM_MAX_AGE
    ) -> SubscriberRecord | None:
        """Activate the sign-up a confirmation token names; None if it was used already."""
        signup_id = read_token(token, self._key, "confirm", max_age=max_age, now=now)
        signup = self.ledger.signup(signup_id)
        if signup is None:
            raise TokenError("this sign-up is not known here")
        return self.ledger.confirm_signup(
            signup_id, subscriber_ref(signup.email_key, self._key), now
        )

    def pending_signup(self, token: str, now: datetime) -> SignupRecord:
        """The sign-up a confirmation token names (checked, expiry included), unchanged."""
        signup_id = read_token(token, self._key, "confirm", max_age=CONFIRM_MAX_AGE, now=now)
        signup = self.ledger.signup(signup_id)
        if signup is None:
            raise TokenError("this sign-up is not known here")
        return signup

    def from_token(self, token: str, purpose: str) -> SubscriberRecord:
        """The subscriber an unsubscribe or preferences token names."""
        record = self.ledger.subscriber_by_ref(read_token(token, self._key, purpose))
        if record is None:
            raise TokenError("this subscriber is not known here")
        return record

    def token_for(self, record: SubscriberRecord, purpose: str) -> str:
        return sign_token(record.email, self._key, purpose)

    def save_preferences(
        self, record: SubscriberRecord, name: str, topics: frozenset[str], now: datetime
    ) -> bool:
        """Change a subscriber's name and topics; False if the address is suppressed."""
        return self.ledger.update_subscriber(
            record.email_key, name=clean_name(name), topics=topics, now=now, activate=False
        )

    def _row(self, subscriber: Subscriber, status: str, source: str) -> SubscriberRow:
        key = email_key(subscriber.email)
        return SubscriberRow(
            key,
            subscriber.email,
            subscriber.name,
            subscriber.topics,
            status,
            source,
            subscriber_ref(key, self._key),
        )


@contextmanager
def open_store(settings: Settings) -> Iterator[SubscriberStore]:
    """The project's subscriber store, its ledger closed on leaving."""
    with Ledger(settings.paths.ledger) as ledger:
        yield SubscriberStore(ledger, secret_key(settings.paths), settings.topics)


def _subscriber(record: SubscriberRecord) -> Subscriber:
    return Subscriber(record.email, record.name, record.topics)


def _stamp(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")
