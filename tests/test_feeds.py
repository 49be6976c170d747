"""Feeds: RSS 2.0, Atom 1.0 and JSON Feed 1.1 for the site and each topic, on real output.

Golden files: ``tests/golden/`` holds the feeds and pages of the sample project published
under the frozen clock ``FIRST_RUN``. After an intended change, regenerate them with

    PIPELINE_REGENERATE_GOLDEN=1 pytest tests/test_feeds.py -k golden

and review the diff before committing it.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from pipeline import ContentError, load_settings
from tests.conftest import REPO
from tests.helpers import FIRST_RUN, article_files, edit_article, publish

GOLDEN = REPO / "tests" / "golden"
GOLDEN_FILES = (
    "rss.xml",
    "atom.xml",
    "feed.json",
    "topics/scleroderma/rss.xml",
    "topics/scleroderma/atom.xml",
    "topics/scleroderma/feed.json",
    "index.html",
    "topics/multiple-sclerosis/index.html",
    "articles/nintedanib/index.html",
)
ATOM_NS = {"a": "http://www.w3.org/2005/Atom"}
DISCLAIMER_PHRASE = "does not give medical advice"
RFC822 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")


def feed_dirs(root: Path) -> list[str]:
    return ["", *(f"topics/{t}/" for t in sorted(load_settings(root).topics))]


def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(REPO / "tests" / "data" / "atom.rng")))


def write_article(root: Path, slug: str, front: str, body: str = "Some text.\n") -> None:
    (root / "articles" / f"{slug}.md").write_text(f"---\n{front.strip()}\n---\n{body}", "utf-8")


def entry_links(root: Path, name: str = "atom.xml") -> list[str]:
    parsed = feedparser.parse((root / "public" / name).read_bytes())
    return [e.link for e in parsed.entries]


def json_feed(root: Path, directory: str = "") -> dict:  # type: ignore[type-arg]
    return json.loads((root / "public" / directory / "feed.json").read_text("utf-8"))  # type: ignore[no-any-return]


# --- validity ---------------------------------------------------------------------------


def test_every_feed_parses_and_atom_matches_the_rfc_4287_schema(project: Path) -> None:
    publish(project, send_email=False)
    schema = atom_schema()
    for directory in feed_dirs(project):
        for name in ("rss.xml", "atom.xml"):
            data = (project / "public" / directory / name).read_bytes()
            parsed = feedparser.parse(data)
            assert not parsed.bozo, (directory + name, parsed.get("bozo_exception"))
        atom = etree.parse(str(project / "public" / directory / "atom.xml"))
        assert schema.validate(atom), (directory, schema.error_log)
        document = json_feed(project, directory)
        assert document["version"] == "https://jsonfeed.org/version/1.1"


def test_the_schema_rejects_an_entry_without_updated() -> None:
    # The schema is ours: prove it is strict enough to catch a missing required element.
    bad = etree.fromstring(
        b'<feed xmlns="http://www.w3.org/2005/Atom"><id>x</id><title>t</title>'
        b"<updated>2026-01-01T00:00:00Z</updated><entry><id>e</id><title>t</title></entry></feed>"
    )
    assert not atom_schema().validate(bad)


def test_atom_feed_and_entries_carry_what_rfc_4287_requires(project: Path) -> None:
    publish(project, send_email=False)
    settings = load_settings(project)
    root = etree.parse(str(project / "public" / "atom.xml")).getroot()
    assert len(root.findall("a:id", ATOM_NS)) == 1
    assert root.find("a:author/a:name", ATOM_NS).text == settings.site.author
    links = {link.get("rel"): link.get("href") for link in root.findall("a:link", ATOM_NS)}
    assert links == {"self": settings.base_url + "atom.xml", "alternate": settings.base_url}
    entries = root.findall("a:entry", ATOM_NS)
    assert entries
    updated = [e.find("a:updated", ATOM_NS).text for e in entries]
    assert root.find("a:updated", ATOM_NS).text == max(updated)
    for entry in entries:
        for field in ("id", "title", "updated", "published", "summary", "content"):
            assert len(entry.findall(f"a:{field}", ATOM_NS)) == 1, field
        for field in ("updated", "published"):
            assert RFC3339.match(entry.find(f"a:{field}", ATOM_NS).text)
        assert entry.find("a:content", ATOM_NS).get("type") == "html"
        assert entry.find("a:id", ATOM_NS).text.startswith("tag:localhost,")
        alternate = entry.find("a:link[@rel='alternate']", ATOM_NS)
        assert alternate.get("href").startswith(settings.base_url + "articles/")
        assert entry.findall("a:category", ATOM_NS)


def test_rss_channel_and_items_follow_rss_2(project: Path) -> None:
    publish(project, send_email=False)
    settings = load_settings(project)
    channel = etree.parse(str(project / "public" / "rss.xml")).getroot().find("channel")
    assert channel.findtext("link") == settings.base_url  # the site, not the feed
    assert channel.findtext("language") == "en"
    self_link = channel.find("{http://www.w3.org/2005/Atom}link")
    assert (self_link.get("rel"), self_link.get("href")) == ("self", settings.base_url + "rss.xml")
    items = channel.findall("item")
    pub_dates = [parsedate_to_datetime(i.findtext("pubDate")) for i in items]
    assert channel.findtext("lastBuildDate") == max(
        (i.findtext("pubDate") for i in items), key=parsedate_to_datetime
    )
    assert pub_dates == sorted(pub_dates, reverse=True)
    content = "{http://purl.org/rss/1.0/modules/content/}encoded"
    for item in items:
        assert RFC822.match(item.findtext("pubDate")), item.findtext("pubDate")
        guid = item.find("guid")
        assert guid.get("isPermaLink") == "false" and guid.text.startswith("tag:")
        assert "<" not in item.findtext("description")  # the plain summary
        assert "<h2>" in item.findtext(content)  # the full HTML
        assert item.findtext("{http://purl.org/dc/elements/1.1/}creator") == settings.site.author
        assert item.findall("category")


def test_json_feed_has_every_required_field(project: Path) -> None:
    publish(project, send_email=False)
    settings = load_settings(project)
    document = json_feed(project)
    assert document["home_page_url"] == settings.base_url
    assert document["feed_url"] == settings.base_url + "feed.json"
    assert document["title"] == settings.site.title
    atom_ids = [
        e.id for e in feedparser.parse((project / "public" / "atom.xml").read_bytes()).entries
    ]
    assert [i["id"] for i in document["items"]] == atom_ids
    for item in document["items"]:
        for field in ("id", "url", "title", "content_html", "date_published", "date_modified"):
            assert item[field], field
        assert RFC3339.match(item["date_published"]) and RFC3339.match(item["date_modified"])
        assert DISCLAIMER_PHRASE in item["content_html"][item["content_html"].rindex("<hr") :]


# --- content ----------------------------------------------------------------------------


def test_entry_content_is_sanitised_absolute_and_ends_with_the_disclaimer(project: Path) -> None:
    write_article(
        project,
        "hostile",
        'title: "A hostile article"\nsummary: "Tries everything."\npublished: 2026-11-01\n'
        "topics: [scleroderma]",
        '<script>alert(1)</script>\n\n<p onclick="steal()">Click</p>\n\n'
        '[bad](javascript:alert(1)) <a href="javascript:alert(2)">bad</a> '
        "[rel](../nintedanib/) ![chart](/img/chart.png)\n",
    )
    publish(project, send_email=False)
    base = load_settings(project).base_url
    for directory in ("", "topics/scleroderma/"):
        for name in ("rss.xml", "atom.xml"):
            raw = (project / "public" / directory / name).read_bytes()
            parsed = feedparser.parse(raw)
            entry = next(e for e in parsed.entries if "/hostile/" in e.link)
            html = entry.content[0].value
            assert "<script" not in html and "alert(1)</script" not in html
            assert not re.search(r"\son\w+=", html), "an event handler survived"
            assert not re.search(r"(href|src)=\"\s*javascript:", html, re.IGNORECASE)
            assert f'href="{base}articles/nintedanib/"' in html
            assert f'src="{base}img/chart.png"' in html
            assert DISCLAIMER_PHRASE in html[html.rindex("<hr") :]
            assert entry.summary == "Tries everything."
        item = next(i for i in json_feed(project, directory)["items"] if "/hostile/" in i["url"])
        assert "<script" not in item["content_html"]


def test_topic_feeds_hold_only_their_topic(project: Path) -> None:
    publish(project, send_email=False)
    settings = load_settings(project)
    for topic in settings.topics:
        links = entry_links(project, f"topics/{topic}/atom.xml")
        for link in links:
            slug = link.rstrip("/").rsplit("/", 1)[1]
            text = article_files(project)[slug].read_text("utf-8")
            assert topic in text.split("---")[1]
        assert [i["url"] for i in json_feed(project, f"topics/{topic}/")["items"]] == links
        channel = etree.parse(str(project / "public" / "topics" / topic / "rss.xml")).getroot()
        assert channel.find("channel").findtext("link") == f"{settings.base_url}topics/{topic}/"


def test_entry_cap_keeps_the_newest(project: Path) -> None:
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text("utf-8").replace("max_entries = 50", "max_entries = 2"), "utf-8"
    )
    publish(project, send_email=False)
    everything = sorted(
        (
            re.search(r"published: (\S+)", p.read_text("utf-8")).group(1),  # type: ignore[union-attr]
            slug,
        )
        for slug, p in article_files(project).items()
    )
    newest = [f"http://localhost:8000/articles/{slug}/" for _, slug in reversed(everything[-2:])]
    assert entry_links(project, "rss.xml") == newest
    assert entry_links(project, "atom.xml") == newest
    assert [i["url"] for i in json_feed(project)["items"]] == newest


# --- identity, time and bytes -----------------------------------------------------------


def test_same_input_gives_the_same_bytes(project: Path, tmp_path: Path) -> None:
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    publish(project, send_email=False)
    publish(twin, send_email=False, now=FIRST_RUN + timedelta(minutes=5))
    for name in GOLDEN_FILES:
        assert (project / "public" / name).read_bytes() == (twin / "public" / name).read_bytes()
    before = {p: p.read_bytes() for p in (project / "public").rglob("*") if p.is_file()}
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=3))
    assert report.written == []
    assert {p: p.read_bytes() for p in (project / "public").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden(project: Path, name: str) -> None:
    publish(project, send_email=False)
    produced = (project / "public" / name).read_bytes()
    golden = GOLDEN / name
    if os.environ.get("PIPELINE_REGENERATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(produced)
    assert produced == golden.read_bytes(), f"{name} differs from tests/golden/{name}"


def test_an_edit_moves_updated_and_keeps_id_and_published(project: Path) -> None:
    publish(project, send_email=False)
    before = {i["url"]: i for i in json_feed(project)["items"]}
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    later = FIRST_RUN + timedelta(days=2)
    publish(project, send_email=False, now=later)
    after = {i["url"]: i for i in json_feed(project)["items"]}
    url = "http://localhost:8000/articles/nintedanib/"
    assert after[url]["id"] == before[url]["id"]
    assert after[url]["date_published"] == before[url]["date_published"]
    assert after[url]["date_modified"] == "2026-11-22T12:00:00Z"
    assert len(after) == len(before)  # nothing duplicated
    atom = etree.parse(str(project / "public" / "atom.xml")).getroot()
    assert atom.find("a:updated", ATOM_NS).text == "2026-11-22T12:00:00+00:00"
    assert "with food" in (project / "public/articles/nintedanib/index.html").read_text("utf-8")


def test_a_rename_with_an_explicit_id_keeps_the_entry(project: Path) -> None:
    publish(project, send_email=False)
    old = next(i for i in json_feed(project)["items"] if i["url"].endswith("/nintedanib/"))
    source = (project / "articles" / "nintedanib.md").read_text("utf-8")
    (project / "articles" / "nintedanib.md").unlink()
    text = source.replace("---\n", f"---\nid: {old['id']}\n", 1)
    (project / "articles" / "nintedanib-ofev.md").write_text(text, "utf-8")

    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))

    assert [e.slug for e in report.plan.changes.renamed] == ["nintedanib-ofev"]
    assert report.plan.changes.withdrawn == () and report.plan.changes.new == ()
    new = next(i for i in json_feed(project)["items"] if i["id"] == old["id"])
    assert new["url"].endswith("/articles/nintedanib-ofev/")
    assert (new["date_published"], new["date_modified"]) == (
        old["date_published"],
        old["date_modified"],
    )
    assert not (project / "public" / "articles" / "nintedanib").exists()
    assert (project / "public" / "articles" / "nintedanib-ofev" / "index.html").is_file()
    # And the next publish sees nothing to do.
    again = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=2))
    assert not again.plan.changes.any and again.written == []


def test_a_rename_without_an_id_is_a_withdrawal_and_a_new_entry(project: Path) -> None:
    publish(project, send_email=False)
    (project / "articles" / "nintedanib.md").rename(project / "articles" / "ofev.md")
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert report.plan.changes.withdrawn == ("nintedanib",)
    assert [e.slug for e in report.plan.changes.new] == ["ofev"]


def test_changing_a_published_id_is_refused_with_the_fix(project: Path) -> None:
    publish(project, send_email=False)
    edit_article(project, "nintedanib", "---\n", "---\nid: tag:example.org,2026:other\n")
    with pytest.raises(ContentError) as caught:
        publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    (problem,) = caught.value.problems
    assert problem.file == "articles/nintedanib.md" and problem.field == "id"
    assert "id: tag:localhost,2026-10-05:articles/nintedanib" in problem.message


def test_two_files_with_one_id_are_refused(project: Path) -> None:
    for slug in ("nintedanib", "tocilizumab"):
        edit_article(project, slug, "---\n", "---\nid: tag:example.org,2026:same\n")
    with pytest.raises(ContentError) as caught:
        publish(project, send_email=False)
    assert [(p.file, p.field) for p in caught.value.problems] == [("articles/tocilizumab.md", "id")]


# --- lifecycle --------------------------------------------------------------------------


def test_drafts_and_future_articles_wait_then_appear(project: Path) -> None:
    write_article(
        project,
        "upcoming",
        'title: "Upcoming"\nsummary: Later.\npublished: 2026-12-01\ntopics: [scleroderma]',
    )
    write_article(
        project,
        "unfinished",
        'title: "Unfinished"\nsummary: Not yet.\npublished: 2026-11-01\ndraft: true',
    )
    report = publish(project, send_email=False)
    assert [a.slug for a in report.plan.changes.scheduled] == ["upcoming"]
    for directory in ("", "topics/scleroderma/"):
        links = " ".join(entry_links(project, directory + "rss.xml"))
        assert "upcoming" not in links and "unfinished" not in links
    assert not (project / "public" / "articles" / "upcoming").exists()
    assert "upcoming" not in (project / "public" / "index.html").read_text("utf-8")

    later = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=12))
    assert [e.slug for e in later.plan.changes.new] == ["upcoming"]
    assert later.plan.changes.withdrawn == ()
    assert entry_links(project)[0] == "http://localhost:8000/articles/upcoming/"
    assert (project / "public" / "articles" / "upcoming" / "index.html").is_file()
    assert "unfinished" not in " ".join(entry_links(project))


@pytest.mark.parametrize("how", ["deleted", "made a draft"])
def test_a_withdrawn_article_leaves_every_feed_and_page(project: Path, how: str) -> None:
    publish(project, send_email=False)
    path = project / "articles" / "nintedanib.md"
    if how == "deleted":
        path.unlink()
    else:
        edit_article(project, "nintedanib", "---\n", "---\ndraft: true\n")
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))

    assert report.plan.changes.withdrawn == ("nintedanib",)
    assert "articles/nintedanib" in report.removed
    assert not (project / "public" / "articles" / "nintedanib").exists()
    public = project / "public"
    for file in public.rglob("*"):
        if file.is_file() and not file.name.startswith(".") and "media" not in file.parts:
            assert "/articles/nintedanib/" not in file.read_text("utf-8"), file
    atom = feedparser.parse((public / "atom.xml").read_bytes())
    assert len(atom.entries) == len(article_files(project)) - (0 if how == "deleted" else 1)


def test_a_broken_page_template_publishes_nothing(project: Path) -> None:
    from pipeline import TemplateError

    publish(project, send_email=False)
    before = {p: p.read_bytes() for p in (project / "public").rglob("*") if p.is_file()}
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    template = project / "templates" / "site" / "article.html.j2"
    template.write_text(template.read_text("utf-8") + "{% if %}", "utf-8")
    with pytest.raises(TemplateError, match=r"templates/site/article.html.j2:\d+"):
        publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert {p: p.read_bytes() for p in (project / "public").rglob("*") if p.is_file()} == before
