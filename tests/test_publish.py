"""End to end: publish the sample project through a real SMTP server, then parse what came out."""

from __future__ import annotations

import csv
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import feedparser
import pytest

from pipeline import ContentError, execute, load_settings, open_ledger, plan_publish
from tests.conftest import Received
from tests.helpers import FIRST_RUN, article_files, edit_article, publish

DISCLAIMER_PHRASE = "does not give medical advice"

# Every test here publishes, and so reads and writes the ledger: each runs on both backends.
pytestmark = pytest.mark.usefixtures("ledger_backend")


def subscriber_topics(root: Path) -> dict[str, set[str]]:
    with (root / "subscribers" / "subscribers.csv").open(encoding="utf-8") as handle:
        return {
            row["email"]: {t for t in row["topics"].split(";") if t}
            for row in csv.DictReader(handle)
        }


def article_topics(root: Path) -> dict[str, set[str]]:
    import yaml

    topics = {}
    for slug, path in article_files(root).items():
        front = path.read_text(encoding="utf-8").split("---")[1]
        topics[slug] = set(yaml.safe_load(front).get("topics", []))
    return topics


def body_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def test_first_publish_sends_one_message_per_matching_subscriber(
    project: Path, smtp_server: Received
) -> None:
    report = publish(project)

    wanted = subscriber_topics(project)
    topics_of = article_topics(project)
    expected = {
        email
        for email, chosen in wanted.items()
        if not chosen or any(chosen & t for t in topics_of.values())
    }
    assert sorted(smtp_server.recipients()) == sorted(expected)
    assert report.delivery is not None and report.delivery.sent == len(expected)

    for message in smtp_server.parsed():
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert not message.defects
        for subtype in ("plain", "html"):
            text = body_text(message, subtype)
            assert DISCLAIMER_PHRASE in " ".join(text.split())
            assert "/unsubscribe/" in text
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_each_subscriber_only_gets_their_topics(project: Path, smtp_server: Received) -> None:
    publish(project)
    wanted = subscriber_topics(project)
    topics_of = article_topics(project)
    settings = load_settings(project)
    for rcpt, message in zip(smtp_server.recipients(), smtp_server.parsed(), strict=True):
        html = body_text(message, "html")
        chosen = wanted[rcpt]
        for slug, topics in topics_of.items():
            url = f"{settings.base_url}articles/{slug}/"
            should_see = not chosen or bool(chosen & topics)
            assert (url in html) == should_see, f"{rcpt} and {slug}"


def test_second_publish_sends_nothing_and_rewrites_nothing(
    project: Path, smtp_server: Received
) -> None:
    publish(project)
    first_count = len(smtp_server.messages)
    feed_bytes = (project / "public" / "atom.xml").read_bytes()

    report = publish(project, now=FIRST_RUN + timedelta(hours=1))

    assert len(smtp_server.messages) == first_count
    assert report.written == []
    assert report.digest_id is None
    assert (project / "public" / "atom.xml").read_bytes() == feed_bytes


def test_a_publish_after_an_edit_at_any_instant_rewrites_nothing_the_next_time(
    project: Path,
) -> None:
    # A real clock has microseconds; the ledger keeps whole seconds. The feeds written when
    # the edit is published must equal those the next, unchanged publish renders.
    publish(project, send_email=False)
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    edited_at = FIRST_RUN + timedelta(days=1, microseconds=610530)
    publish(project, now=edited_at, send_email=False)
    feeds = {p: p.read_bytes() for p in (project / "public").rglob("*.*") if p.is_file()}

    report = publish(project, now=edited_at + timedelta(hours=1), send_email=False)

    assert report.written == []
    assert {p: p.read_bytes() for p in feeds} == feeds


def test_an_edit_is_announced_as_updated_and_keeps_its_feed_id(
    project: Path, smtp_server: Received
) -> None:
    publish(project)
    before = {
        e.link: e for e in feedparser.parse((project / "public" / "atom.xml").read_bytes()).entries
    }
    smtp_server.messages.clear()

    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, swallowed whole")
    later = FIRST_RUN + timedelta(days=2)
    report = publish(project, now=later)

    assert [e.slug for e in report.plan.changes.updated] == ["nintedanib"]
    assert report.plan.changes.new == ()
    after = {
        e.link: e for e in feedparser.parse((project / "public" / "atom.xml").read_bytes()).entries
    }
    link = next(link for link in after if "/nintedanib/" in link)
    assert after[link].id == before[link].id
    assert after[link].published == before[link].published
    assert after[link].updated_parsed[:6] == later.timetuple()[:6]
    assert before[link].updated != after[link].updated
    others = [link_ for link_ in after if link_ != link]
    assert all(after[o].updated == before[o].updated for o in others)

    html = [body_text(m, "html") for m in smtp_server.parsed()]
    assert html and all("Updated" in h and "/articles/nintedanib/" in h for h in html)
    # Ben chose only multiple sclerosis: nothing about nintedanib for him.
    assert "ben.okafor@example.org" not in smtp_server.recipients()


def test_feeds_parse_and_end_every_entry_with_the_disclaimer(project: Path) -> None:
    publish(project, send_email=False)
    for name in ("rss.xml", "atom.xml"):
        feed = feedparser.parse((project / "public" / name).read_bytes())
        assert not feed.bozo, feed.get("bozo_exception")
        assert len(feed.entries) == len(article_files(project))
        dates = [e.published_parsed for e in feed.entries]
        assert dates == sorted(dates, reverse=True)
        for entry in feed.entries:
            content = entry.content[0].value
            assert content.rstrip().endswith("</div>")
            assert DISCLAIMER_PHRASE in content[content.rindex("<hr") :]


def test_rss_channel_link_is_the_site_not_the_feed(project: Path) -> None:
    publish(project, send_email=False)
    feed = feedparser.parse((project / "public" / "rss.xml").read_bytes())
    assert feed.feed.link == load_settings(project).base_url


def test_invalid_article_is_reported_by_file_and_nothing_is_published(
    project: Path, smtp_server: Received
) -> None:
    (project / "articles" / "broken.md").write_text(
        "---\ntitle: A broken article\npublished: someday\ntopics: [scleroderma]\n---\nText.\n",
        encoding="utf-8",
    )
    with pytest.raises(ContentError) as caught:
        publish(project)
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith("articles/broken.md:3: published:") for p in problems), problems
    assert any("articles/broken.md" in p and "summary" in p for p in problems), problems
    assert not (project / "public").exists()
    assert smtp_server.messages == []


def test_a_plan_without_email_renders_no_digest_and_cannot_be_sent(
    project: Path, smtp_server: Received
) -> None:
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=FIRST_RUN, email=False)
        assert plan.changes.announced and plan.digest is None
        with pytest.raises(ValueError, match="send_email=False"):
            execute(plan, settings, ledger, send_email=True)
        assert ledger.known_articles() == {}  # refused before recording anything
        report = execute(plan, settings, ledger, send_email=False)
    assert report.digest_id is None and smtp_server.messages == []
    assert (project / "public" / "atom.xml").exists()
    # The articles count as published: a later publish with email has nothing to announce.
    assert publish(project, now=FIRST_RUN + timedelta(hours=1)).plan.digest is None
