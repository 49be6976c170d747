"""Refusals during a run, against a real SMTP server (aiosmtpd) that refuses on purpose.

A refusal about the sender or relay leaves every subscriber active and every message
pending, to be sent exactly once when the relay is fixed; a full mailbox or an oversized
message never suppresses on its own; an unknown user is suppressed as the policy says;
the same refusal for everyone trips the circuit breaker.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import load_settings, open_ledger
from pipeline.cli import cli
from pipeline.workers import deliver_outbox
from tests.helpers import publish
from tests.smtp_faults import Faults, Server, faulty_server
from tests.test_delivery import assert_one_copy_each, configure, outbox

DOMAINS = ("example.net", "example.com", "mail.example", "post.example")
RELAY_DENIED = "554 5.7.1 <{address}>: Relay access denied"
BLOCKLISTED = (
    "554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using "
    "zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.9"
)


def add_readers(root: Path, count: int) -> list[str]:
    """Subscribers spread over several domains, every topic chosen."""
    emails = [f"reader{i:03d}@{DOMAINS[i % len(DOMAINS)]}" for i in range(count)]
    lines = ["email,name,topics", *(f"{e},Reader {i}," for i, e in enumerate(emails))]
    (root / "subscribers" / "readers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return emails


@pytest.fixture
def site(project: Path) -> Path:
    add_readers(project, 16)
    configure(
        project,
        smtp={"timeout": 2.0, "connect_timeout": 2.0},
        send={"retry_after": 0.0, "max_attempts": 3},
    )
    return project


def statuses(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "state" / "pipeline.db") as db:
        return dict(db.execute("SELECT email_key, status FROM subscribers").fetchall())


def causes(root: Path) -> dict[str, str | None]:
    with sqlite3.connect(root / "state" / "pipeline.db") as db:
        return {e.lower(): c for e, c in db.execute("SELECT email, cause FROM outbox")}


def use(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SMTP_URL", server.url)


def publish_refused(root: Path) -> str:
    """Publish against a refusing relay: the publish is done, its delivery says why not."""
    delivery = publish(root).delivery
    assert delivery is not None and delivery.sent == 0 and not delivery.complete
    assert delivery.stopped is not None and delivery.stopped.startswith("nothing was delivered")
    return delivery.stopped


def deliver(root: Path) -> None:
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        report = deliver_outbox(settings, ledger)
    assert report.complete, report


@pytest.mark.parametrize("refusal", [RELAY_DENIED, BLOCKLISTED], ids=["relay", "blocklist"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_a_relay_refusing_the_sender_suppresses_nobody_and_the_fix_sends_each_once(
    site: Path, monkeypatch: pytest.MonkeyPatch, refusal: str, pipelining: bool
) -> None:
    with faulty_server(Faults(every_rcpt=refusal), pipelining=pipelining) as bad:
        use(bad, monkeypatch)
        message = publish_refused(site)
    assert bad.handler.log.rejected, "the fault was never injected"
    assert "554 5.7.1" in message and "nobody was suppressed" in message
    assert "21 message(s) stay pending" in message and "pipeline deliver" in message
    assert set(statuses(site).values()) == {"active"}
    rows = outbox(site)
    assert len(rows) == 21 and {r.status for r in rows.values()} == {"pending"}
    assert all(r.attempts == 0 and r.lease_owner is None for r in rows.values())
    tried = [e for e, r in rows.items() if r.last_reply]
    assert tried and all(rows[e].last_reply.startswith("554 5.7.1") for e in tried)  # type: ignore[union-attr]
    assert {causes(site)[e] for e in tried} <= {
        "sender: relay access denied",
        "sender: sending host blocklisted",
    }

    with faulty_server(pipelining=pipelining) as fixed:
        use(fixed, monkeypatch)
        deliver(site)
        assert_one_copy_each(site, fixed.received)
        deliver(site)  # nothing is left to send twice
    assert len(fixed.received.messages) == 21


def test_the_cli_says_a_publish_delivered_nothing_and_deliver_finds_the_digest(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    with faulty_server(Faults(every_rcpt=RELAY_DENIED)) as bad:
        use(bad, monkeypatch)
        result = runner.invoke(cli, ["--root", str(site), "publish", "--yes"])
        refused = runner.invoke(cli, ["--root", str(site), "deliver"])
    assert result.exit_code == 3, result.output  # published; delivered nothing
    assert "Published " in result.output
    assert refused.exit_code == 1 and "nothing was delivered" in refused.stderr
    assert "nothing was delivered" in result.stderr and "Relay access denied" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    status = json.loads(runner.invoke(cli, ["--root", str(site), "status", "--json"]).output)
    (digest,) = status["digests"]
    assert digest["pending"] == 21 and digest["failed"] == 0
    assert set(digest["causes"]) == {"sender: relay access denied"}

    with faulty_server() as fixed:
        use(fixed, monkeypatch)
        again = runner.invoke(cli, ["--root", str(site), "deliver"])
    assert again.exit_code == 0, again.output + again.stderr
    assert "21 sent" in again.output
    assert len(fixed.received.messages) == 21


@pytest.mark.parametrize(
    ("where", "reply"),
    [
        ("rcpt", "552 5.2.2 <{address}>: Mailbox full"),
        ("data", "552 5.2.2 Quota exceeded (mailbox for user is full)"),
        ("data", "552 5.2.3 Message length exceeds administrative limit"),
        ("rcpt", "452 4.2.2 The email account that you tried to reach is over quota."),
    ],
    ids=["552-5.2.2-rcpt", "552-5.2.2-data", "552-5.2.3-data", "452-4.2.2-rcpt"],
)
def test_full_mailboxes_and_size_refusals_never_suppress_on_their_own(
    site: Path, monkeypatch: pytest.MonkeyPatch, where: str, reply: str
) -> None:
    full = "reader005@example.com"
    faults = (
        Faults(rcpt_replies={full: reply})
        if where == "rcpt"
        else Faults(data_replies={full: reply})
    )
    with faulty_server(faults) as server:
        use(server, monkeypatch)
        report = publish(site).delivery
        assert report is not None
        retried = "5.2.3" not in reply  # a full mailbox may empty; a size limit will not
        assert server.handler.log.rejected[full] == (3 if retried else 1)
        assert (report.failed, report.suppressed) == (1, 0)
        assert statuses(site)[full] == "active"
        assert causes(site)[full] is not None and causes(site)[full].startswith("mailbox: ")  # type: ignore[union-attr]
        assert_one_copy_each(site, server.received, failed=frozenset({full}))
    with open_ledger(load_settings(site)) as ledger:
        score = ledger.bounce_score(full)
        assert score is not None and score.score == 1.0  # soft, once that day


def test_an_unknown_user_is_suppressed_as_the_policy_says(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = {"reader002@mail.example", "reader009@example.com"}
    unknown = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
    with faulty_server(Faults(rcpt_replies=dict.fromkeys(gone, unknown))) as server:
        use(server, monkeypatch)
        report = publish(site).delivery
        assert_one_copy_each(site, server.received, failed=frozenset(gone))
    assert report is not None and (report.failed, report.suppressed) == (2, 2)
    assert {e for e, s in statuses(site).items() if s == "bounced"} == gone
    assert {causes(site)[e] for e in gone} == {"address: unknown user"}
    with open_ledger(load_settings(site)) as ledger:
        record = ledger.subscriber("reader002@mail.example")
        assert record is not None and "unknown user" in record.reason and "5.1.1" in record.reason


def test_a_hard_bounce_below_the_threshold_only_scores(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = "reader002@mail.example"
    configure(site, bounces={"hard_score": 3.0})
    faults = Faults(rcpt_replies={gone: "550 5.1.1 <{address}>: User unknown"})
    with faulty_server(faults) as server:
        use(server, monkeypatch)
        report = publish(site).delivery
    assert report is not None and (report.failed, report.suppressed) == (1, 0)
    assert statuses(site)[gone] == "active"
    with open_ledger(load_settings(site)) as ledger:
        score = ledger.bounce_score(gone)
        assert score is not None and score.score == 3.0
        (event,) = ledger.bounce_events(gone)
        assert (event.kind, event.cause, event.digest_id) == ("hard", "unknown user", 1)
        assert event.reply == f"550 5.1.1 <{gone}>: User unknown"


@pytest.mark.parametrize(
    "refusal",
    ["550 Requested action not taken", "550 5.1.1 <{address}>: User unknown in relay table"],
    ids=["generic-550", "5.1.1-for-everyone"],
)
def test_the_same_refusal_for_everyone_trips_the_breaker_and_suppresses_nobody(
    site: Path, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    configure(site, send={"connections": 1})  # the refusals come back in id order
    with faulty_server(Faults(every_rcpt=refusal)) as server:
        use(server, monkeypatch)
        message = publish_refused(site)
    assert "circuit breaker" in message and "10 different recipients in a row" in message
    assert sum(server.handler.log.rejected.values()) == 10
    assert set(statuses(site).values()) == {"active"}
    rows = outbox(site)
    assert {r.status for r in rows.values()} == {"pending"}
    assert list(causes(site).values()).count("sender: circuit breaker") == 10
    with open_ledger(load_settings(site)) as ledger:
        assert ledger.scored_addresses() == set()


def test_a_few_dead_addresses_among_good_ones_do_not_trip_the_breaker(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = {f"reader{i:03d}@{DOMAINS[i % 4]}" for i in (1, 2, 3, 7, 11)}
    faults = Faults(rcpt_replies=dict.fromkeys(dead, "550 5.1.1 <{address}>: User unknown"))
    with faulty_server(faults) as server:
        use(server, monkeypatch)
        report = publish(site).delivery
    assert report is not None and report.suppressed == 5 and report.held == 0
    assert {e for e, s in statuses(site).items() if s == "bounced"} == dead
    assert_one_copy_each(site, server.received, failed=frozenset(dead))


def test_send_test_and_web_sign_ups_say_what_a_refusing_relay_said(
    site: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.testclient import TestClient

    from pipeline.web import create_app

    with faulty_server(Faults(every_rcpt=RELAY_DENIED)) as bad:
        use(bad, monkeypatch)
        result = CliRunner().invoke(cli, ["--root", str(site), "send-test", "--to", "me@x.example"])
        assert result.exit_code == 1
        assert (
            "sender: relay access denied" in result.stderr and "PIPELINE_SMTP_URL" in result.stderr
        )
        assert "Traceback" not in result.output + result.stderr
        with TestClient(create_app(load_settings(site))) as client:
            page = client.post("/subscribe/", data={"email": "new@x.example", "topic": []})
        assert page.status_code == 200
    assert "held" in caplog.text
    with sqlite3.connect(site / "state" / "pipeline.db") as db:
        row = db.execute(
            "SELECT status, cause, last_reply FROM outbox WHERE email = 'new@x.example'"
        ).fetchone()
    assert row[:2] == ("pending", "sender: relay access denied") and "5.7.1" in row[2]
    assert statuses(site)["new@x.example"] == "pending"  # nobody suppressed


def test_parallel_drains_each_stop_on_a_relay_refusal_and_suppress_nobody(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(site, send={"processes": 2})
    with faulty_server(Faults(every_rcpt=BLOCKLISTED), pipelining=True) as bad:
        use(bad, monkeypatch)
        assert "sending host blocklisted" in publish_refused(site)
    assert set(statuses(site).values()) == {"active"}
    assert {r.status for r in outbox(site).values()} == {"pending"}
    with faulty_server(pipelining=True) as fixed:
        use(fixed, monkeypatch)
        deliver(site)
        assert_one_copy_each(site, fixed.received)


def test_a_delivery_clears_the_score_a_soft_bounce_left(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = "reader006@mail.example"
    faults = Faults(rcpt_replies={full: "452 4.2.2 <{address}>: Mailbox full"}, rcpt_reply_times=1)
    with faulty_server(faults) as server:
        use(server, monkeypatch)
        report = publish(site).delivery
        assert report is not None and report.complete
        assert server.handler.log.rejected[full] == 1
        assert_one_copy_each(site, server.received)
    with open_ledger(load_settings(site)) as ledger:
        assert ledger.bounce_score(full) is None  # cleared by the delivery that followed
        (event,) = ledger.bounce_events(full)  # the bounce itself is kept
        assert (event.kind, event.cause) == ("soft", "mailbox full")


def test_a_confirmation_to_an_unknown_user_is_a_hard_bounce_without_a_digest(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient

    from pipeline.web import create_app

    unknown = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
    with faulty_server(Faults(rcpt_replies={"typo@x.example": unknown})) as server:
        use(server, monkeypatch)
        with TestClient(create_app(load_settings(site))) as client:
            page = client.post("/subscribe/", data={"email": "typo@x.example", "topic": []})
        assert page.status_code == 200
    assert causes(site)["typo@x.example"] == "address: unknown user"
    assert statuses(site)["typo@x.example"] == "bounced"
    with open_ledger(load_settings(site)) as ledger:
        (event,) = ledger.bounce_events("typo@x.example")
        assert (event.kind, event.digest_id) == ("hard", None)  # a confirmation, no digest
