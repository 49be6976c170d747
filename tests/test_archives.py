"""RFC 5005 archived feeds: the capped subscription feeds link to stable archive pages that
together carry every older entry."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from tests.feed_rules import assert_valid, feed_documents
from tests.helpers import FIRST_RUN, publish

A = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
BASE = "http://localhost:8000/"


@pytest.fixture(autouse=True)
def _four_sample_articles(project: Path) -> None:
    """These tests count archive pages for the four single-file sample articles."""
    shutil.rmtree(project / "articles" / "nintedanib-senscis-results")


def cap(project: Path, entries: int) -> None:
    config = project / "pipeline.toml"
    text = config.read_text("utf-8").replace("max_entries = 50", f"max_entries = {entries}")
    config.write_text(text, "utf-8")


def links(path: Path) -> dict[str, str]:
    root = etree.parse(str(path)).getroot()
    container = root.find("channel") if root.tag == "rss" else root
    return {link.get("rel"): link.get("href") for link in container.findall(f"{A}link")}


def local(public: Path, url: str) -> Path:
    assert url.startswith(BASE)
    return public / url.removeprefix(BASE)


def history(public: Path, name: str) -> list[str]:
    """Every entry id, walking from the subscription feed along prev-archive links."""
    ids: list[str] = []
    path: Path | None = public / name
    seen = set()
    while path is not None:
        assert path not in seen, "prev-archive links go round in a circle"
        seen.add(path)
        ids += [e.id for e in feedparser.parse(path.read_bytes()).entries]
        previous = links(path).get("prev-archive")
        path = local(public, previous) if previous else None
    return ids


def test_archive_pages_carry_every_older_entry(project: Path) -> None:
    cap(project, 1)
    publish(project, send_email=False)
    public = project / "public"
    articles = len(list((project / "articles").glob("*.md")))
    for name in ("atom.xml", "rss.xml"):
        assert len(feedparser.parse((public / name).read_bytes()).entries) == 1
        ids = history(public, name)
        assert len(ids) == len(set(ids)) == articles
    feed_links = links(public / "atom.xml")
    assert feed_links["prev-archive"] == f"{BASE}archive/3/atom.xml"
    oldest = etree.parse(str(public / "archive/1/atom.xml")).getroot()
    assert oldest.find(f"{FH}archive") is not None
    assert links(public / "archive/1/atom.xml") == {
        "self": f"{BASE}archive/1/atom.xml",
        "alternate": BASE,
        "current": f"{BASE}atom.xml",
    }
    assert links(public / "archive/3/atom.xml")["prev-archive"] == f"{BASE}archive/2/atom.xml"
    assert "hub" not in links(public / "archive/1/atom.xml")
    # Topic feeds have their own archives.
    assert len(history(public, "topics/scleroderma/atom.xml")) == sum(
        "scleroderma" in p.read_text("utf-8").split("---")[1]
        for p in (project / "articles").glob("*.md")
    )
    for document in feed_documents(public):
        assert_valid(document, now=FIRST_RUN)


def test_unchanged_archive_pages_are_not_rewritten(project: Path) -> None:
    cap(project, 2)
    publish(project, send_email=False)
    page_one = (project / "public/archive/1/atom.xml").read_bytes()
    (project / "articles" / "newest.md").write_text(
        "---\ntitle: Newest\nsummary: S.\npublished: 2026-11-20\n---\nText.\n", "utf-8"
    )
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert "archive/2/atom.xml" in report.written
    assert not any(path.startswith("archive/1/") for path in report.written)
    assert (project / "public/archive/1/atom.xml").read_bytes() == page_one
    assert publish(project, send_email=False, now=FIRST_RUN + timedelta(days=2)).written == []


def test_archive_pages_no_longer_needed_are_removed(project: Path) -> None:
    cap(project, 2)
    (project / "articles" / "newest.md").write_text(
        "---\ntitle: Newest\nsummary: S.\npublished: 2026-11-20\n---\nText.\n", "utf-8"
    )
    publish(project, send_email=False)
    assert (project / "public/archive/2/atom.xml").is_file()
    (project / "articles" / "newest.md").unlink()
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert "archive/2" in report.removed
    assert not (project / "public/archive/2").exists()
    assert "prev-archive" not in links(project / "public/archive/1/atom.xml")
    assert links(project / "public/atom.xml")["prev-archive"] == f"{BASE}archive/1/atom.xml"


def test_an_unchanged_archive_page_is_not_rendered_again_unless_its_file_is_gone(
    project: Path,
) -> None:
    cap(project, 1)
    publish(project, send_email=False)
    again = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert "archive/1/atom.xml" not in again.plan.files  # not even rendered
    assert again.written == [] and again.removed == []
    (project / "public/archive/1/atom.xml").unlink()
    restored = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=2))
    assert restored.written == ["archive/1/atom.xml"]
