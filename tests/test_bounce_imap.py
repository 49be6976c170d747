"""`pipeline bounces --from imap://…` against a real Dovecot (tests/dovecot.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from imapclient import IMAPClient

from pipeline.cli import cli
from tests.conftest import Received
from tests.dovecot import Dovecot, dovecot_server
from tests.helpers import publish
from tests.inbound_samples import sample
from tests.test_bounce_inbox import ANA, BEN, CHLOE, status, with_return_path


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server() as server:
        yield server


def imap(server: Dovecot) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login(server.user, server.password)
    return client


def run(root: Path, server: Dovecot, password: str, *args: str) -> Result:
    env = {"PIPELINE_BOUNCES_PASSWORD": password}
    return CliRunner().invoke(
        cli, ["--root", str(root), "bounces", "--from", server.url, *args], env=env
    )


def test_bounces_from_a_real_imap_server(
    project: Path, smtp_server: Received, dovecot: Dovecot
) -> None:
    with_return_path(project)
    publish(project)
    dsn = sample("postfix-user-unknown.eml", ANA)
    assert f"To: {smtp_server.mail_from[ANA]}\n".encode() in dsn  # Ana's real VERP address
    client = imap(dovecot)
    for raw in (dsn, sample("arf-complaint.eml", BEN), sample("human-reply.eml", CHLOE)):
        client.append("INBOX", raw.replace(b"\n", b"\r\n"))
    client.logout()

    result = run(project, dovecot, dovecot.password)
    assert result.exit_code == 0, result.output
    assert "3 message(s), 3 new" in result.output
    assert [status(project, a)[0] for a in (ANA, BEN, CHLOE)] == [
        "bounced",
        "unsubscribed",
        "active",
    ]
    client = imap(dovecot)
    # Handled mail moved to Processed and marked \Seen; the reader's question left unread.
    client.select_folder("INBOX")
    (left,) = client.search(["ALL"])
    fetched = client.fetch([left], ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[left]
    assert b"Question about nintedanib" in fetched[b"BODY[HEADER.FIELDS (SUBJECT)]"]
    assert b"\\Seen" not in fetched[b"FLAGS"]
    client.select_folder("Processed")
    moved = client.fetch(client.search(["ALL"]), ["FLAGS"])
    assert len(moved) == 2 and all(b"\\Seen" in m[b"FLAGS"] for m in moved.values())
    client.logout()

    again = run(project, dovecot, dovecot.password)
    assert again.exit_code == 0 and "1 message(s), 0 new, 1 already processed" in again.output


def test_a_refused_imap_login_is_one_line(project: Path, dovecot: Dovecot) -> None:
    result = run(project, dovecot, "not-the-password")
    assert result.exit_code == 1
    assert "refused the login" in result.output and "Traceback" not in result.output
    assert "not-the-password" not in result.output


def test_a_missing_imap_folder_is_one_line(project: Path, dovecot: Dovecot) -> None:
    url = dovecot.url.replace("/INBOX", "/NoSuchFolder")
    result = CliRunner().invoke(
        cli,
        ["--root", str(project), "bounces", "--from", url],
        env={"PIPELINE_BOUNCES_PASSWORD": dovecot.password},
    )
    assert result.exit_code == 1 and "NoSuchFolder" in result.output
    assert "Traceback" not in result.output
