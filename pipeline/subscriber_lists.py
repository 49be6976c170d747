"""The editors' subscriber lists (``subscribers/*.csv``) and the CSV export.

A list's header names the column ``email`` and optionally ``name``, ``topics``, ``status``
and ``frequency`` (immediately, daily, weekly or monthly); the columns of an export are
accepted too, so an export imports back. Every invalid row is reported with file, line and
field and skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.addresses import clean_name, email_key, normalise_email, parse_topics
from pipeline.errors import Problem, SubscriberError
from pipeline.models import Subscriber
from pipeline.spreadsheet_csv import UnreadableCsv, read_csv
from pipeline.store import SubscriberRecord

__all__ = [
    "EXPORT_COLUMNS",
    "ListEntry",
    "SubscriberList",
    "export_csv",
    "load_subscribers",
    "read_list",
]

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
    "frequency",
)
_FREQUENCIES = ("immediately", "daily", "weekly", "monthly")
_IMPORT_STATUSES = ("active", "pending", "unsubscribed", "bounced")


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One valid row of a list file."""

    subscriber: Subscriber
    status: str  # active unless the file says otherwise
    source: str  # "subscribers/list.csv:3"


@dataclass(frozen=True, slots=True)
class SubscriberList:
    """The valid rows of one or more lists; each skipped row as a problem (file:line:
    reason); ``unusable`` names each file that stops a publish (none of its rows can be
    read, or most are invalid)."""

    entries: tuple[ListEntry, ...]
    problems: tuple[Problem, ...]
    unusable: tuple[Problem, ...] = ()

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
    unusable: list[Problem] = []
    for path in sorted(directory.glob("*.csv")):
        found = read_list(path, root, known_topics=known_topics)
        entries.extend(found.entries)
        problems.extend(found.problems)
        unusable.extend(found.unusable)
    seen: set[str] = set()
    unique = []
    for entry in entries:
        key = email_key(entry.subscriber.email)
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return SubscriberList(tuple(unique), tuple(problems), tuple(unusable))


def read_list(path: Path, root: Path, *, known_topics: Iterable[str] = ()) -> SubscriberList:
    """Read one list: a CSV file whose header names ``email`` and optionally ``name``,
    ``topics`` and ``status`` (the columns of an export are accepted and the rest ignored).

    Any separator, encoding and line ending a spreadsheet writes is read (see
    ``pipeline.spreadsheet_csv``). Each invalid row is a problem naming its line; a file
    from which no row can be read, or where most rows are invalid, is also ``unusable``:
    it stops a publish, since sending to the few rows left would drop everyone else.
    """
    source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    known = tuple(known_topics)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _unusable(source, None, f"cannot read it: {exc.strerror or exc}")
    if not raw.strip(b"\xef\xbb\xbf\xff\xfe\x00 \t\r\n"):
        return SubscriberList((), ())
    try:
        table = read_csv(raw, "email")
    except UnreadableCsv as exc:
        return _unusable(source, exc.line, str(exc))
    header = table.header
    unknown = [h for h in header if h not in EXPORT_COLUMNS]
    if unknown or len(set(header)) != len(header):
        what = f"unknown column {unknown[0]!r}" if unknown else "a column named twice"
        return _unusable(
            source,
            1,
            f"{what} (read as {table.described}); the header names the columns "
            "email,name,topics (and optionally status and frequency)",
        )
    entries: list[ListEntry] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    rows = 0
    for line, row in table.rows():
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        if len(row) != len(header):
            problems.append(
                Problem(
                    source,
                    line,
                    None,
                    f"expected {len(header)} columns, found {len(row)} "
                    f"(the file reads as {table.described})",
                )
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
                Problem(
                    source,
                    line,
                    "status",
                    f"{status!r} is not a status; use one of {', '.join(_IMPORT_STATUSES)}",
                )
            )
            continue
        frequency = cells.get("frequency", "").lower() or "immediately"
        if frequency not in _FREQUENCIES:
            problems.append(
                Problem(
                    source,
                    line,
                    "frequency",
                    f"{frequency!r} is not a frequency; use one of {', '.join(_FREQUENCIES)}",
                )
            )
            continue
        if email_key(address) in seen:
            continue
        seen.add(email_key(address))
        subscriber = Subscriber(address, clean_name(cells.get("name", "")), topics, frequency)
        entries.append(ListEntry(subscriber, status, f"{source}:{line}"))
    unusable: tuple[Problem, ...] = ()
    if rows and len(problems) * 2 > rows:
        unusable = (
            Problem(
                source,
                None,
                None,
                f"{len(problems)} of its {rows} rows are invalid (read as {table.described}); "
                "nobody on this list is mailed until it is fixed",
            ),
        )
    return SubscriberList(tuple(entries), tuple(problems), unusable)


def _unusable(source: str, line: int | None, message: str) -> SubscriberList:
    problem = Problem(source, line, None, message)
    return SubscriberList((), (problem,), (problem,))


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
                r.frequency,
            ]
        )
    return out.getvalue()


def _stamp(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")
