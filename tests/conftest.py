"""Shared fixtures: a copy of the sample project and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parent.parent
# Debian's chromium, headless, with nothing fetched in the background (see STANDARDS).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Received:
    """What the test SMTP server accepted: one (envelope recipient, raw bytes) per message."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    mail_from: dict[str, str] = field(default_factory=dict)  # envelope sender by recipient

    def parsed(self) -> list[EmailMessage]:
        return [email.message_from_bytes(raw, policy=policy.default) for _, raw in self.messages]  # type: ignore[misc]

    def recipients(self) -> list[str]:
        return [rcpt for rcpt, _ in self.messages]


class RecordingHandler:
    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            self.received.messages.append((rcpt, envelope.original_content))
            self.received.mail_from[rcpt] = envelope.mail_from
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(app: Any, port: int) -> Iterator[None]:
    """``app`` served by a real uvicorn on 127.0.0.1:``port`` (in a thread) within the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Received]:
    """A real SMTP server on 127.0.0.1 and a free port; PIPELINE_SMTP_URL points at it."""
    received = Received()
    controller = Controller(RecordingHandler(received), hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    try:
        yield received
    finally:
        controller.stop()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped project (config, templates, articles, subscribers) to publish from."""
    root = tmp_path / "site"
    root.mkdir()
    for name in ("articles", "templates", "subscribers"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pipeline.toml", root / "pipeline.toml")
    monkeypatch.setenv("PIPELINE_SECRET_KEY", "test-secret-key")
    monkeypatch.delenv("PIPELINE_SMTP_URL", raising=False)
    monkeypatch.delenv("PIPELINE_SMTP_PASSWORD", raising=False)
    return root


@contextmanager
def chromium_browser(why: str) -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (no browser download), closed after."""
    chromium = require_tool("chromium", why=why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def require_tool(path_or_name: str, *, why: str) -> str:
    """The full path of an external program a test needs, or skip with the reason.

    Under CI (``PIPELINE_CI=1``, set by ``.ci/run``) a missing tool fails the test instead:
    CI installs every tool, so a skip there would hide a broken set-up.
    """
    import os

    found = shutil.which(path_or_name)
    if found is None:
        message = f"{path_or_name} is not installed ({why}); .ci/run installs it"
        if os.environ.get("PIPELINE_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextmanager
def chromium_page(why: str, **page_options: Any) -> Iterator[Any]:
    """A page of Debian's headless chromium driven by Playwright (skips without chromium)."""
    from playwright.sync_api import sync_playwright

    chromium = require_tool("/usr/bin/chromium", why=why)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            opened = browser.new_page(**page_options)
            opened.set_default_timeout(15_000)
            yield opened
        finally:
            browser.close()


# --- the ledger's two backends ----------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_ambient_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PIPELINE_DATABASE_URL from the shell never leaks into a test: SQLite by default."""
    monkeypatch.delenv("PIPELINE_DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session: PIPELINE_TEST_DATABASE_URL, or one started here
    from the machine's binaries (see tests/pg_server.py). Skips with the reason when there
    is none; under CI (PIPELINE_CI=1) that fails instead."""
    import os

    from tests.pg_server import postgres_server

    given = os.environ.get("PIPELINE_TEST_DATABASE_URL", "").strip()
    if given:
        yield given
        return
    try:
        with postgres_server(fsync=False) as url:
            yield url
    except RuntimeError as exc:
        message = f"no PostgreSQL to test against ({exc}); .ci/run installs it"
        if os.environ.get("PIPELINE_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped afterwards."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"pipeline_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _no_ambient_database: None
) -> str:
    """Run the test once on each backend: the SQLite file, then a fresh PostgreSQL
    database (PIPELINE_DATABASE_URL set, so subprocesses use it too). Returns the name."""
    if request.param == "postgresql":
        monkeypatch.setenv("PIPELINE_DATABASE_URL", request.getfixturevalue("fresh_postgres"))
    return str(request.param)
