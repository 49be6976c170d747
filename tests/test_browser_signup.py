"""End to end in a real browser: Debian's headless chromium, driven by Playwright, against
``pipeline serve``'s app under uvicorn, with mail through the aiosmtpd test server.

Sign up through the form, confirm from the email, receive a digest, unsubscribe from its
link, and receive nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from pipeline import PublishReport, load_settings
from pipeline.subscribers import open_store
from pipeline.web import create_app
from tests.conftest import Received, chromium_page, free_port, served
from tests.helpers import FIRST_RUN, edit_article, publish

READER = "bea.browser@example.org"


@pytest.fixture
def site(project: Path, smtp_server: Received) -> Iterator[str]:
    """The app served by uvicorn on a free port; ``base_url`` points at it."""
    port = free_port()
    config_file = project / "pipeline.toml"
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(
        text.replace("http://localhost:8000/", f"http://127.0.0.1:{port}/"), encoding="utf-8"
    )
    with served(create_app(load_settings(project)), port):
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium_page("the end-to-end sign-up runs in a browser") as opened:
        yield opened


def messages_to(received: Received, address: str, *, at_least: int = 1) -> list[EmailMessage]:
    """Messages the SMTP server accepted for ``address``, waiting a little for them."""
    deadline = time.monotonic() + 15
    while True:
        found = [
            m
            for rcpt, m in zip(received.recipients(), received.parsed(), strict=True)
            if rcpt == address
        ]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    return str(part.get_content())


def publish_now(project: Path, **options: Any) -> PublishReport:
    """Publish from another thread: Playwright's sync API keeps an event loop in this one,
    and delivery runs its own with ``asyncio.run``."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(publish, project, **options).result()


def follow(page: Page, html: str, link_text: str) -> None:
    """Show an email's HTML and open one of its links, as a reader would (in this tab)."""
    page.set_content(html)
    href = page.get_by_role("link", name=link_text, exact=True).get_attribute("href")
    assert href is not None
    page.goto(href)


def status(project: Path) -> str | None:
    with open_store(load_settings(project)) as store:
        record = store.find(READER)
    return None if record is None else record.status


def test_sign_up_confirm_receive_unsubscribe_and_receive_nothing_more(
    project: Path, smtp_server: Received, site: str, page: Page
) -> None:
    page.goto(f"{site}subscribe/")
    page.get_by_label("Email address").fill(READER)
    page.get_by_label("Name").fill("Bea Browser")
    page.get_by_label("Scleroderma", exact=True).check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your address")

    (confirmation,) = messages_to(smtp_server, READER)
    assert "does not give medical advice" in " ".join(body(confirmation, "plain").split())
    follow(page, body(confirmation, "html"), "Confirm my subscription")
    expect(page.get_by_role("button", name="Confirm my subscription")).to_be_visible()
    assert status(project) == "pending"
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
    assert status(project) == "active"

    publish_now(project)
    digest = messages_to(smtp_server, READER, at_least=2)[1]
    assert "Hello Bea Browser," in body(digest, "plain")
    follow(page, body(digest, "html"), "Unsubscribe")
    expect(page.get_by_role("button", name="Unsubscribe")).to_be_visible()
    assert status(project) == "active"  # opening the link changed nothing
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    assert status(project) == "unsubscribed"

    smtp_server.messages.clear()
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    report = publish_now(project, now=FIRST_RUN + timedelta(days=1))
    assert report.delivery is not None and report.delivery.sent > 0
    assert smtp_server.recipients(), "the edit reached the other subscribers"
    assert READER not in smtp_server.recipients()


def test_a_reader_chooses_how_often_on_the_form_and_on_the_preferences_page(
    project: Path, smtp_server: Received, site: str, page: Page
) -> None:
    page.goto(f"{site}subscribe/")
    expect(page.get_by_label("Each time we publish")).to_be_checked()  # the default
    page.get_by_label("Email address").fill(READER)
    page.get_by_label("Once a week", exact=False).check()
    page.get_by_role("button", name="Subscribe").click()
    (confirmation,) = messages_to(smtp_server, READER)
    follow(page, body(confirmation, "html"), "Confirm my subscription")
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("main")).to_contain_text("once a week, on Mondays at 8:00")

    page.get_by_role("link", name="Choose topics").click()
    expect(page.get_by_label("Once a week", exact=False)).to_be_checked()
    page.get_by_label("Once a month", exact=False).check()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    with open_store(load_settings(project)) as store:
        record = store.find(READER)
    assert record is not None and record.frequency == "monthly"
