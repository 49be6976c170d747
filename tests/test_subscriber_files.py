"""Subscriber lists as spreadsheets save them: separators, byte-order marks, UTF-16, CRLF.
A file nobody can be read from, or mostly invalid, stops the publish; `check` says the same.

Real parts: files written to disk in each encoding, the CLI through CliRunner.
"""

from __future__ import annotations

import codecs
import io
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from pipeline.subscriber_lists import read_list

ROWS = [
    ("email", "name", "topics"),
    ("ana.reyes@example.org", "Ana Reyes", "scleroderma"),
    ("ben.okafor@example.org", "Ben Okafor", "multiple-sclerosis;scleroderma"),
    ("chloe.martin@example.org", "Chloé Martin", ""),
]


def spreadsheet(separator: str, *, crlf: bool = True) -> str:
    def cell(value: str) -> str:
        return f'"{value}"' if separator in value or ";" in value else value

    end = "\r\n" if crlf else "\n"
    return end.join(separator.join(cell(v) for v in row) for row in ROWS) + end


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--root", str(root), *args])


@pytest.mark.parametrize(
    ("separator", "encoding", "bom"),
    [
        (";", "utf-8", b""),  # Excel in a European locale
        (";", "utf-8", codecs.BOM_UTF8),  # Excel's "CSV UTF-8"
        ("\t", "utf-16-le", codecs.BOM_UTF16_LE),  # Excel's "Unicode text"
        ("\t", "utf-16-be", codecs.BOM_UTF16_BE),
        (",", "utf-16-le", b""),  # UTF-16 without a mark
        ("|", "utf-8", b""),
        (",", "utf-8", codecs.BOM_UTF8),
    ],
)
def test_each_common_spreadsheet_dialect_reads_every_row(
    tmp_path: Path, separator: str, encoding: str, bom: bytes
) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(bom + spreadsheet(separator).encode(encoding))
    found = read_list(path, tmp_path, known_topics=("scleroderma", "multiple-sclerosis"))
    assert found.problems == () and found.unusable == ()
    assert [(e.subscriber.email, e.subscriber.name) for e in found.entries] == [
        (r[0], r[1]) for r in ROWS[1:]
    ]
    assert found.entries[1].subscriber.topics == {"multiple-sclerosis", "scleroderma"}
    assert found.entries[2].source == "list.csv:4"


def test_a_semicolon_list_is_published_to_everyone_on_it(project: Path) -> None:
    lists = project / "subscribers"
    (lists / "subscribers.csv").unlink()
    (lists / "from-excel.csv").write_bytes(spreadsheet(";").encode("utf-8"))
    result = run(project, "publish")
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output
    assert len(list((project / "state" / "maildir" / "new").iterdir())) == 3


def test_a_list_no_row_can_be_read_from_stops_the_publish(project: Path) -> None:
    (project / "subscribers" / "broken.csv").write_text(
        "e-mail address:full name\nana@example.org:Ana\n", encoding="utf-8"
    )
    checked = run(project, "check")
    assert checked.exit_code == 1
    assert "subscribers/broken.csv:1: the first line names no 'email' column" in checked.output
    published = run(project, "publish")
    assert published.exit_code == 1
    assert "subscribers/broken.csv:1: the first line names no 'email' column" in published.output
    assert not (project / "state" / "maildir").exists()  # nobody mailed, nothing recorded


def test_a_list_where_most_rows_fail_stops_the_publish_naming_each_row(project: Path) -> None:
    (project / "subscribers" / "mostly-bad.csv").write_text(
        "email,name,topics\nnot-an-address,A,\nalso bad,B,\nok@example.org,C,\n",
        encoding="utf-8",
    )
    for command in ("check", "publish"):
        result = run(project, command)
        assert result.exit_code == 1, result.output
        assert "subscribers/mostly-bad.csv:2: email:" in result.output
        assert "subscribers/mostly-bad.csv:3: email:" in result.output
        assert "subscribers/mostly-bad.csv: 2 of its 3 rows are invalid" in result.output


def test_a_file_that_is_not_utf8_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("email,name\nana@example.org,Ana\nchloe@example.org,Chloé\n".encode("cp1252"))
    found = read_list(path, tmp_path)
    (problem,) = found.unusable
    assert "line 3 is not UTF-8" in str(problem) and "CSV UTF-8" in str(problem)
    assert str(problem).startswith("latin.csv:3: "), problem  # file:line as every problem


