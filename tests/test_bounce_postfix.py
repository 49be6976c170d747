"""The whole late-bounce path with a real Postfix: accepted now, bounced later, read after.

The digest goes through a private Postfix (tests/postfix_relay.py) that accepts every
recipient. For the one that does not exist, Postfix writes its own RFC 3464 DSN and sends
it to the message's VERP envelope sender; the test SMTP server standing for the project's
mail domain drops it into the bounce Maildir, and ``pipeline bounces`` reads it there.
"""

from __future__ import annotations

import mailbox
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from pipeline.inbound import InboundKind, read_message
from tests.conftest import free_port
from tests.helpers import publish
from tests.postfix_relay import UNKNOWN_DOMAIN, postfix_relay
from tests.test_bounce_inbox import ANA, BEN, run, status, with_return_path

GHOST = f"ghost@{UNKNOWN_DOMAIN}"


class BounceDomain:
    """Stand-in for the project's mail domain: mail to bounces+… lands in the Maildir."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.dsns: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if all(r.startswith("bounces+") for r in envelope.rcpt_tos):
            mailbox.Maildir(self.maildir, create=True).add(envelope.original_content)
            self.dsns.append(envelope.original_content)
        return "250 Message accepted"


@pytest.fixture
def bounce_domain(project: Path) -> Iterator[tuple[BounceDomain, int]]:
    handler = BounceDomain(project / "state" / "bounces")
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def test_a_real_postfix_dsn_arriving_later_suppresses_exactly_that_subscriber(
    project: Path, bounce_domain: tuple[BounceDomain, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_return_path(project)
    with (project / "subscribers" / "subscribers.csv").open("a", encoding="utf-8") as csv:
        csv.write(f"{GHOST},Ghost Reader,\n")
    domain, sink_port = bounce_domain
    with postfix_relay(sink_port) as relay:
        monkeypatch.setenv("PIPELINE_SMTP_URL", relay.url)
        report = publish(project)
        assert report.delivery is not None and report.delivery.complete  # all accepted
        deadline = time.monotonic() + 30
        while not domain.dsns and time.monotonic() < deadline:
            time.sleep(0.1)
    assert domain.dsns, f"Postfix sent no DSN: {relay.log.read_text(errors='replace')}"
    assert status(project, GHOST)[0] == "active"  # accepted: nothing known yet

    (dsn,) = domain.dsns
    message = read_message(dsn)  # Postfix's own words, as it wrote them
    assert [e.kind for e in message.events] == [InboundKind.HARD]
    assert message.events[0].recipient == GHOST and message.events[0].status == "5.1.1"

    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert f"hard: {GHOST}: suppressed" in result.output
    state, reason = status(project, GHOST)
    assert state == "bounced" and "5.1.1" in reason
    assert [status(project, a)[0] for a in (ANA, BEN)] == ["active", "active"]
