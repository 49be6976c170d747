"""Read a CSV file the way spreadsheets save them: any common separator, encoding and
line ending, with the header row telling them apart.

Spreadsheets write what their locale says: ``,`` in English locales, ``;`` where the comma
is the decimal separator (most of Europe), a tab for "Unicode text" (Excel, as UTF-16 with
a byte-order mark), ``|`` now and then; UTF-8 with or without a byte-order mark; CRLF or
LF line ends. The separator is found by the standard library's ``csv.Sniffer`` and then
checked against the header, which must name a required column; when the sniffer guesses
wrong (a ``;`` inside a topics cell can fool it), the separator that splits the header
into that column wins.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["SEPARATORS", "CsvTable", "UnreadableCsv", "read_csv"]

SEPARATORS = ",;\t|"
_SAMPLE = 64 * 1024  # enough lines for the sniffer; a list can be far longer


class UnreadableCsv(ValueError):
    """No row of the file can be read; ``str()`` says why and what to do, ``line`` where
    (1-based; the header's line unless the fault is further down, as a bad byte may be)."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class CsvTable:
    """The header (stripped, lower-cased), the rows with their line numbers, and how the
    file was written ("UTF-8, ';'-separated"), for messages."""

    header: list[str]
    text: str
    dialect: type[csv.Dialect] | csv.Dialect
    described: str
    skipped_lines: int = 0  # a "sep=;" line before the header

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Each row after the header with the line it starts on in the file."""
        reader = csv.reader(_lines(self.text), self.dialect)
        next(reader, None)
        line = reader.line_num + 1 + self.skipped_lines
        for row in reader:
            yield line, row
            line = reader.line_num + 1 + self.skipped_lines


# One line and its end (CRLF, CR or LF, kept), or a last line without one.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+\Z")


def _lines(text: str) -> Iterator[str]:
    """``text``'s lines as ``io.StringIO(text, newline="")`` gives them, one at a time.

    A StringIO copies the text into a buffer of 4-byte characters (18 MB for a list of
    100,000 addresses); this keeps only the line being read.
    """
    for match in _LINE.finditer(text):
        yield match.group()


def _decode(raw: bytes) -> tuple[str, str]:
    """The text and the name of its encoding: a byte-order mark decides; without one,
    UTF-16 is recognised by its zero bytes, and otherwise the text must be UTF-8."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if raw.startswith(bom):
            return raw.decode(name), "UTF-16" if name == "utf-16" else "UTF-8"
    head = raw[:200]
    if len(head) >= 4 and head[1::2].count(0) > len(head) // 4:
        return raw.decode("utf-16-le"), "UTF-16"
    if len(head) >= 4 and head[0::2].count(0) > len(head) // 4:
        return raw.decode("utf-16-be"), "UTF-16"
    return raw.decode("utf-8"), "UTF-8"


def read_csv(raw: bytes, required: str) -> CsvTable:
    """Decode ``raw`` and find its separator; the header must name the column ``required``.

    Raises ``UnreadableCsv`` when the text is not UTF-8 or UTF-16, or no separator gives
    a header with ``required`` in it.
    """
    try:
        text, encoding = _decode(raw)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UnreadableCsv(
            f"line {line} is not UTF-8 text; save the file as 'CSV UTF-8' (Excel) or "
            "choose the UTF-8 character set (LibreOffice)",
            line,
        ) from exc
    candidates: list[type[csv.Dialect] | csv.Dialect] = []
    skipped = 0
    end = text.find("\n")
    first_line = (text if end < 0 else text[:end]).strip("\r")  # no copy of the rest
    if len(first_line) == 5 and first_line.lower().startswith("sep="):
        # Excel's own directive naming the separator: it wins, and is not the header.
        candidates.append(_plain(first_line[4]))
        text, skipped = text.split("\n", 1)[1] if "\n" in text else "", 1
    sample = text[:_SAMPLE]
    first_line = sample.splitlines()[0] if sample.strip() else ""
    # csv.Error: too little text or no consistent separator; the header then decides alone.
    with contextlib.suppress(csv.Error):
        candidates.append(csv.Sniffer().sniff(sample, delimiters=SEPARATORS))
    for separator in SEPARATORS:
        candidates.append(_plain(separator))
    for dialect in candidates:
        header = [h.strip().lower() for h in next(csv.reader([first_line], dialect), [])]
        if required in header:
            shown = {"\t": "tab"}.get(dialect.delimiter, repr(dialect.delimiter))
            return CsvTable(header, text, dialect, f"{encoding}, {shown}-separated", skipped)
    raise UnreadableCsv(
        f"the first line names no {required!r} column with any of the separators , ; tab |; "
        f"the first line must be a header such as {required},name,topics"
    )


def _plain(separator: str) -> type[csv.Dialect]:
    class Plain(csv.excel):
        delimiter = separator

    return Plain
