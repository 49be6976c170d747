"""The digest's HTML part in real headless Chromium (Debian's, no browser download).

At 375 px (a phone) and 800 px nothing may scroll sideways, even with an unbreakable word in
a title; every visible text keeps 4.5:1 contrast against what is behind it, in light and
in dark mode; the page asks for nothing over the network. Screenshots land in
test-artifacts/ (git-ignored) for a human look.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import load_settings, open_ledger
from pipeline.preview import build_preview
from tests.conftest import REPO, chromium_browser
from tests.helpers import FIRST_RUN

ARTIFACTS = REPO / "test-artifacts"
LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 2

# For every visible element holding text: its colour, the first opaque background behind
# it, and the WCAG contrast ratio of the two.
CONTRAST_JS = """
() => {
  const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const lin = [r, g, b].map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || !el.getClientRects().length || style.visibility === 'hidden' || style.opacity === '0') continue;
    const fg = lum(rgb(style.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    out.push({text: el.textContent.trim().slice(0, 40), ratio, size: parseFloat(style.fontSize)});
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_browser(why="the digest is rendered in headless Chromium") as launched:
        yield launched


@pytest.fixture
def digest_html(project: Path) -> str:
    """The HTML part of the digest a subscriber to every topic gets, with a very long word."""
    (project / "articles" / "long-word.md").write_text(
        "---\n"
        f"title: 'A {LONG_WORD} in a title'\n"
        f"summary: A summary with {LONG_WORD} and https://example.org/{LONG_WORD}/ in it.\n"
        "published: 2026-10-01\n"
        "topics: [scleroderma]\n"
        "---\nText.\n",
        encoding="utf-8",
    )
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        preview = build_preview(
            settings, ledger, subscriber="chloe.martin@example.org", now=FIRST_RUN
        )
    assert LONG_WORD in preview.html
    return preview.html


def open_page(browser: Any, html: str, width: int, scheme: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    requested: list[str] = []

    def refuse(route: Any) -> None:
        requested.append(route.request.url)
        route.abort()

    page.route("**/*", refuse)
    page.set_content(html, wait_until="load")
    return page, requested


@pytest.mark.parametrize("width", [375, 800])
def test_no_horizontal_overflow_and_nothing_fetched(
    browser: Any, digest_html: str, width: int
) -> None:
    page, requested = open_page(browser, digest_html, width, "light")
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"digest-{width}px.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{scroll_width}px of content in a {width}px window"
        too_wide = page.evaluate(
            f"""[...document.body.querySelectorAll('*')]
                .filter((el) => el.getBoundingClientRect().right > {width} + 0.5)
                .map((el) => el.tagName + ' ' + (el.textContent || '').trim().slice(0, 30))"""
        )
        assert too_wide == []
        assert page.evaluate("document.documentElement.lang") == "en"
        assert requested == [], "no tracking pixel, remote font or image"
    finally:
        page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_visible_text_has_enough_contrast_and_size(
    browser: Any, digest_html: str, scheme: str
) -> None:
    page, _ = open_page(browser, digest_html, 375, scheme)
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"digest-375px-{scheme}.png"), full_page=True)
        texts = page.evaluate(CONTRAST_JS)
        assert len(texts) > 10
        low = [t for t in texts if t["ratio"] < 4.5]
        assert low == [], f"contrast below 4.5:1 in {scheme} mode: {low}"
        small = [t for t in texts if t["size"] < 14]
        assert small == [], f"text below 14px: {small}"
    finally:
        page.close()
