"""Feeds that tell readers the truth about every change (issue 12), on real output.

Each fault of the issue has a test here that failed before its fix; each stands for its
kind (every field, every format). W3C rules: ``tests/feed_rules.py``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree
from lxml import html as lxml_html

from pipeline import ContentError, load_settings
from pipeline.check import check_project
from pipeline.errors import Problem
from tests.feed_rules import assert_valid, feed_documents, shown_text
from tests.helpers import FIRST_RUN, edit_article, publish

A = "{http://www.w3.org/2005/Atom}"
NINTEDANIB = "articles/nintedanib.md"


def write(root: Path, slug: str, front: str, body: str = "Some text.\n") -> Path:
    path = root / "articles" / f"{slug}.md"
    path.write_text(f"---\n{front.strip()}\n---\n{body}", "utf-8")
    return path


def refusals(root: Path, *, now=FIRST_RUN) -> tuple[list[Problem], list[Problem]]:  # type: ignore[no-untyped-def]
    """What ``check`` reports about articles and what ``publish`` refuses, side by side."""
    checked = [
        p for p in check_project(load_settings(root), now=now) if p.file.startswith("articles/")
    ]
    try:
        publish(root, now=now, send_email=False)
    except ContentError as exc:
        return checked, list(exc.problems)
    return checked, []


def where(problems: list[Problem]) -> list[tuple[str, int | None, str | None]]:
    return sorted((p.file, p.line, p.field) for p in problems)


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


# --- 3. only what a reader sees is an update -------------------------------------------------


def _crlf(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


def _trailing_space(path: Path) -> None:
    text = path.read_text("utf-8")
    path.write_text(text.replace("use.\n", "use. \n", 1), "utf-8")


def _double_space_in_title(path: Path) -> None:
    text = path.read_text("utf-8")
    path.write_text(text.replace("Nintedanib: slowing", "Nintedanib:  slowing", 1), "utf-8")


def _yaml_restyle(path: Path) -> None:
    text = path.read_text("utf-8")
    text = text.replace(
        "topics: [scleroderma, interstitial-lung-disease]",
        "topics:\n  - scleroderma\n  - 'interstitial-lung-disease'",
    )
    text = text.replace("published: 2026-10-05", "published: '2026-10-05T00:00:00Z'")
    text = text.replace("trials: [NCT02597933]", "trials: NCT02597933")
    path.write_text(text, "utf-8")


def _decomposed_unicode(path: Path) -> None:
    import unicodedata

    path.write_text(unicodedata.normalize("NFD", path.read_text("utf-8")), "utf-8")


def _double_space_in_maker(path: Path) -> None:
    text = path.read_text("utf-8")
    path.write_text(text.replace("Boehringer Ingelheim\n", "Boehringer  Ingelheim \n", 1), "utf-8")


@pytest.mark.parametrize(
    "edit",
    [
        _crlf,
        _trailing_space,
        _double_space_in_title,
        _yaml_restyle,
        _decomposed_unicode,
        _double_space_in_maker,
    ],
)
def test_an_edit_no_reader_can_see_is_not_an_update(project: Path, edit) -> None:  # type: ignore[no-untyped-def]
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart (caf\u00e9)")
    publish(project, send_email=False)
    feeds = {p: p.read_bytes() for p in feed_documents(project / "public")}
    edit(project / NINTEDANIB)
    report = publish(project, now=FIRST_RUN + timedelta(days=1))
    assert not report.plan.changes.updated and report.digest_id is None
    assert {p: p.read_bytes() for p in feed_documents(project / "public")} == feeds


def test_a_visible_edit_still_is_an_update(project: Path) -> None:
    publish(project, send_email=False)
    edit_article(project, "nintedanib", "twelve hours apart", "twelve  hours\napart, with food")
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert [e.slug for e in report.plan.changes.updated] == ["nintedanib"]


def test_a_minor_edit_rewrites_the_entry_without_an_announcement(
    project: Path, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    publish(project)
    before = _entry(project, "nintedanib")
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours appart")
    publish(project, now=FIRST_RUN + timedelta(hours=1))
    sent = len(smtp_server.messages)
    edit_article(project, "nintedanib", "---\n", "---\nminor_edit: true\n")
    edit_article(project, "nintedanib", "twelve hours appart", "twelve hours apart")
    report = publish(project, now=FIRST_RUN + timedelta(days=1))
    assert report.digest_id is None and len(smtp_server.messages) == sent
    assert [e.slug for e in report.plan.changes.corrected] == ["nintedanib"]
    after = _entry(project, "nintedanib")
    assert "hours apart" in after.content[0].value
    assert after.updated == _entry_updated_after_first_edit(project)
    assert after.published == before.published
    # Dropping the flag later is not an edit either.
    edit_article(project, "nintedanib", "minor_edit: true\n", "")
    assert not publish(project, now=FIRST_RUN + timedelta(days=2)).plan.changes.any


def _entry(project: Path, slug: str):  # type: ignore[no-untyped-def]
    parsed = feedparser.parse((project / "public" / "atom.xml").read_bytes())
    return next(e for e in parsed.entries if f"/{slug}/" in e.link)


def _entry_updated_after_first_edit(project: Path) -> str:
    return (FIRST_RUN + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def test_a_ledger_from_before_canonical_hashes_sees_no_change(project: Path) -> None:
    """Existing ledgers hold the former hash: upgrading must not announce every article."""
    import sqlite3

    publish(project, send_email=False)
    db = sqlite3.connect(project / "state" / "pipeline.db")
    for slug, row_json in db.execute("SELECT slug, article FROM article_cache").fetchall():
        former = json.loads(row_json)["former_hash"]
        db.execute("UPDATE articles SET content_hash = ? WHERE slug = ?", (former, slug))
    db.execute("DELETE FROM article_cache")
    db.commit()
    db.close()
    report = publish(project, now=FIRST_RUN + timedelta(days=1))
    assert not report.plan.changes.updated and report.digest_id is None
    assert not publish(project, now=FIRST_RUN + timedelta(days=2)).plan.changes.any


def test_a_ledger_from_before_migration_7_is_migrated_and_publishes_nothing_new(
    project: Path,
) -> None:
    import sqlite3

    publish(project, send_email=False)
    db = sqlite3.connect(project / "state" / "pipeline.db")
    for table in ("retired_ids", "feed_dates", "websub_pending"):
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version = 6")
    db.commit()
    db.close()
    report = publish(project, now=FIRST_RUN + timedelta(days=1))
    assert not report.plan.changes.any and report.written == []
    db = sqlite3.connect(project / "state" / "pipeline.db")
    assert db.execute("SELECT count(*) FROM feed_dates").fetchone()[0] == 4


# --- 4. updated never goes back --------------------------------------------------------------


def test_updated_never_goes_back_across_a_draft_round_trip(project: Path, smtp_server) -> None:  # type: ignore[no-untyped-def]
    publish(project)
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    edited = FIRST_RUN + timedelta(days=1)
    publish(project, now=edited)
    assert _entry(project, "nintedanib").updated.startswith("2026-11-21T12:00:00")
    edit_article(project, "nintedanib", "---\n", "---\ndraft: true\n")
    publish(project, now=FIRST_RUN + timedelta(days=2))
    edit_article(project, "nintedanib", "draft: true\n", "draft: false\n")
    edit_article(project, "nintedanib", "soft capsules", "hard capsules")
    report = publish(project, now=FIRST_RUN + timedelta(days=3))
    assert [e.slug for e in report.plan.changes.updated] == ["nintedanib"]
    assert report.plan.changes.new == ()  # an update of its old entry, not a new one
    assert _entry(project, "nintedanib").updated.startswith("2026-11-23T12:00:00")


def test_an_explicit_updated_older_than_the_published_one_does_not_move_it_back(
    project: Path,
) -> None:
    publish(project, send_email=False)
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=5))
    edit_article(
        project,
        "nintedanib",
        "published: 2026-10-05\n",
        "published: 2026-10-05\nupdated: 2026-11-01\n",
    )
    edit_article(project, "nintedanib", "with food", "with a meal")
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=6))
    assert _entry(project, "nintedanib").updated.startswith("2026-11-26T12:00:00")
    edit_article(project, "nintedanib", "---\n", "---\ndraft: true\n")
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=7))
    edit_article(project, "nintedanib", "draft: true\n", "")
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=8))
    assert _entry(project, "nintedanib").updated.startswith("2026-11-26T12:00:00")


# --- 5. ids are never handed to a different article ------------------------------------------


def test_a_new_article_on_a_deleted_file_name_gets_a_new_id(project: Path) -> None:
    old = write(
        project, "weekly-roundup", "title: Roundup 2025\nsummary: Old.\npublished: 2025-01-10"
    )
    publish(project, send_email=False)
    first_id = _entry(project, "weekly-roundup").id
    old.unlink()
    publish(project, send_email=False, now=FIRST_RUN + timedelta(hours=1))
    write(project, "weekly-roundup", "title: Roundup 2026\nsummary: New.\npublished: 2026-11-20")
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(hours=2))
    assert [e.slug for e in report.plan.changes.new] == ["weekly-roundup"]
    second_id = _entry(project, "weekly-roundup").id
    assert second_id != first_id
    # The ledger remembers the first id even though the file name now belongs to another.
    (project / "articles" / "weekly-roundup.md").unlink()
    publish(project, send_email=False, now=FIRST_RUN + timedelta(hours=3))
    write(
        project,
        "weekly-roundup",
        "title: Roundup bis\nsummary: Third.\npublished: 2025-01-10T09:00:00Z",
    )
    publish(project, send_email=False, now=FIRST_RUN + timedelta(hours=4))
    assert _entry(project, "weekly-roundup").id not in (first_id, second_id)


def test_the_same_article_back_under_its_name_keeps_its_id(project: Path) -> None:
    publish(project, send_email=False)
    before = _entry(project, "nintedanib")
    text = (project / NINTEDANIB).read_text("utf-8")
    (project / NINTEDANIB).unlink()
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    (project / NINTEDANIB).write_text(text, "utf-8")
    report = publish(project, now=FIRST_RUN + timedelta(days=2))
    assert report.digest_id is None  # restored unchanged: nothing to announce
    after = _entry(project, "nintedanib")
    assert (after.id, after.published, after.updated) == (
        before.id,
        before.published,
        before.updated,
    )


# --- 6. the feed's date moves forward whenever the feed changes --------------------------------


def test_withdrawing_the_newest_article_moves_the_feed_date_forward(project: Path) -> None:
    publish(project, send_email=False)
    rss = etree.parse(str(project / "public" / "rss.xml")).getroot()
    atom = etree.parse(str(project / "public" / "atom.xml")).getroot()
    newest = max(
        feedparser.parse((project / "public" / "atom.xml").read_bytes()).entries,
        key=lambda e: e.updated,
    )
    slug = newest.link.rstrip("/").rsplit("/", 1)[-1]
    assert atom.findtext(f"{A}updated") == newest.updated
    (project / "articles" / f"{slug}.md").unlink()
    later = FIRST_RUN + timedelta(days=1)
    publish(project, send_email=False, now=later)
    atom = etree.parse(str(project / "public" / "atom.xml")).getroot()
    rss_after = etree.parse(str(project / "public" / "rss.xml")).getroot()
    assert atom.findtext(f"{A}updated") == "2026-11-21T12:00:00+00:00"
    assert rss_after.find("channel").findtext("lastBuildDate") == "Sat, 21 Nov 2026 12:00:00 +0000"
    assert rss.find("channel").findtext("lastBuildDate") != rss_after.find("channel").findtext(
        "lastBuildDate"
    )
    # And an unchanged publish keeps that date and writes nothing.
    again = publish(project, send_email=False, now=later + timedelta(days=1))
    assert again.written == []


# --- 7. dates in the future --------------------------------------------------------------------


def test_an_updated_date_in_the_future_is_refused_by_check_and_publish(project: Path) -> None:
    edit_article(
        project,
        "nintedanib",
        "published: 2026-10-05\n",
        "published: 2026-10-05\nupdated: 2036-10-01\n",
    )
    checked, refused = refusals(project)
    assert where(checked) == where(refused) == [(NINTEDANIB, 5, "updated")]
    assert "future" in checked[0].message


def test_a_future_published_date_stays_an_embargo(project: Path) -> None:
    write(project, "embargo", "title: E\nsummary: S.\npublished: 2026-12-01\nupdated: 2026-12-01")
    checked, refused = refusals(project)
    assert checked == refused == []


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
