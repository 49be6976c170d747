"""Every kind of page, served by ``pipeline serve``'s app, in real headless Chromium.

Each page kind (index, topic, article with a 300-character title of long drug names and a
table of them, the sample bundle article with figures, footnote and table, about, the digest
archive and a reader's web edition) and the HTML email of a digest that had to collapse, at
375 px (a phone) and 1280 px: nothing scrolls sideways, every text keeps WCAG AA contrast, the
landmarks are there, and nothing is fetched from another host. Screenshots go to
test-artifacts/ (git-ignored) for a human look.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import load_settings, open_ledger
from pipeline.preview import build_preview
from pipeline.web import create_app
from tests.conftest import chromium_browser, free_port, served
from tests.helpers import FIRST_RUN, publish
from tests.test_digest_inbox import add_articles
from tests.test_email_browser import ARTIFACTS, CONTRAST_JS

LONG_TITLE = (
    "Anti-interleukin-6-receptor therapy with tocilizumab compared with "
    "nintedanibethanesulfonatesoftcapsules and mycophenolatemofetilhydrochloride "
    "in diffusecutaneoussystemicsclerosis-associated interstitiallungdisease: what "
    "the focuSSced, SENSCIS and SLS-II trials found about lung function and survival"
)
assert len(LONG_TITLE) >= 300
WIDTHS = (375, 1280)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """The sample project plus a long-titled article, published with a digest, served."""
    import shutil

    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("browser") / "site"
    root.mkdir()
    for name in ("articles", "templates", "subscribers"):
        shutil.copytree(REPO / name, root / name)
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    config = (REPO / "pipeline.toml").read_text("utf-8").replace("http://localhost:8000/", base)
    (root / "pipeline.toml").write_text(config, "utf-8")
    (root / "articles" / "long-title.md").write_text(
        f"---\ntitle: '{LONG_TITLE}'\nsummary: 'A summary naming "
        "methylprednisolonesodiumsuccinateinjection and a URL "
        "https://clinicaltrials.gov/study/NCT02597933?term=nintedanib&cond=scleroderma&rank=1'\n"
        "published: 2026-11-10\ntopics: [scleroderma]\n---\nText with "
        "cyclophosphamidemonohydrateintravenouspulsetherapy in it.\n\n"
        # A long drug name in a table cell and heading: the column must not widen the page.
        "| Antithymocyteglobulinrabbitderivedimmunoglobulin | Dose |\n|---|---|\n"
        "| Mycophenolatemofetilhydrochloridedelayedreleasetablets | 1000 mg |\n",
        encoding="utf-8",
    )
    add_articles(root, 30)
    import os

    os.environ.setdefault("PIPELINE_SECRET_KEY", "test-secret-key")
    os.environ.pop("PIPELINE_SMTP_URL", None)
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        email_html = build_preview(settings, ledger, now=FIRST_RUN).html
    assert "Also in this digest" in email_html  # the collapsed layout is what is tested
    report = publish(root)  # into the local Maildir: a digest and its web editions exist
    assert report.digest_id == 1
    edition = next(p for p in (root / "public" / "digests" / "1").iterdir() if p.is_dir()).name
    with served(create_app(load_settings(root)), port):
        yield base, email_html, edition


@pytest.fixture(scope="module")
def browser(site: tuple[str, str, str]) -> Iterator[Any]:
    """Started after the site: Playwright's loop must not be running while publish sends."""
    with chromium_browser(why="pages are rendered in headless Chromium") as launched:
        yield launched


PAGES = {
    "index": "",
    "topic": "topics/scleroderma/",
    "article-long-title": "articles/long-title/",
    "article-figures": "articles/nintedanib-senscis-results/",
    "about": "about/",
    "digest-archive": "digests/1/",
    "digest-edition": "digests/1/{edition}/",
}


def check_page(page: Any, width: int, kind: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{kind}-{width}px.png"), full_page=True)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{kind}: {scroll_width}px of content in a {width}px window"
    too_wide = page.evaluate(
        f"""[...document.body.querySelectorAll('*')]
            .filter((el) => el.getClientRects().length
                    && el.getBoundingClientRect().right > {width} + 0.5)
            .map((el) => el.tagName + ' ' + (el.textContent || '').trim().slice(0, 30))"""
    )
    assert too_wide == [], kind
    texts = page.evaluate(CONTRAST_JS)
    low = [t for t in texts if t["ratio"] < (3.0 if t["size"] >= 24 else 4.5)]
    assert low == [], f"{kind}: contrast below WCAG AA: {low}"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", sorted(PAGES))
def test_page_kinds_fit_the_screen_and_keep_contrast(
    browser: Any, site: tuple[str, str, str], kind: str, width: int
) -> None:
    base, _, edition = site
    page = browser.new_page(viewport={"width": width, "height": 900})
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda request: None if request.url.startswith(base) else elsewhere.append(request.url),
    )
    try:
        response = page.goto(base + PAGES[kind].format(edition=edition), wait_until="load")
        assert response is not None and response.status == 200
        check_page(page, width, kind)
        assert elsewhere == [], f"{kind}: third-party requests {elsewhere}"
        if kind.startswith("digest"):
            return  # the email's own layout; its landmarks are the email's
        landmarks = page.evaluate(
            """() => ({
                main: document.querySelectorAll('main').length,
                banner: document.querySelectorAll('body > header').length,
                contentinfo: document.querySelectorAll('body > footer').length,
                nav: document.querySelectorAll('nav[aria-label]').length,
                h1: document.querySelectorAll('h1').length,
                lang: document.documentElement.lang,
                skip: document.querySelector('a.skip')?.getAttribute('href'),
            })"""
        )
        assert landmarks == {
            "main": 1,
            "banner": 1,
            "contentinfo": 1,
            "nav": 1,
            "h1": 1,
            "lang": "en",
            "skip": "#content",
        }, kind
    finally:
        page.close()


def test_article_page_shows_review_date_author_disclaimer_and_related(
    browser: Any, site: tuple[str, str, str]
) -> None:
    base, _, _ = site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(base + "articles/nintedanib-senscis-results/", wait_until="load")
        byline = page.inner_text(".byline")
        assert "By Dr. Maya Lindqvist, medical editor" in byline
        assert "Published 2 November 2026" in byline and "Last reviewed 30 November 2026" in byline
        # The disclaimer sits above the article text, inside the first screen.
        box = page.locator("aside.disclaimer-note").bounding_box()
        assert box is not None and box["y"] < 900
        related = page.locator("aside.related li a").all_inner_texts()
        assert len(related) == 3 and "Nintedanib in the SENSCIS trial" not in " ".join(related)
        # Table cells have visible borders and the header a filled background.
        border = page.evaluate(
            "getComputedStyle(document.querySelector('.body td')).borderTopStyle"
        )
        header = page.evaluate(
            "getComputedStyle(document.querySelector('.body thead th')).backgroundColor"
        )
        assert border == "solid" and header != "rgba(0, 0, 0, 0)"
        for image in page.locator(".body img").all():
            assert image.evaluate("(img) => img.complete && img.naturalWidth > 0")
    finally:
        page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_collapsed_html_email_fits_the_screen(
    browser: Any, site: tuple[str, str, str], width: int
) -> None:
    _, html, _ = site
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.route("**/*", lambda route: route.abort())
    try:
        page.set_content(html, wait_until="load")
        check_page(page, width, "email")
    finally:
        page.close()
