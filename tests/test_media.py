"""Rich articles: bundles with images, footnotes, tables, and the checks on them.

The shipped sample ``articles/nintedanib-senscis-results/`` (two figures, a footnote and a
table) is published, and every image URL in its page and in the three feeds is fetched
from ``pipeline serve`` (uvicorn on 127.0.0.1).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import feedparser
import httpx2
import pytest
from click.testing import CliRunner
from lxml import html as lxml_html

from pipeline import load_settings
from pipeline.check import check_project
from pipeline.cli import cli
from pipeline.markdown import render_markdown
from pipeline.media import EMAIL_IMAGE_LIMIT
from pipeline.web import create_app
from tests.conftest import free_port, served
from tests.helpers import FIRST_RUN, publish

SLUG = "nintedanib-senscis-results"
BASE = "http://localhost:8000/"
PNG = re.compile(rf"{BASE}media/{SLUG}/fvc-decline\.[0-9a-f]{{8}}\.png")


@pytest.fixture
def served_site(project: Path) -> Iterator[tuple[httpx2.Client, str]]:
    """The sample project, its base_url pointed at a real uvicorn serving it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    config = project / "pipeline.toml"
    config.write_text(config.read_text("utf-8").replace(BASE, base), "utf-8")
    publish(project, send_email=False)
    with served(create_app(load_settings(project)), port), httpx2.Client() as client:
        yield client, base


def image_urls(html: str) -> list[str]:
    return [str(src) for src in lxml_html.fromstring(html).xpath("//img/@src")]


def test_bundle_images_resolve_in_the_page_and_every_feed(
    served_site: tuple[httpx2.Client, str],
) -> None:
    client, base = served_site
    page = client.get(f"{base}articles/{SLUG}/")
    assert page.status_code == 200
    found = {"page": image_urls(page.text)}
    rss = feedparser.parse(client.get(f"{base}rss.xml").content)
    atom = feedparser.parse(client.get(f"{base}atom.xml").content)
    feed = json.loads(client.get(f"{base}feed.json").content)
    for name, parsed in (("rss", rss), ("atom", atom)):
        entry = next(e for e in parsed.entries if SLUG in e.link)
        found[name] = image_urls(entry.content[0].value)
    item = next(i for i in feed["items"] if SLUG in i["url"])
    found["json"] = image_urls(item["content_html"])
    for where, urls in found.items():
        assert len(urls) == 2, where
        for url in urls:
            assert url.startswith(f"{base}media/{SLUG}/"), (where, url)
            got = client.get(url)
            assert got.status_code == 200, (where, url)
            assert "immutable" in got.headers["cache-control"]
            name = url.rsplit("/", 1)[1]
            stem, _hash, suffix = name.split(".")
            source = Path(__file__).parent.parent / "articles" / SLUG / f"{stem}.{suffix}"
            assert got.content == source.read_bytes()
    svg = client.get(next(u for u in found["page"] if u.endswith(".svg")))
    assert svg.headers["content-type"] == "image/svg+xml"
    assert "default-src 'none'" in svg.headers["content-security-policy"]


def test_footnotes_link_both_ways_on_the_site_and_are_plain_in_feeds(project: Path) -> None:
    publish(project, send_email=False)
    public = project / "public"
    page = lxml_html.fromstring((public / "articles" / SLUG / "index.html").read_bytes())
    ref = page.xpath("//sup[@class='footnote-ref']/a")[0]
    assert ref.text == "1" and ref.get("href") == "#fn-fvc"
    note = page.xpath("//section[@class='footnotes']//li[@id='fn-fvc']")[0]
    back = note.xpath(".//a[@class='footnote-backref']")[0]
    assert back.get("href") == "#fnref-fvc" and page.xpath("//a[@id='fnref-fvc']")
    for feed in ("rss.xml", "atom.xml"):
        entry = next(
            e for e in feedparser.parse((public / feed).read_bytes()).entries if SLUG in e.link
        )
        content = entry.content[0].value
        assert "<sup>1</sup>" in content, feed
        assert "footnote-backref" not in content and 'href="#' not in content, feed
        assert "FVC is reported in millilitres" in content


def test_tables_keep_their_header_and_alignment_without_obsolete_attributes(
    project: Path,
) -> None:
    publish(project, send_email=False)
    page = lxml_html.fromstring(
        (project / "public" / "articles" / SLUG / "index.html").read_bytes()
    )
    headers = [th.text_content() for th in page.xpath("//table/thead/tr/th")]
    assert headers == ["Group", "People", "Yearly FVC loss", "Stopped because of side effects"]
    assert page.xpath("//table/tbody/tr[1]/td[3]/@class") == ["align-right"]
    assert not page.xpath("//*[@align or @style]")


