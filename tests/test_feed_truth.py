"""Feeds that tell readers the truth: text every reader shows the same (issue 12).

Each fault of the issue has a test here or in ``test_update_rules.py`` that failed before
its fix; each stands for its kind (every field, every format). W3C rules:
``tests/feed_rules.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import feedparser
import pytest
from click.testing import CliRunner
from lxml import html as lxml_html

from pipeline import load_settings
from pipeline.cli import cli
from tests.feed_rules import assert_valid, feed_documents, shown_text
from tests.helpers import FIRST_RUN, publish, refusals, where, write

# --- 1. characters XML cannot carry --------------------------------------------------------

HOSTILE_TEXT = [
    # (front matter lines, body, the (line, field) that must be named)
    ('title: "T"\nsummary: "S."\npublished: 2026-11-01', "Body &#1; here.\n", (6, "body")),
    ('title: "T"\nsummary: "S."\npublished: 2026-11-01', "One\n\n&#x1F;\n", (8, "body")),
    ('title: "T"\nsummary: "S."\npublished: 2026-11-01', "<p>&#x1b;</p>\n", (6, "body")),
    ('title: "T"\nsummary: "S."\npublished: 2026-11-01', "a &#xFFFE; b\n", (6, "body")),
    ('title: "T"\nsummary: "S."\npublished: 2026-11-01', "raw \x0b here\n", (6, "body")),
    ('title: "T"\nsummary: "S."\npublished: 2026-11-01', "nul &#0; ref\n", (6, "body")),
    ('title: "Ends badly\\uFFFE"\nsummary: "S."\npublished: 2026-11-01', "Text.\n", (2, "title")),
    ('title: "T"\nsummary: "Next line\\x85."\npublished: 2026-11-01', "Text.\n", (3, "summary")),
    (
        'title: "T"\nsummary: "S."\npublished: 2026-11-01\ntherapy: {name: X, maker: "A\\x01"}',
        "Text.\n",
        (5, "therapy.maker"),
    ),
    (
        'title: "T"\nsummary: "S."\npublished: 2026-11-01\ntherapy: {name: X, brands: ["B\\uFDD0"]}',
        "Text.\n",
        (5, "therapy.brands[0]"),
    ),
]


@pytest.mark.parametrize(("front", "body", "named"), HOSTILE_TEXT)
def test_characters_xml_cannot_carry_are_refused_by_check_and_publish_alike(
    project: Path, front: str, body: str, named: tuple[int, str]
) -> None:
    write(project, "hostile", front, body)
    checked, refused = refusals(project)
    assert ("articles/hostile.md", *named) in where(checked)
    assert where(checked) == where(refused)  # check and publish agree, to the line
    assert not (project / "public").exists()


@pytest.mark.parametrize(
    "published",
    [
        "2026-02-30",
        "2026-13-01T00:00:00Z",
        "2026-11-01T10:00:00+25:00",
        "!!timestamp 2026-01-01 99:00",
    ],
)
def test_a_date_yaml_cannot_build_is_a_problem_not_a_traceback(
    project: Path, published: str
) -> None:
    write(project, "bad-date", f"title: T\nsummary: S.\npublished: {published}")
    checked, refused = refusals(project)
    assert where(checked) == where(refused) == [("articles/bad-date.md", 4, None)]
    assert "published:" in checked[0].message


@pytest.mark.parametrize(
    ("front", "named"),
    [
        ("title: Ends badly\ufffe\nsummary: S.\npublished: 2026-11-01", (2, "title")),
        ("title: T\nsummary: Bell \x07 here\npublished: 2026-11-01", (3, "summary")),
        ("title: T\nsummary: S.\npublished: 2026-11-01\ntrials:\n  - NCT1\x01", (6, None)),
    ],
)
def test_a_raw_character_yaml_refuses_is_named_on_its_own_line(
    project: Path, front: str, named: tuple[int, str | None]
) -> None:
    # Typed raw (not escaped), YAML's reader refuses the character before any field exists.
    write(project, "raw", front)
    checked, refused = refusals(project)
    assert where(checked) == where(refused) == [("articles/raw.md", *named)]
    assert "which feeds cannot carry" in checked[0].message
    assert "\n" not in checked[0].message  # one line, as every other problem


@pytest.mark.parametrize(
    "published",
    [
        "9999-12-31T23:30:00-01:00",  # a valid instant in its zone, past year 9999 in UTC
        "'0001-01-01T00:30:00+01:00'",
        "0001-01-01",  # would be written as year "1": no RFC 822, RFC 3339 or tag date
        "1899-12-31",
    ],
)
def test_a_date_out_of_range_is_a_problem_not_a_traceback(project: Path, published: str) -> None:
    write(project, "far", f"title: T\nsummary: S.\npublished: {published}")
    checked, refused = refusals(project)
    assert where(checked) == where(refused) == [("articles/far.md", 4, "published")]
    assert not (project / "public").exists()


def test_a_field_given_twice_is_a_problem_not_the_last_one_silently(project: Path) -> None:
    write(project, "twice", "title: First\nsummary: S.\ntitle: Second\npublished: 2026-11-01")
    checked, refused = refusals(project)
    assert where(checked) == where(refused) == [("articles/twice.md", 4, "title")]
    assert "also on line 2" in checked[0].message


def test_a_yaml_alias_is_a_problem_so_a_few_lines_cannot_stand_for_millions(
    project: Path,
) -> None:
    # Nine levels of nine-fold aliases: 387 million strings if expanded.
    levels = "\n".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 10))
    write(project, "laughs", f"title: T\nsummary: S.\npublished: 2026-11-01\nl0: &l0 x\n{levels}")
    checked, refused = refusals(project)
    assert where(checked) == where(refused)
    assert where(checked)[0][:2] == ("articles/laughs.md", 5)  # the value repeated
    assert "alias" in checked[0].message


def test_no_unsafe_character_reaches_any_output_even_through_the_renderer() -> None:
    # The renderer is the last line of defence: whatever reaches it, nothing unsafe leaves.
    from pipeline.articles import render_markdown

    html = render_markdown("a &#1; &#xFFFE; <p>&#x1b; &#x85;</p> \x01 b\n", "http://x.org/")
    for code in (0x01, 0x1B, 0x85, 0xFFFE):
        assert chr(code) not in html


# --- 2. angle brackets, markup and references in text fields --------------------------------


def test_a_summary_with_angle_brackets_reads_the_same_in_every_format(project: Path) -> None:
    summary = "Compared with <placebo> at week 52 & later; “quoted” </b> &amp; 5 < 6"
    write(
        project,
        "brackets",
        f"title: Brackets\nsummary: {json.dumps(summary)}\npublished: 2026-11-19\ntopics: [scleroderma]",
    )
    publish(project, send_email=False)
    public = project / "public"
    for directory in ("", "topics/scleroderma/"):
        for name in ("rss.xml", "atom.xml"):
            parsed = feedparser.parse((public / directory / name).read_bytes())
            entry = next(e for e in parsed.entries if "/brackets/" in e.link)
            detail = entry.summary_detail
            assert shown_text(detail.value, detail.type) == summary, (directory, name)
        item = next(
            i
            for i in json.loads((public / directory / "feed.json").read_text("utf-8"))["items"]
            if "/brackets/" in i["url"]
        )
        assert item["summary"] == summary
    page = lxml_html.fromstring((public / "articles/brackets/index.html").read_bytes())
    assert summary in page.text_content()


@pytest.mark.parametrize(
    ("title", "fix"),
    [
        ("<b>what</b> works", "remove the tags"),
        ("A <placebo> arm", "remove the tags"),
        ("Q&amp;A on dosing", "write the character itself"),
        ("Dose &#8211; timing", "write the character itself"),
    ],
)
def test_markup_in_a_title_is_refused_with_the_fix(project: Path, title: str, fix: str) -> None:
    write(
        project,
        "marked",
        f"title: {json.dumps(title, ensure_ascii=False)}\nsummary: S.\npublished: 2026-11-01",
    )
    checked, refused = refusals(project)
    (problem,) = [p for p in checked if p.file == "articles/marked.md"]
    assert (problem.line, problem.field) == (2, "title") and fix in problem.message
    assert where(refused) == where(checked)


def test_plain_titles_with_symbols_and_unicode_read_back_exactly(project: Path) -> None:
    titles = [
        "Risk & benefit: 5 < 10 mg > 2 mg",
        "Ocrelizumab — “B-cell” therapy 🧬",
        "عربى & 中文",
    ]
    for number, title in enumerate(titles):
        write(
            project,
            f"plain-{number}",
            f"title: {json.dumps(title, ensure_ascii=False)}\nsummary: S.\npublished: 2026-11-1{number}",
        )
    publish(project, send_email=False)
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse((project / "public" / name).read_bytes())
        read = {e.link.rsplit("/", 2)[-2]: e.title for e in parsed.entries}
        assert [read[f"plain-{n}"] for n in range(3)] == titles
    for document in feed_documents(project / "public"):
        assert_valid(document, now=FIRST_RUN)


def test_text_settings_that_reach_feeds_are_checked(project: Path) -> None:
    from pipeline.errors import ConfigError

    config = project / "pipeline.toml"
    original = config.read_text("utf-8")
    for bad, named in (
        ('title = "News </b>"', "[site] title"),
        ('author = "Ed\\u0001"', "[site] author"),
        ('description = "Trials &amp; therapies"', "[site] description"),
        ('scleroderma = "Sclero &amp; more"', "[topics] scleroderma"),
        ('"Lung Disease" = "Lung"', "[topics] 'Lung Disease' is not a slug"),
    ):
        key = bad.split(" = ")[0]
        lines = [bad if line.startswith(f"{key} = ") else line for line in original.splitlines()]
        if bad not in lines:
            lines.append(bad)  # the last section is [topics]
        config.write_text("\n".join(lines), "utf-8")
        with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
            load_settings(project)


# --- URLs ----------------------------------------------------------------------------------


def test_every_url_written_is_a_valid_uri(project: Path) -> None:
    write(
        project,
        "links",
        "title: Links\nsummary: S.\npublished: 2026-11-19",
        '<a href="https://example.org/a b/ärzte?q=x y">raw</a> '
        "[md](<https://example.org/c d>) ![i](images/my chart.png)\n",
    )
    publish(project, send_email=False)
    for document in feed_documents(project / "public"):
        assert_valid(document, now=FIRST_RUN)
    atom = (project / "public" / "atom.xml").read_text("utf-8")
    assert "https://example.org/a%20b/%C3%A4rzte?q=x%20y" in atom


@pytest.mark.parametrize("url", ["http://[::1/", "http://localhost:99999/", "http://:80/"])
def test_a_base_url_python_cannot_parse_is_a_config_problem_not_a_traceback(
    project: Path, url: str
) -> None:
    config = project / "pipeline.toml"
    text = config.read_text("utf-8")
    config.write_text(re.sub(r"(?m)^base_url = .*$", f'base_url = "{url}"', text), "utf-8")
    for command in (["check"], ["publish", "--no-email"]):
        result = CliRunner().invoke(cli, ["--root", str(project), *command])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "[site] base_url" in result.output
    assert not (project / "public").exists()


# --- W3C rules on samples and hostile inputs ---------------------------------------------------


def test_every_feed_keeps_the_w3c_rules_for_samples_and_hostile_inputs(project: Path) -> None:
    write(
        project,
        "hostile-text",
        'title: "Ampersands & angles: 2 < 3 > 1 — 🧪 ünïcödé"\n'
        'summary: "</b> &amp; &#1 <script>x</script> \u2018quotes\u2019"\n'
        "published: 2026-11-18\ntopics: [scleroderma]",
        "Body with <b>markup</b> &amp; entities &copy; and <script>alert(1)</script>.\n",
    )
    publish(project, send_email=False)
    documents = feed_documents(project / "public")
    assert len(documents) == 2 * 4
    for document in documents:
        assert_valid(document, now=FIRST_RUN)
