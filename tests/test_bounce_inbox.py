"""`pipeline bounces`: a digest goes out with VERP, bounces come back later into a Maildir.

The digest is sent through a real SMTP server (aiosmtpd) that records the envelope sender;
the bounces are Postfix-format DSNs, an ARF report and unsubscribe mail addressed to the
envelope sender each message really had, delivered into a real Maildir a day later.
"""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.bounce_inbox import process_mailbox
from pipeline.cli import cli
from pipeline.config import load_settings, secret_key
from pipeline.mailboxes import open_mailbox
from pipeline.return_path import read_verp_token
from pipeline.store import Ledger
from pipeline.tokens import subscriber_ref
from tests.conftest import Received
from tests.helpers import FIRST_RUN, publish
from tests.inbound_samples import KEY, sample

RETURN_PATH = "bounces@news.example.org"
ANA, BEN, CHLOE = "ana.reyes@example.org", "ben.okafor@example.org", "chloe.martin@example.org"


def with_return_path(root: Path, return_path: str = RETURN_PATH) -> None:
    config = root / "pipeline.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text + f'\n[bounces]\nreturn_path = "{return_path}"\n', encoding="utf-8")


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--root", str(root), *args])


def status(root: Path, email: str) -> tuple[str, str]:
    with Ledger(root / "state" / "pipeline.db") as ledger:
        record = ledger.subscriber(email)
    assert record is not None
    return record.status, record.reason


def deliver(root: Path, *messages: bytes) -> mailbox.Maildir:
    """Drop ``messages`` into the project's bounce Maildir, as the mail system would."""
    box = mailbox.Maildir(root / "state" / "bounces", create=True)
    for raw in messages:
        box.add(raw)
    return box


def test_verp_envelope_sender_names_digest_and_subscriber(
    project: Path, smtp_server: Received
) -> None:
    with_return_path(project)
    publish(project)
    assert set(smtp_server.mail_from) >= {ANA, BEN, CHLOE}
    for rcpt, mail_from in smtp_server.mail_from.items():
        local, _, domain = mail_from.partition("@")
        assert domain == "news.example.org" and local.startswith("bounces+")
        assert len(local) <= 64 and rcpt.split("@")[0] not in local
        named = read_verp_token(KEY, local.removeprefix("bounces+"))
        assert named.ref == subscriber_ref(rcpt, KEY)
        assert named.digest_id == 1


def test_without_return_path_the_envelope_sender_is_the_from_address(
    project: Path, smtp_server: Received
) -> None:
    publish(project)
    assert set(smtp_server.mail_from.values()) == {"newsletter@example.org"}


def test_a_dsn_a_day_later_suppresses_exactly_that_subscriber_and_once(
    project: Path, smtp_server: Received
) -> None:
    with_return_path(project)
    publish(project)
    # The Postfix DSN goes to the envelope sender Ana's copy really had (digest 1).
    dsn = sample("postfix-user-unknown.eml", ANA, digest_id=1)
    assert f"To: {smtp_server.mail_from[ANA]}\n".encode() in dsn
    box = deliver(project, dsn)
    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert "1 hard bounce(s)" in result.output
    assert f"hard: {ANA}: suppressed" in result.output
    assert status(project, ANA)[0] == "bounced"
    assert "5.1.1" in status(project, ANA)[1] and "unknown user" in status(project, ANA)[1]
    for other in (BEN, CHLOE):
        assert status(project, other)[0] == "active"
    # Moved, not deleted: in .Processed, marked seen; the inbox is empty.
    assert len(box) == 0
    processed = box.get_folder("Processed")
    (kept,) = processed.values()
    assert "S" in kept.get_flags() and kept["Message-Id"].startswith("<20261208091403")
    # A second run, and the same DSN delivered again, change nothing more.
    deliver(project, dsn)
    again = run(project, "bounces", "--json")
    assert again.exit_code == 0, again.output
    assert '"already_processed": 1' in again.output
    assert len(box) == 0 and len(box.get_folder("Processed")) == 2  # put away, not acted on
    with Ledger(project / "state" / "pipeline.db") as ledger:
        (outcome,) = ledger.inbound_outcomes()
    assert outcome[2:] == ("hard", "hard: suppressed")  # no address kept with it


def test_a_complaint_unsubscribes_for_good_by_its_token(
    project: Path, smtp_server: Received
) -> None:
    with_return_path(project)
    publish(project)
    arf = sample("arf-complaint.eml", BEN)  # tokens made with the test key, as the digest's
    deliver(project, arf)
    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert f"complaint: {BEN}: unsubscribed" in result.output
    state, reason = status(project, BEN)
    assert state == "unsubscribed" and "complaint" in reason