def test_definition_lists_render_on_the_site_and_in_feeds(project: Path) -> None:
    publish(project, send_email=False)
    public = project / "public"
    page = lxml_html.fromstring((public / "articles" / SLUG / "index.html").read_bytes())
    terms = [dt.text_content() for dt in page.xpath("//div[@class='body']//dl/dt")]
    assert terms == ["Forced vital capacity (FVC)", "Tyrosine kinase", "Open-label extension"]
    assert "stiffen with scar tissue" in page.xpath("//div[@class='body']//dl/dd")[0].text_content()
    entry = next(
        e for e in feedparser.parse((public / "atom.xml").read_bytes()).entries if SLUG in e.link
    )
    assert "<dt>Tyrosine kinase</dt>" in entry.content[0].value


def test_definition_syntax_inside_code_or_quotes_stays_as_written() -> None:
    html = render_markdown("```\nTerm\n: not a definition\n```\n\n> Quote\n> : kept\n", BASE)
    assert "<dl>" not in html and ": not a definition" in html and ": kept" in html


def test_sanitising_stays_strict_around_footnotes_and_tables() -> None:
    hostile = (
        "Text[^1] <script>alert(1)</script><style>body{}</style>\n\n"
        '<p onclick="x()" id="main" class="skip">p</p> <sup class="evil" onmouseover="y()">2</sup>\n\n'
        '<a href="#content" class="footnote-ref brand" id="fnref-1x" aria-label="steal">a</a>\n\n'
        '| a | b |\n|---|---|\n| <img src=x onerror="z()" alt="x"> | <td style="color:red">c |\n\n'
        'Term\n: <span onclick="d()">def</span> <script>alert(3)</script>\n\n'
        "[^1]: Note <iframe src='https://evil.example/'></iframe>\n"
    )
    html = render_markdown(hostile, BASE + "articles/x/")
    for forbidden in ("<script", "<style", "<iframe", "onclick", "onmouseover", "onerror"):
        assert forbidden not in html, forbidden
    assert "style=" not in html and 'id="main"' not in html and "skip" not in html
    assert "evil" not in html and "brand" not in html and "steal" not in html
    assert 'href="#content"' not in html  # only footnote fragments stay relative
    assert '<section class="footnotes">' in html and "<dd>" in html


def test_a_replaced_figure_updates_the_article_and_gets_a_new_name(project: Path) -> None:
    publish(project, send_email=False)
    public = project / "public"
    old = PNG.search((public / "articles" / SLUG / "index.html").read_text("utf-8"))
    assert old is not None
    figure = project / "articles" / SLUG / "fvc-decline.png"
    figure.write_bytes(figure.read_bytes() + b"\0")  # a changed file, still a small image
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert [e.slug for e in report.plan.changes.updated] == [SLUG]
    new = PNG.search((public / "articles" / SLUG / "index.html").read_text("utf-8"))
    assert new is not None and new.group(0) != old.group(0)
    atom = feedparser.parse((public / "atom.xml").read_bytes())
    entry = next(e for e in atom.entries if SLUG in e.link)
    assert new.group(0) in entry.content[0].value
    assert entry.updated.startswith("2026-11-21") and entry.published.startswith("2026-11-02")
    # The old name keeps working for feed readers that stored the old entry.
    assert (public / old.group(0).removeprefix(BASE)).is_file()


def test_a_withdrawn_bundle_takes_its_media_along(project: Path) -> None:
    publish(project, send_email=False)
    assert (project / "public" / "media" / SLUG).is_dir()
    shutil.rmtree(project / "articles" / SLUG)
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert f"media/{SLUG}" in report.removed
    assert not (project / "public" / "media" / SLUG).exists()


