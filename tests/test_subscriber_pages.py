"""The subscriber pages meet the site's accessibility bar, checked in real headless Chromium
(Debian's chromium through Playwright) against the app under uvicorn: landmarks, one h1,
a label for every field, WCAG 2.2 AA text contrast, a visible focus ring, 24 px targets,
and no horizontal scrolling at 375 px.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from pipeline import load_settings
from pipeline.subscribers import load_subscribers, open_store, sign_token
from pipeline.web import create_app
from tests.conftest import Received, chromium_page, free_port, served

KEY = "test-secret-key"

# Runs in the page: every problem found, as text. Contrast per WCAG 2.x relative luminance;
# the background is the first opaque one up the tree (white at the top).
AUDIT = """() => {
  const problems = [];
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.getClientRects().length === 0) continue;
    const style = getComputedStyle(el);
    const fg = luminance(rgb(style.color)), bg = luminance(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: ${el.tagName} "${el.textContent.trim().slice(0, 40)}"`);
  }
  for (const role of ['header', 'main', 'footer']) {
    if (document.querySelectorAll(`body > ${role}`).length !== 1) problems.push(`one <${role}> landmark expected`);
  }
  if (document.querySelectorAll('h1').length !== 1) problems.push('one h1 expected');
  if (!document.documentElement.lang) problems.push('no lang');
  for (const field of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!(field.labels && field.labels.length) && !field.getAttribute('aria-label')) problems.push(`field ${field.name} has no label`);
    // a checkbox or radio button is clicked through its whole label
    const box = (['checkbox', 'radio'].includes(field.type) ? field.closest('label') : field).getBoundingClientRect();
    if (box.height < 24) problems.push(`target ${field.name} is ${box.height}px high`);
  }
  for (const button of document.querySelectorAll('button')) {
    if (!button.textContent.trim()) problems.push('a button without text');
    if (button.getBoundingClientRect().height < 24) problems.push('a button under 24px');
  }
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push('scrolls sideways');
  return problems;
}"""


@pytest.fixture
def site(project: Path, smtp_server: Received) -> Iterator[tuple[str, dict[str, str]]]:
    settings = load_settings(project)
    with open_store(settings) as store:
        lists = load_subscribers(project / "subscribers", project, known_topics=store.known_topics)
        store.merge(lists.entries, datetime.now(UTC))
    email = "ana.reyes@example.org"
    tokens = {p: sign_token(email, KEY, p) for p in ("unsubscribe", "preferences")}
    port = free_port()
    with served(create_app(settings), port):
        yield f"http://127.0.0.1:{port}/", tokens


@pytest.fixture
def page() -> Iterator[Page]:
    viewport = {"width": 375, "height": 800}
    with chromium_page("the pages are checked in a browser", viewport=viewport) as opened:
        yield opened


def audit(page: Page) -> Any:
    return page.evaluate(AUDIT)


def test_every_subscriber_page_is_accessible_and_styled_like_the_site(
    site: tuple[str, dict[str, str]], page: Page
) -> None:
    base, tokens = site
    pages = {
        "sign-up form": f"{base}subscribe/",
        "unsubscribe": f"{base}unsubscribe/{tokens['unsubscribe']}",
        "preferences": f"{base}preferences/{tokens['preferences']}",
        "a bad link": f"{base}confirm/not-a-token",
    }
    for name, url in pages.items():
        page.goto(url)
        assert audit(page) == [], name
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "system-ui" in font, name  # the site's font, not the browser's default
        assert page.evaluate("getComputedStyle(document.body).color") == "rgb(27, 42, 58)"

    page.goto(f"{base}subscribe/")
    page.get_by_role("button", name="Subscribe").click()  # empty: the browser refuses
    page.get_by_label("Email address").fill("new@example.org")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_selector("h1:text('Confirm your address')")
    assert audit(page) == [], "the page after signing up"

    # The audit itself finds what it looks for: pale text and an unlabelled field.
    page.evaluate(
        """() => { const p = document.createElement('p'); p.textContent = 'pale';
        p.style.color = '#aaa'; document.querySelector('main').append(p);
        const i = document.createElement('input'); i.name = 'bare';
        document.querySelector('main').append(i); }"""
    )
    found = audit(page)
    assert any(f.startswith("contrast") and "pale" in f for f in found)
    assert "field bare has no label" in found

    page.goto(f"{base}subscribe/")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # past the site link, into the address field
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "a visible focus ring"