def test_a_complaint_without_a_token_is_not_acted_on_when_verp_is_set(project: Path) -> None:
    with_return_path(project)
    publish(project, send_email=False)
    arf = sample("arf-complaint.eml", BEN).decode()
    token_lines = ("Original-Mail-From", "Return-Path: <bounces+", "List-Unsubscribe")
    arf = "\n".join(line for line in arf.split("\n") if not line.startswith(token_lines))
    deliver(project, arf.encode())
    result = run(project, "bounces")
    assert "needs its token" in result.output
    assert status(project, BEN)[0] == "active"


def test_without_verp_a_complaint_is_matched_by_the_reported_address(project: Path) -> None:
    publish(project, send_email=False)
    arf = sample("arf-complaint.eml", BEN, return_path="").decode()
    arf = "\n".join(line for line in arf.split("\n") if "List-Unsubscribe" not in line)
    deliver(project, arf.encode())
    result = run(project, "bounces")
    assert f"complaint: {BEN}: unsubscribed" in result.output
    assert status(project, BEN)[0] == "unsubscribed"


def test_unsubscribe_mail_acts_on_its_token_never_on_its_from(project: Path) -> None:
    publish(project, send_email=False)  # no return path: the token is in the subject
    forged = sample("unsubscribe-request.eml", CHLOE, return_path="").decode()
    forged = forged.replace("Subject: unsubscribe u-", "Subject: unsubscribe x-")
    forged = forged.replace("someone@example.com", BEN).replace("<unsub-1@", "<unsub-2@")
    deliver(
        project,
        sample("unsubscribe-request.eml", CHLOE, return_path=""),  # from someone else
        forged.encode(),  # from Ben himself, without a token
    )
    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert status(project, CHLOE)[0] == "unsubscribed"
    assert status(project, BEN)[0] == "active"


def test_soft_bounces_auto_replies_and_sender_refusals_suppress_nobody(project: Path) -> None:
    with_return_path(project)
    publish(project, send_email=False)
    box = deliver(
        project,
        sample("postfix-mailbox-full.eml", ANA),
        sample("postfix-blocklisted.eml", BEN),
        sample("postfix-delayed.eml", CHLOE),
        sample("auto-reply.eml", ANA),
        sample("human-reply.eml", ANA),
    )
    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert "1 soft bounce(s)" in result.output and "1 auto-reply(s)" in result.output
    assert "not recognised" in result.output
    for email in (ANA, BEN, CHLOE):
        assert status(project, email)[0] == "active"
    # The reader's question stays in the inbox, unread; the rest moved to .Processed.
    (left,) = box.values()
    assert left["Subject"] == "Question about nintedanib" and "S" not in left.get_flags()
    assert len(box.get_folder("Processed")) == 4
    assert (
        "1 message(s) from earlier runs still wait for a person" in run(project, "bounces").output
    )


def test_non_standard_bounces_without_verp_match_by_address(project: Path) -> None:
    publish(project)  # a bounce needs mail it is about
    mbox_path = project / "bounces.mbox"
    box = mailbox.mbox(mbox_path)
    box.add(sample("qmail-bounce.eml", ANA, return_path=""))
    box.add(sample("exim-bounce.eml", "nobody@example.net", return_path=""))
    box.close()
    result = run(project, "bounces", "--from", str(mbox_path))
    assert result.exit_code == 0, result.output
    assert status(project, ANA)[0] == "bounced"
    assert "nobody@example.net: not a subscriber" in result.output
    # An mbox is only read; the ledger keeps a second run from acting twice.
    assert len(mailbox.mbox(mbox_path)) == 2
    assert (
        '"already_processed": 2'
        in run(project, "bounces", "--from", str(mbox_path), "--json").output
    )


def test_without_verp_the_returned_headers_token_finds_a_forwarding_subscriber(
    project: Path,
) -> None:
    publish(project)  # a bounce needs mail it is about
    # Ana forwards her mail; the forwarding target is gone. The DSN names only that address,
    # but the returned headers carry Ana's unsubscribe token.
    dsn = sample("postfix-user-unknown.eml", ANA, return_path="").decode()
    dsn = dsn.replace(f"rfc822; {ANA}", "rfc822; ana@gone.example")
    dsn = dsn.replace(f"rfc822;{ANA}", "rfc822;ana@gone.example")
    deliver(project, dsn.encode())
    result = run(project, "bounces")
    assert f"hard: {ANA}: suppressed" in result.output
    assert status(project, ANA)[0] == "bounced"