def test_check_reports_missing_files_missing_alt_large_images_and_active_svg(
    project: Path,
) -> None:
    bundle = project / "articles" / SLUG
    text = (bundle / "index.md").read_text("utf-8")
    text = text.replace("](fvc-decline.png)", "](fvc-decline.png)\n\n![](mechanism.svg)")
    text += "\n![A missing chart](missing-chart.png)\n\n![A huge photo](huge.jpg)\n"
    (bundle / "index.md").write_text(text, "utf-8")
    (bundle / "huge.jpg").write_bytes(b"\xff\xd8" + b"\0" * EMAIL_IMAGE_LIMIT)
    (bundle / "mechanism.svg").write_text(
        (bundle / "mechanism.svg")
        .read_text("utf-8")
        .replace("<title>", '<g onload="x()"/><title>'),
        "utf-8",
    )
    (project / "articles" / "single.md").write_text(
        "---\ntitle: A single file\nsummary: S.\npublished: 2026-11-01\n---\n\n"
        "![A chart beside the file](chart.png)\n",
        "utf-8",
    )
    (project / "articles" / "chart.png").write_bytes(b"\x89PNG")
    lines = text.split("\n")
    problems = [(p.file, p.line, p.message) for p in check_project(load_settings(project))]
    source = f"articles/{SLUG}/index.md"
    line_of = {
        name: lines.index(next(x for x in lines if x.startswith(prefix))) + 1
        for name, prefix in (
            ("mechanism.svg", "![](mechanism.svg)"),
            ("missing-chart.png", "![A missing chart]"),
            ("huge.jpg", "![A huge photo]"),
        )
    }
    assert any(
        f == source and n == line_of["mechanism.svg"] and "no alternative text" in m
        for f, n, m in problems
    ), problems
    assert any(
        f == source and n == line_of["missing-chart.png"] and "missing-chart.png is not there" in m
        for f, n, m in problems
    ), problems
    assert any(
        f == source and n == line_of["huge.jpg"] and "over the 500 KB" in m for f, n, m in problems
    ), problems
    assert any(
        f == f"articles/{SLUG}/mechanism.svg" and "script, an event handler" in m
        for f, n, m in problems
    ), problems
    assert any(
        f == "articles/single.md" and n == 7 and "make the article a folder" in m
        for f, n, m in problems
    ), problems


def test_a_slug_that_is_both_a_file_and_a_folder_is_refused(project: Path) -> None:
    shutil.copy(project / "articles" / "nintedanib.md", project / "articles" / f"{SLUG}.md")
    problems = check_project(load_settings(project))
    assert any(p.file == f"articles/{SLUG}.md" and "keep one" in p.message for p in problems), (
        problems
    )


def test_images_from_other_sites_are_refused_by_check_and_publish(project: Path) -> None:
    """A remote image is a third-party request (a tracking pixel, at worst) from every page,
    feed and email that shows it: check and publish refuse it, by line."""
    bundle = project / "articles" / SLUG
    text = (bundle / "index.md").read_text("utf-8")
    text += "\n![Pixel](https://tracker.example.com/p.png)\n\n![Also](//cdn.example.net/x.png)\n"
    (bundle / "index.md").write_text(text, "utf-8")
    lines = text.split("\n")
    problems = [(p.file, p.line, p.message) for p in check_project(load_settings(project))]
    for url, alt in (
        ("https://tracker.example.com/p.png", "Pixel"),
        ("//cdn.example.net/x.png", "Also"),
    ):
        line = lines.index(f"![{alt}]({url})") + 1
        assert (
            f"articles/{SLUG}/index.md",
            line,
            f"the image {url} is on another site, "
            "which would see every reader who opens the page, feed or email; save it into "
            "the article's folder and refer to it by its name",
        ) in problems, problems
    result = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-email"])
    assert result.exit_code == 1 and "tracker.example.com" in result.output
    assert not (project / "public" / "articles" / SLUG).exists()


def test_images_outside_the_bundle_are_named_with_a_fix(project: Path) -> None:
    """``../x.png`` names a file publish never copies: check says so, by line, with the file
    to move (not "put None in the folder"), however the path climbs out."""
    bundle = project / "articles" / SLUG
    (project / "articles" / "outside.png").write_bytes(b"\x89PNG")
    text = (bundle / "index.md").read_text("utf-8")
    text += "\n![Climbs out](../outside.png)\n\n![Climbs further](./a/../../../pipeline.toml)\n"
    (bundle / "index.md").write_text(text, "utf-8")
    lines = text.split("\n")
    problems = [(p.file, p.line, p.message) for p in check_project(load_settings(project))]
    source = f"articles/{SLUG}/index.md"
    for url, alt in (
        ("../outside.png", "Climbs out"),
        ("./a/../../../pipeline.toml", "Climbs further"),
    ):
        line = lines.index(f"![{alt}]({url})") + 1
        assert any(
            f == source
            and n == line
            and m.startswith(f"{url} is outside the article's folder")
            and f"folder {SLUG}/" in m
            for f, n, m in problems
        ), problems
    assert not any("None" in m for _, _, m in problems), problems


@pytest.mark.parametrize(
    "active",
    ['<set attributeName="onmouseover" to="x()"/>', "<animate attributeName = 'onclick'/>"],
)
def test_an_svg_animation_adding_an_event_handler_is_active(project: Path, active: str) -> None:
    svg = project / "articles" / SLUG / "mechanism.svg"
    svg.write_text(svg.read_text("utf-8").replace("<title>", active + "<title>"), "utf-8")
    problems = check_project(load_settings(project))
    assert any(
        p.file == f"articles/{SLUG}/mechanism.svg" and "script, an event handler" in p.message
        for p in problems
    ), problems
