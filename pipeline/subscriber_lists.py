"""The editors' subscriber lists (``subscribers/*.csv``) and the CSV export.

A list's header names the column ``email`` and optionally ``name``, ``topics``, ``status``
and ``frequency`` (immediately, daily, weekly or monthly); the columns of an export are
accepted too, so an export imports back. Every invalid row is reported with file, line and
field and skipped.
"""

from __future__ import annotations

import array
import bisect
import collections
import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pipeline.addresses import clean_name, email_key, normalise_email, parse_topics
from pipeline.errors import Problem, SubscriberError
from pipeline.models import Subscriber
from pipeline.spreadsheet_csv import UnreadableCsv, read_csv
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
    "frequency",
)
_FREQUENCIES = ("immediately", "daily", "weekly", "monthly")
_IMPORT_STATUSES = ("active", "pending", "unsubscribed", "bounced")
_BLANK_HEAD = 4096  # a file whose first 4 KB are blank and which ends there is empty


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


@dataclass(frozen=True, slots=True)
class ListFiles:
    """The editors' lists: every ``*.csv`` in ``directory``, read as a stream on each use.

    A publish reads them to check, to plan and to merge rather than holding every row:
    memory stays flat however long the lists are: a file is decoded a line at a time, and
    only 8 bytes per address are kept to merge repeated addresses.
    """

    directory: Path
    root: Path
    known_topics: tuple[str, ...] = ()

    def check(self) -> SubscriberList:
        """The skipped rows and unusable files, without keeping any row (``entries`` empty)."""
        problems: list[Problem] = []
        unusable: list[Problem] = []
        for path in self._paths():
            collections.deque(_read_rows(path, self, problems, unusable, None), maxlen=0)
        return SubscriberList((), tuple(problems), tuple(unusable))

    def entries(self) -> Iterator[ListEntry]:
        """Every valid row in file order; an address seen again (in any case, in any file)
        is merged into its first row.

        Addresses already seen are remembered as 64-bit hashes (8 bytes of BLAKE2b), 8
        bytes each; two different addresses share a hash with a probability below one in
        ten million even in a list of a million.
        """
        seen = _SeenAddresses()
        for path in self._paths():
            yield from _read_rows(path, self, [], [], seen)

    def _paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.csv"))


def load_subscribers(
    directory: Path, root: Path, *, known_topics: Iterable[str] = ()
) -> SubscriberList:
    """Read every ``*.csv`` in ``directory`` into memory (``ListFiles`` streams them); an
    address seen again (in any case) is merged into its first row; invalid rows are
    skipped and reported."""
    files = ListFiles(directory, root, tuple(known_topics))
    checked = files.check()
    return SubscriberList(tuple(files.entries()), checked.problems, checked.unusable)


def read_list(path: Path, root: Path, *, known_topics: Iterable[str] = ()) -> SubscriberList:
    """Read one list: a CSV file whose header names ``email`` and optionally ``name``,
    ``topics``, ``status`` and ``frequency`` (the columns of an export are accepted and the
    rest ignored).

    Any separator, encoding and line ending a spreadsheet writes is read (see
    ``pipeline.spreadsheet_csv``). Each invalid row is a problem naming its line; a file
    from which no row can be read, or where most rows are invalid, is also ``unusable``:
    it stops a publish, since sending to the few rows left would drop everyone else.
    """
    problems: list[Problem] = []
    unusable: list[Problem] = []
    files = ListFiles(path.parent, root, tuple(known_topics))
    entries = tuple(_read_rows(path, files, problems, unusable, _SeenAddresses()))
    return SubscriberList(entries, tuple(problems), tuple(unusable))


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
    path: Path,
    files: ListFiles,
    problems: list[Problem],
    unusable: list[Problem],
    seen: _SeenAddresses | None,
) -> Iterator[ListEntry]:
    """One file's valid rows, its skipped rows added to ``problems`` and, when the file
    stops a publish, a problem to ``unusable``. ``seen`` None: check only, yield nothing."""
    source = str(path.relative_to(files.root)) if path.is_relative_to(files.root) else str(path)
    known = files.known_topics
    try:
        stream = path.open("rb")
    except OSError as exc:
        _add_unusable(problems, unusable, source, None, f"cannot read it: {exc.strerror or exc}")
        return
    with stream:
        yield from _read_table(stream, source, known, problems, unusable, seen)


def _read_table(
    stream: BinaryIO,
    source: str,
    known: tuple[str, ...],
    problems: list[Problem],
    unusable: list[Problem],
    seen: _SeenAddresses | None,
) -> Iterator[ListEntry]:
    """The rows of one open list file, read a line at a time; see ``_read_rows``."""
    head = stream.read(_BLANK_HEAD)
    if len(head) < _BLANK_HEAD and not head.strip(b"\xef\xbb\xbf\xff\xfe\x00 \t\r\n"):
        return  # an empty file (perhaps a byte-order mark alone) is an empty list
    try:
        table = read_csv(stream, "email")
    except UnreadableCsv as exc:
        _add_unusable(problems, unusable, source, exc.line, str(exc))
        return
    header = table.header
    unknown = [h for h in header if h not in EXPORT_COLUMNS]
    if unknown or len(set(header)) != len(header):
        what = f"unknown column {unknown[0]!r}" if unknown else "a column named twice"
        _add_unusable(
            problems,
            unusable,
            source,
            1,
            f"{what} (read as {table.described}); the header names the columns "
            "email,name,topics (and optionally status and frequency)",
        )
        return
    first_problem = len(problems)
    rows = 0
    try:
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
            entry = _entry(dict(zip(header, (c.strip() for c in row), strict=True)), known)
            if isinstance(entry, Problem):
                problems.append(Problem(source, line, entry.field, entry.message))
            elif seen is not None and seen.add(entry[0].email):
                yield ListEntry(entry[0], entry[1], f"{source}:{line}")
    except UnreadableCsv as exc:  # a bad byte further down: the whole file is unusable
        _add_unusable(problems, unusable, source, exc.line, str(exc))
        return
    invalid = len(problems) - first_problem
    if rows and invalid * 2 > rows:
        unusable.append(
            Problem(
                source,
                None,
                None,
                f"{invalid} of its {rows} rows are invalid (read as {table.described}); "
                "nobody on this list is mailed until it is fixed",
            )
        )


def _entry(cells: dict[str, str], known: tuple[str, ...]) -> tuple[Subscriber, str] | Problem:
    """One row's subscriber and status, or the problem with it (file and line left empty)."""
    try:
        address = normalise_email(cells["email"])
    except SubscriberError as exc:
        return Problem("", None, "email", str(exc))
    try:
        topics = parse_topics(cells.get("topics", ""), known)
    except SubscriberError as exc:
        return Problem("", None, "topics", str(exc))
    status = cells.get("status", "").lower() or "active"
    if status not in _IMPORT_STATUSES:
        allowed = ", ".join(_IMPORT_STATUSES)
        return Problem("", None, "status", f"{status!r} is not a status; use one of {allowed}")
    frequency = cells.get("frequency", "").lower() or "immediately"
    if frequency not in _FREQUENCIES:
        allowed = ", ".join(_FREQUENCIES)
        return Problem(
            "", None, "frequency", f"{frequency!r} is not a frequency; use one of {allowed}"
        )
    return Subscriber(address, clean_name(cells.get("name", "")), topics, frequency), status


def _add_unusable(
    problems: list[Problem], unusable: list[Problem], source: str, line: int | None, text: str
) -> None:
    problem = Problem(source, line, None, text)
    problems.append(problem)
    unusable.append(problem)


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
