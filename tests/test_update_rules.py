"""Update semantics (issue 12): what counts as an update, minor corrections, ``updated``
and feed dates that never go back, ids never given to another article, future dates.

Each test failed before its fix.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from tests.feed_rules import feed_documents
from tests.helpers import (
    FIRST_RUN,
    downgrade_ledger,
    edit_article,
    publish,
    refusals,
    where,
    write,
)

A = "{http://www.w3.org/2005/Atom}"
NINTEDANIB = "articles/nintedanib.md"


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


def test_a_ledger_from_before_migration_9_is_migrated_and_publishes_nothing_new(
    project: Path,
) -> None:
    import sqlite3

    publish(project, send_email=False)
    downgrade_ledger(project / "state" / "pipeline.db", 8)  # as before migration 9
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
