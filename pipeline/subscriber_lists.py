"""The editors' subscriber lists (``subscribers/*.csv``) and the CSV export.

A list's header names the column ``email`` and optionally ``name``, ``topics`` and
``status``; the columns of an export are accepted too, so an export imports back. Every
invalid row is reported with file, line and field and skipped.
"""

from __future__ import annotations

import _csv
import array
import bisect
import codecs
import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.addresses import clean_name, email_key, normalise_email, parse_topics
from pipeline.errors import Problem, SubscriberError
from pipeline.models import Subscriber
from pipeline.store import SubscriberRecord

__all__ = [
    "EXPORT_COLUMNS",
    "ListEntry",
    "ListFiles",
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
)
_IMPORT_STATUSES = ("active", "pending", "unsubscribed", "bounced")


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


@dataclass(frozen=True, slots=True)
class ListFiles:
    """The editors' lists: every ``*.csv`` in ``directory``, read as a stream on each use.

    A publish reads them twice (to plan, then to merge) rather than holding every row:
    memory stays flat however long the lists are.
    """

    directory: Path
    root: Path
    known_topics: tuple[str, ...] = ()

    def entries(self, problems: list[Problem] | None = None) -> Iterator[ListEntry]:
        """Every valid row in file order; an address seen again (in any case, in any file)
        is merged into its first row; invalid rows are skipped and added to ``problems``.

        Addresses already seen are remembered as 64-bit hashes (8 bytes of BLAKE2b), 8
        bytes each; two different addresses share a hash with a probability below one in
        ten million even in a list of a million.
        """
        found = [] if problems is None else problems
        seen = _SeenAddresses()
        for path in sorted(self.directory.glob("*.csv")):
            yield from _read_rows(path, self.root, self.known_topics, found, seen)


def load_subscribers(
    directory: Path, root: Path, *, known_topics: Iterable[str] = ()
) -> SubscriberList:
    """Read every ``*.csv`` in ``directory`` into memory (see ``ListFiles`` for a stream)."""
    problems: list[Problem] = []
    entries = tuple(ListFiles(directory, root, tuple(known_topics)).entries(problems))
    return SubscriberList(entries, tuple(problems))


def read_list(path: Path, root: Path, *, known_topics: Iterable[str] = ()) -> SubscriberList:
    """Read one list: a CSV file whose header names ``email`` and optionally ``name``,
    ``topics`` and ``status`` (the columns of an export are accepted and the rest ignored)."""
    problems: list[Problem] = []
    entries = tuple(_read_rows(path, root, tuple(known_topics), problems, _SeenAddresses()))
    return SubscriberList(entries, tuple(problems))


class _SeenAddresses:
    """Addresses met so far, as 64-bit hashes: 8 bytes each in a sorted array.

    A Python set would cost about 75 bytes an entry (7 MB at 100,000); new hashes wait in
    a small set and are merged into the sorted array when they reach an eighth of it.
    """

    __slots__ = ("_recent", "_sorted")
    _MERGE_AT = 4096

    def __init__(self) -> None:
        self._sorted = array.array("Q")
        self._recent: set[int] = set()

    def add(self, address: str) -> bool:
        """Remember ``address`` (case-insensitively); False if it was met before."""
        digest = hashlib.blake2b(email_key(address).encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        if value in self._recent:
            return False
        at = bisect.bisect_left(self._sorted, value)
        if at < len(self._sorted) and self._sorted[at] == value:
            return False
        self._recent.add(value)
        if len(self._recent) >= max(self._MERGE_AT, len(self._sorted) // 8):
            merged = self._sorted.tolist()
            merged += self._recent
            merged.sort()
            self._sorted = array.array("Q", merged)
            self._recent.clear()
        return True


def _read_rows(
    path: Path, root: Path, known: tuple[str, ...], problems: list[Problem], seen: _SeenAddresses
) -> Iterator[ListEntry]:
    source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        # Decoded once up front, block by block, so that a bad byte far down the file
        # skips the whole file (as an unreadable file does), not just the rows after it.
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        with path.open("rb") as raw:
            while block := raw.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        with path.open(encoding="utf-8-sig", newline="") as file:
            yield from _parse_rows(csv.reader(file), source, known, problems, seen)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(source, None, None, f"cannot read it: {exc}"))


def _parse_rows(
    reader: _csv.Reader,
    source: str,
    known: tuple[str, ...],
    problems: list[Problem],
    seen: _SeenAddresses,
) -> Iterator[ListEntry]:
    header = [h.strip().lower() for h in next(reader, [])]
    if not header:
        return
    unknown = [h for h in header if h not in EXPORT_COLUMNS]
    if "email" not in header or unknown or len(set(header)) != len(header):
        what = f"unknown column {unknown[0]!r}" if unknown else "no 'email' column or a repeat"
        problems.append(
            Problem(
                source,
                1,
                None,
                f"{what}; the header names the columns email,name,topics (and optionally status)",
            )
        )
        return
    line = 1
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
        if not seen.add(address):
            continue
        subscriber = Subscriber(address, clean_name(cells.get("name", "")), topics)
        yield ListEntry(subscriber, status, f"{source}:{line}")


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


def _stamp(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")