def test_a_forged_verp_token_changes_nothing(project: Path) -> None:
    with_return_path(project)
    publish(project, send_email=False)
    dsn = sample("postfix-user-unknown.eml", ANA, key="someone-elses-key")
    deliver(project, dsn)
    result = run(project, "bounces")
    assert "forged" in result.output
    assert status(project, ANA)[0] == "active"


def test_a_late_dsn_counts_on_the_day_it_was_written() -> None:
    from pipeline.bounce_inbox import _received_at

    now, week = FIRST_RUN + timedelta(days=2), timedelta(days=7)
    assert _received_at("Tue, 08 Dec 2026 09:14:03 +0000", now, week) == now  # future: now
    written = _received_at("Sat, 21 Nov 2026 09:14:03 +0000", now, week)
    assert written == datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC)
    assert _received_at("Mon, 01 Jan 2001 00:00:00 +0000", now, week) == now - week
    assert _received_at("not a date", now, week) == now


@pytest.mark.parametrize(
    ("source", "message", "code"),
    [  # typed wrongly: a usage error (2); a folder that is there but not a Maildir: 1
        ("state/nowhere", "no bounce mailbox at", 2),
        ("imaps://host.example/INBOX", "imaps://user@host/INBOX", 2),
        ("imaps://u:secret@host.example/INBOX", "keep the password out of the URL", 2),
        ("articles", "not a Maildir", 1),
    ],
)
def test_bad_sources_get_one_line_naming_the_fix(
    project: Path, source: str, message: str, code: int
) -> None:
    result = run(project, "bounces", "--from", source)
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('return_path = "newsletter-bounces@news.example.org"', "at most 15 characters"),
        ('return_path = "bounces+x@news.example.org"', "no '+'"),
        ('return_path = "bounces"', "must be a plain address"),
        ('source = "imaps://u:hunter2@mail.example.org/INBOX"', "keep the password out"),
    ],
)
def test_bounce_settings_are_checked(project: Path, setting: str, message: str) -> None:
    config = project / "pipeline.toml"
    config.write_text(config.read_text(encoding="utf-8") + f"\n[bounces]\n{setting}\n")
    result = run(project, "check")
    assert result.exit_code == 1
    assert message in result.output and "hunter2" not in result.output


def dated(raw: bytes, when: datetime) -> bytes:
    """``raw`` with its Date header set to ``when`` (as a late or early DSN would carry)."""
    message = message_from_bytes(raw)
    message.replace_header("Date", format_datetime(when))
    return message.as_bytes()


def bounce_rows(root: Path, address: str) -> list[tuple[str, ...]]:
    with Ledger(root / "state" / "pipeline.db") as ledger:
        return [(e.kind, e.source) for e in ledger.bounce_events(address)]


def test_a_bounce_about_an_address_never_mailed_is_ignored_and_said(project: Path) -> None:
    publish(project, send_email=False)  # Ana is a subscriber, but nothing was sent to her
    deliver(project, sample("postfix-user-unknown.eml", ANA, return_path=""))
    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert f"hard: {ANA}: ignored: no message was sent to this address" in result.output
    assert status(project, ANA)[0] == "active" and bounce_rows(project, ANA) == []


def test_a_late_dsn_dated_before_the_first_send_does_not_count(project: Path) -> None:
    publish(project)  # at FIRST_RUN, through the local Maildir
    with Ledger(project / "state" / "pipeline.db") as ledger:
        first = ledger.first_sent_at(ANA.lower())
    assert first is not None
    deliver(
        project,
        dated(sample("postfix-user-unknown.eml", ANA, return_path=""), first - timedelta(hours=5)),
        dated(sample("qmail-bounce.eml", BEN, return_path=""), first + timedelta(hours=1)),
    )
    settings = load_settings(project)
    with Ledger(project / "state" / "pipeline.db") as ledger:
        report = process_mailbox(
            settings,
            ledger,
            open_mailbox("state/bounces", settings),
            secret_key(settings),
            now=first + timedelta(days=1),
        )
    actions = {o.address: o.action for o in report.outcomes}
    assert actions[ANA].startswith("ignored: dated ") and "before the first message" in actions[ANA]
    assert actions[BEN] in ("scored", "suppressed")  # after the send: it counts
    assert bounce_rows(project, ANA) == [] and len(bounce_rows(project, BEN)) == 1
