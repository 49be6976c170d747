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
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["SEPARATORS", "CsvTable", "UnreadableCsv", "read_csv"]

SEPARATORS = ",;\t|"
_SAMPLE = 64 * 1024  # enough lines for the sniffer; a list can be far longer
_NOT_UTF8 = (
    "line {line} is not UTF-8 text; save the file as 'CSV UTF-8' (Excel) or "
    "choose the UTF-8 character set (LibreOffice)"
)
_NOT_UTF16 = "line {line} is not UTF-16 text; save the file again as 'CSV UTF-8'"


class UnreadableCsv(ValueError):
    """No row of the file can be read; ``str()`` says why and what to do, ``line`` where
    (1-based; the header's line unless the fault is further down, as a bad byte may be)."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class CsvTable:
    """The header (stripped, lower-cased), how the file was written ("UTF-8,
    ';'-separated", for messages), and the open file its rows are read from.

    The rows are decoded as they are read, a line at a time: the file is never held
    whole, in bytes or in text, so reading a list costs the same memory at any length.
    """

    header: list[str]
    stream: BinaryIO
    encoding: str  # a Python codec name: "utf-8", "utf-16-le" or "utf-16-be"
    start: int  # byte offset of the header line (after a byte-order mark and "sep=")
    dialect: type[csv.Dialect] | csv.Dialect
    described: str
    skipped_lines: int = 0  # a "sep=;" line before the header

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Each row after the header with the line it starts on in the file.

        Raises ``UnreadableCsv`` (with the line) on the first byte that is not text in the
        file's encoding; the rows before it have been yielded by then.
        """
        self.stream.seek(self.start)
        if self.encoding == "utf-8":
            lines = _utf8_lines(self.stream, self.skipped_lines)
        else:
            lines = io.TextIOWrapper(self.stream, self.encoding, newline="")
        reader = csv.reader(lines, self.dialect)
        try:
            next(reader, None)
            line = reader.line_num + 1 + self.skipped_lines
            for row in reader:
                yield line, row
                line = reader.line_num + 1 + self.skipped_lines
        except UnicodeDecodeError as exc:  # UTF-16 only: UTF-8 lines raise UnreadableCsv
            line = reader.line_num + 1 + self.skipped_lines
            raise UnreadableCsv(_NOT_UTF16.format(line=line), line) from exc
        finally:
            if isinstance(lines, io.TextIOWrapper):
                lines.detach()  # the caller owns the file and closes it


# One line and its end (CRLF, CR or LF, kept), or a last line without one.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+\Z")


def _lines(text: str) -> Iterator[str]:
    """``text``'s lines as ``io.StringIO(text, newline="")`` gives them, one at a time."""
    for match in _LINE.finditer(text):
        yield match.group()


def _utf8_lines(stream: BinaryIO, skipped: int) -> Iterator[str]:
    """The file's lines from where ``stream`` stands, decoded one at a time, split as
    ``io.StringIO(text, newline="")`` would split the whole text.

    The bytes are split at LF first (a LF byte is never part of a longer UTF-8 sequence),
    so a bad byte is reported with its own line; a lone CR (old Mac files) splits further.
    """
    number = 1 + skipped
    for raw in stream:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = number + raw[: exc.start].count(b"\r")
            raise UnreadableCsv(_NOT_UTF8.format(line=line), line) from exc
        cr = text.find("\r")
        if cr < 0 or (cr == len(text) - 2 and text[-1] == "\n"):  # one line, LF or CRLF
            yield text
        else:
            yield from _lines(text)
        number += 1


def _encoding(head: bytes) -> tuple[str, int, str]:
    """(codec, length of the byte-order mark, name for messages) of a file starting with
    ``head``: a byte-order mark decides; without one, UTF-16 is recognised by its zero
    bytes, and otherwise the text must be UTF-8."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", len(codecs.BOM_UTF8), "UTF-8"
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2, "UTF-16"
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2, "UTF-16"
    sample = head[:200]
    if len(sample) >= 4 and sample[1::2].count(0) > len(sample) // 4:
        return "utf-16-le", 0, "UTF-16"
    if len(sample) >= 4 and sample[0::2].count(0) > len(sample) // 4:
        return "utf-16-be", 0, "UTF-16"
    return "utf-8", 0, "UTF-8"


def _first_line(sample: str) -> str:
    end = sample.find("\n")
    return (sample if end < 0 else sample[:end]).strip("\r")


def read_csv(source: BinaryIO | bytes, required: str) -> CsvTable:
    """Find the encoding and separator of a list; the header must name column ``required``.

    ``source`` is a seekable binary file (read from its start; left open for ``rows()``)
    or the file's bytes. Only the first 64 KB are read here.

    Raises ``UnreadableCsv`` when the header is not UTF-8 or UTF-16 text, or no separator
    gives a header with ``required`` in it. A bad byte further down is raised by ``rows()``.
    """
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    stream.seek(0)
    head = stream.read(_SAMPLE)
    codec, start, encoding = _encoding(head)
    body = head[start:]
    if len(head) == _SAMPLE:  # cut at the last whole line: no character split in two
        newline = "\n".encode(codec)  # b"\n", or two bytes in UTF-16 (in the codec's order)
        cut = body.rfind(newline)
        body = body[: cut + len(newline)] if cut > 0 else body
    try:
        sample, bad_line = body.decode(codec), 0
    except UnicodeDecodeError as exc:  # raised here if in the header, else by rows()
        sample = body.decode(codec, errors="replace")
        if codec == "utf-8":
            bad_line = body[: exc.start].count(b"\n") + 1
        else:
            bad_line = sample[: sample.find("\ufffd")].count("\n") + 1
    candidates: list[type[csv.Dialect] | csv.Dialect] = []
    skipped = 0
    first_line = _first_line(sample)
    if len(first_line) == 5 and first_line.lower().startswith("sep="):
        # Excel's own directive naming the separator: it wins, and is not the header.
        candidates.append(_plain(first_line[4]))
        skip = sample.find("\n") + 1
        start += len(sample[:skip].encode(codec))
        sample, skipped = sample[skip:], 1
        first_line = _first_line(sample)
    if bad_line and bad_line <= 1 + skipped:
        message = _NOT_UTF8 if codec == "utf-8" else _NOT_UTF16
        raise UnreadableCsv(message.format(line=bad_line), bad_line)
    # csv.Error: too little text or no consistent separator; the header then decides alone.
    with contextlib.suppress(csv.Error):
        candidates.append(csv.Sniffer().sniff(sample, delimiters=SEPARATORS))
    for separator in SEPARATORS:
        candidates.append(_plain(separator))
    for dialect in candidates:
        header = [h.strip().lower() for h in next(csv.reader([first_line], dialect), [])]
        if required in header:
            shown = {"\t": "tab"}.get(dialect.delimiter, repr(dialect.delimiter))
            described = f"{encoding}, {shown}-separated"
            return CsvTable(header, stream, codec, start, dialect, described, skipped)
    raise UnreadableCsv(
        f"the first line names no {required!r} column with any of the separators , ; tab |; "
        f"the first line must be a header such as {required},name,topics"
    )


def _plain(separator: str) -> type[csv.Dialect]:
    class Plain(csv.excel):
        delimiter = separator

    return Plain