def test_excels_sep_line_names_the_separator_and_lines_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("sep=;\r\nemail;name\r\nana@example.org;Ana\r\nnot-an-address;X\r\n")
    found = read_list(path, tmp_path)
    assert [e.source for e in found.entries] == ["excel.csv:3"]
    (problem,) = found.problems
    assert str(problem).startswith("excel.csv:4: email:")


def test_a_one_column_list_reads(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("email\nana@example.org\nben@example.org\n")
    found = read_list(path, tmp_path)
    assert [e.subscriber.email for e in found.entries] == ["ana@example.org", "ben@example.org"]


def test_publish_without_email_only_warns_about_an_unusable_list(project: Path) -> None:
    (project / "subscribers" / "mostly-bad.csv").write_text(
        "email,name\nnot-an-address,A\nalso bad,B\n", encoding="utf-8"
    )
    result = run(project, "publish", "--no-email")
    assert result.exit_code == 0
    assert "subscribers/mostly-bad.csv: 2 of its 2 rows are invalid" in result.output


def test_rows_are_split_at_the_same_line_ends_as_a_text_file() -> None:
    """The reader decodes a line at a time instead of the whole file; the lines must be
    the ones ``io.StringIO(text, newline="")`` gives for the whole text."""
    from pipeline.spreadsheet_csv import _utf8_lines

    texts = ["a\nb\n", "a\r\nb\r\n", "a\rb\r", "a\nb", "", "\n\n", "a\r\r\nb", '"x\ny",z\r\nq']
    texts += ["a\r", "\r", "é\rü\r\n", "a\r\n\r\n\rb"]
    for text in texts:
        stream = io.BytesIO(text.encode("utf-8"))
        assert list(_utf8_lines(stream, 0)) == list(io.StringIO(text, newline="")), repr(text)


def _long_list(rows: int) -> str:
    return "email,name,topics\n" + "".join(
        f"reader{i:06d}@example.net,Réader {i},scleroderma\n" for i in range(rows)
    )


def test_a_bad_byte_far_down_a_long_list_names_its_line_and_stops_the_file(
    tmp_path: Path,
) -> None:
    """The text is decoded as it is read, so a bad byte beyond the first chunk is found
    while reading rows: the file must still be unusable as a whole, with the exact line."""
    text = _long_list(5000)
    lines = text.splitlines(keepends=True)
    lines[4000] = lines[4000].replace("Réader", "R\xe9ader")
    path = tmp_path / "long.csv"
    path.write_bytes(
        b"".join(line.encode("latin-1" if i == 4000 else "utf-8") for i, line in enumerate(lines))
    )
    assert path.stat().st_size > 200_000
    found = read_list(path, tmp_path, known_topics=("scleroderma",))
    (problem,) = found.unusable
    assert str(problem).startswith("long.csv:4001: line 4001 is not UTF-8"), problem


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_long_utf16_list_reads_across_chunk_boundaries(tmp_path: Path, encoding: str) -> None:
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    path = tmp_path / "unicode.csv"
    path.write_bytes(bom + ("sep=,\r\n" + _long_list(3000).replace("\n", "\r\n")).encode(encoding))
    assert path.stat().st_size > 3 * 64 * 1024
    found = read_list(path, tmp_path, known_topics=("scleroderma",))
    assert found.problems == ()
    assert len(found.entries) == 3000
    assert found.entries[-1].subscriber.name == "Réader 2999"
    assert found.entries[-1].source == "unicode.csv:3002"


def test_reading_a_list_never_holds_the_whole_file(tmp_path: Path) -> None:
    """Memory stays flat with the list's length: reading a list must allocate far
    less than the file at any moment (the rows are decoded as they are read; what
    stays is the 64 KB sample the separator is sniffed from)."""
    import tracemalloc

    path = tmp_path / "big.csv"
    path.write_text(_long_list(20_000), encoding="utf-8")
    size = path.stat().st_size
    from pipeline.subscriber_lists import ListFiles

    files = ListFiles(tmp_path, tmp_path, ("scleroderma",))
    tracemalloc.start()
    try:
        checked = files.check()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert checked.problems == () and size > 1_000_000
    assert peak < size / 2, f"peak {peak:,} bytes reading a {size:,}-byte list"
