"""Sign-up confirmations go through the durable outbox: a mail server that is down delays
them and the page says so honestly; `pipeline deliver` sends them once it is back.

Real parts: a real aiosmtpd server, the real ledger, the pages through Starlette's client.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from starlette.testclient import TestClient

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.store import Ledger
from pipeline.subscribers import open_store
from pipeline.web import create_app
from pipeline.workers import deliver_outbox
from tests.conftest import Received, RecordingHandler, free_port


@pytest.fixture
def down_port(project: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A port where no SMTP server listens (yet); PIPELINE_SMTP_URL points at it."""
    port = free_port()
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{port}")
    return port


@pytest.fixture
def client(project: Path, down_port: int) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(project)), follow_redirects=False) as test_client:
        yield test_client


def outbox(project: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(project / "state" / "pipeline.db") as db:
        return db.execute("SELECT digest_id, email, status FROM outbox").fetchall()


def test_sign_up_with_the_mail_server_down_is_queued_and_the_page_does_not_claim_it_was_sent(
    project: Path, client: TestClient, down_port: int
) -> None:
    response = client.post("/subscribe/", data={"email": "new.reader@example.org", "name": "N"})
    assert response.status_code == 200
    main = response.text[response.text.index("<main>") :]
    assert "Check your inbox" not in main  # nothing was sent: the server is down
    assert "on its way" not in main
    assert "We are sending a confirmation email to new.reader@example.org" in main
    # Queued durably, and the failed first try left it waiting for a retry, not lost.
    assert outbox(project) == [(0, "new.reader@example.org", "deferred")]
    status = CliRunner().invoke(cli, ["--root", str(project), "status"])
    assert re.search(r"confirmations\s+0\s+1\s+0\s+0", status.output), status.output

    received = Received()
    server = Controller(RecordingHandler(received), hostname="127.0.0.1", port=down_port)
    server.start()
    try:
        settings = load_settings(project)
        with sqlite3.connect(settings.paths.ledger) as db:  # its next try has come
            db.execute("UPDATE outbox SET next_attempt_at = '2000-01-01T00:00:00+00:00'")
        with Ledger(settings.paths.ledger) as ledger:
            report = deliver_outbox(settings, ledger)
    finally:
        server.stop()
    assert report.sent == 1 and report.complete
    (message,) = received.parsed()
    assert message["To"].addresses[0].addr_spec == "new.reader@example.org"
    assert message["Subject"].startswith("Confirm your subscription")
    text = message.get_body(("plain",))
    assert text is not None and re.search(r"/confirm/\S+", str(text.get_content()))
    assert outbox(project) == [(0, "new.reader@example.org", "sent")]


def test_a_confirmation_to_an_unsubscribed_address_is_not_cancelled_as_suppressed(
    project: Path, smtp_server: Received
) -> None:
    """Signing up again after unsubscribing needs its confirmation: the suppression that
    cancels digests must not cancel it."""
    settings = load_settings(project)
    with open_store(settings) as store:
        store.add("back.again@example.org", "", frozenset(), datetime.now(UTC))
        store.remove("back.again@example.org", datetime.now(UTC))
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        test_client.post("/subscribe/", data={"email": "back.again@example.org"})
    assert [rcpt for rcpt, _ in smtp_server.messages] == ["back.again@example.org"]
    assert outbox(project) == [(0, "back.again@example.org", "sent")]


def test_serve_retries_a_deferred_confirmation_by_itself(project: Path, down_port: int) -> None:
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[send]\n", "[send]\nretry_after = 0.1\n"),
        encoding="utf-8",
    )
    received = Received()
    server = Controller(RecordingHandler(received), hostname="127.0.0.1", port=down_port)
    app = create_app(load_settings(project), retry_every=0.2)
    with TestClient(app, follow_redirects=False) as client:
        client.post("/subscribe/", data={"email": "patient@example.org"})
        assert outbox(project) == [(0, "patient@example.org", "deferred")]
        server.start()  # the mail server comes back; nobody runs `pipeline deliver`
        try:
            deadline = time.monotonic() + 10
            while not received.messages and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            server.stop()
    assert received.recipients() == ["patient@example.org"]
    assert outbox(project) == [(0, "patient@example.org", "sent")]
