"""Relay webhooks on the real app served by uvicorn: Mailgun (HMAC), SendGrid (ECDSA) and
Postmark (HTTP Basic).

The providers cannot run here, so each is a named stand-in that authenticates its requests
as the provider documents it: ``MailgunSender`` with an HMAC-SHA256 signing key,
``SendGridSender`` with its own P-256 key pair (the public half goes where the dashboard's
would), ``PostmarkSender`` with the user and password written into the webhook URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.config import load_settings
from pipeline.store import Ledger
from pipeline.web import create_app
from tests.conftest import free_port, served
from tests.helpers import publish

ANA, BEN, CHLOE = "ana.reyes@example.org", "ben.okafor@example.org", "chloe.martin@example.org"
MAILGUN_KEY = "key-" + "3f" * 16


class MailgunSender:
    """Stand-in for Mailgun's webhook sender: JSON with a signature over timestamp + token."""

    def __init__(self, base: str, key: str = MAILGUN_KEY) -> None:
        self.url, self.key = base + "webhooks/mailgun", key

    def sign(self, timestamp: int | None = None, token: str | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        token = token or secrets.token_hex(25)
        digest = hmac.new(self.key.encode(), (stamp + token).encode(), hashlib.sha256)
        return {"timestamp": stamp, "token": token, "signature": digest.hexdigest()}

    @staticmethod
    def event(name: str, recipient: str, **extra: Any) -> dict[str, Any]:
        return {"id": secrets.token_hex(8), "event": name, "recipient": recipient, **extra}

    def post(
        self, event: dict[str, Any], signature: dict[str, str] | None = None, unsigned: bool = False
    ) -> httpx2.Response:
        body: dict[str, Any] = {"event-data": event}
        if not unsigned:
            body["signature"] = signature or self.sign()
        return httpx2.post(self.url, json=body)


class SendGridSender:
    """Stand-in for SendGrid's signed Event Webhook: ECDSA over timestamp + raw body."""

    def __init__(self, base: str) -> None:
        self.url = base + "webhooks/sendgrid"
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()  # as the dashboard shows it

    def post(
        self,
        events: list[dict[str, Any]],
        *,
        timestamp: int | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None,
        tamper: bool = False,
        unsigned: bool = False,
    ) -> httpx2.Response:
        raw = json.dumps(events).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = (signer or self.private_key).sign(
            stamp.encode() + raw, ec.ECDSA(hashes.SHA256())
        )
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }
        if unsigned:
            headers.pop("X-Twilio-Email-Event-Webhook-Signature")
        if tamper:
            raw = raw.replace(ANA.encode(), BEN.encode())
        return httpx2.post(self.url, content=raw, headers=headers)


class PostmarkSender:
    """Stand-in for Postmark's webhook sender: JSON records, Basic credentials from the URL."""

    def __init__(self, base: str, auth: tuple[str, str] | None = ("postmark", "hook-pass")) -> None:
        self.url, self.auth = base + "webhooks/postmark", auth

    def post(self, record: dict[str, Any]) -> httpx2.Response:
        record = {"ID": secrets.randbelow(10**12), "MessageStream": "outbound", **record}
        return httpx2.post(self.url, json=record, auth=self.auth)


@pytest.fixture
def site(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The project's app (subscribers merged into the ledger) on a real uvicorn."""
    publish(project)  # mail goes out (a bounce needs mail it is about)
    monkeypatch.setenv("PIPELINE_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("PIPELINE_POSTMARK_WEBHOOK_AUTH", "postmark:hook-pass")
    port = free_port()
    with served(create_app(load_settings(project)), port):
        yield f"http://127.0.0.1:{port}/"


def status(project: Path, email: str) -> str:
    with Ledger(project / "state" / "pipeline.db") as ledger:
        record = ledger.subscriber(email)
    assert record is not None
    return record.status


def failed(recipient: str, code: int, message: str, severity: str = "permanent") -> dict[str, Any]:
    return MailgunSender.event(
        "failed",
        recipient,
        severity=severity,
        reason="bounce",
        **{"delivery-status": {"code": code, "message": message}},
        message={"headers": {"message-id": "<digest1.abc@example.org>"}},
    )


def test_mailgun_hard_bounce_and_complaint(project: Path, site: str) -> None:
    mailgun = MailgunSender(site)
    response = mailgun.post(failed(ANA, 550, "5.1.1 The email account does not exist"))
    assert response.status_code == 200 and response.json() == {"applied": 1}
    assert status(project, ANA) == "bounced"
    assert mailgun.post(mailgun.event("complained", BEN)).json() == {"applied": 1}
    assert status(project, BEN) == "unsubscribed"
    with Ledger(project / "state" / "pipeline.db") as ledger:
        record = ledger.subscriber(BEN)
    assert record is not None and "complaint" in record.reason


def test_mailgun_soft_and_temporary_failures_suppress_nobody(project: Path, site: str) -> None:
    mailgun = MailgunSender(site)
    assert mailgun.post(failed(ANA, 552, "5.2.2 Mailbox full")).status_code == 200
    assert mailgun.post(failed(BEN, 421, "try later", severity="temporary")).status_code == 200
    assert mailgun.post(failed(CHLOE, 554, "5.7.1 Relay access denied")).status_code == 200
    assert mailgun.post(failed(CHLOE, 421, "4.4.2 timed out, gave up")).status_code == 200
    assert [status(project, a) for a in (ANA, BEN, CHLOE)] == ["active"] * 3
    with Ledger(project / "state" / "pipeline.db") as ledger:
        kinds = {kind for _, source, kind, _ in ledger.inbound_outcomes() if source == "mailgun"}
    assert kinds >= {"soft", "delayed", "sender", "request"}


def test_mailgun_refuses_unsigned_forged_and_stale_requests(project: Path, site: str) -> None:
    mailgun = MailgunSender(site)
    event = failed(ANA, 550, "5.1.1 no such user")
    assert mailgun.post(event, unsigned=True).status_code == 401
    forged = MailgunSender(site, key="key-not-the-real-one").sign()
    assert mailgun.post(event, signature=forged).status_code == 403
    stale = mailgun.sign(timestamp=int(time.time()) - 3600)
    assert mailgun.post(event, signature=stale).status_code == 403
    assert status(project, ANA) == "active"


def test_a_replayed_mailgun_signature_counts_once_whatever_it_carries(
    project: Path, site: str
) -> None:
    mailgun = MailgunSender(site)
    signature = mailgun.sign()
    first = mailgun.post(mailgun.event("complained", ANA), signature=signature)
    assert first.json() == {"applied": 1}
    # The signature covers only timestamp + token: a captured one must not carry new events.
    replay = mailgun.post(mailgun.event("complained", BEN), signature=signature)
    assert replay.status_code == 200 and replay.json() == {"applied": 0}
    assert status(project, BEN) == "active"


def test_sendgrid_signed_batch_bounce_and_spam_report(
    project: Path, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sendgrid = SendGridSender(site)
    monkeypatch.setenv("PIPELINE_SENDGRID_PUBLIC_KEY", sendgrid.public_key)
    events = [
        {"email": ANA, "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 user unknown", "sg_event_id": "ev-1", "timestamp": 1},
        {"email": BEN, "event": "spamreport", "sg_event_id": "ev-2", "timestamp": 1},
        {"email": CHLOE, "event": "delivered", "sg_event_id": "ev-3", "timestamp": 1},
        {"email": CHLOE, "event": "bounce", "type": "blocked", "status": "5.7.1",
         "reason": "blocked by a DNS blocklist", "sg_event_id": "ev-4", "timestamp": 1},
    ]  # fmt: skip
    response = sendgrid.post(events)
    assert response.status_code == 200 and response.json() == {"applied": 3}
    assert [status(project, a) for a in (ANA, BEN, CHLOE)] == ["bounced", "unsubscribed", "active"]
    assert sendgrid.post(events).json() == {"applied": 0}  # SendGrid retries: nothing more


def test_sendgrid_refuses_unsigned_forged_tampered_and_stale_requests(
    project: Path, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sendgrid = SendGridSender(site)
    monkeypatch.setenv("PIPELINE_SENDGRID_PUBLIC_KEY", sendgrid.public_key)
    events = [{"email": ANA, "event": "spamreport", "sg_event_id": "ev-9", "timestamp": 1}]
    assert sendgrid.post(events, unsigned=True).status_code == 401
    other = ec.generate_private_key(ec.SECP256R1())
    assert sendgrid.post(events, signer=other).status_code == 403
    assert sendgrid.post(events, tamper=True).status_code == 403
    assert sendgrid.post(events, timestamp=int(time.time()) - 3600).status_code == 403
    assert [status(project, a) for a in (ANA, BEN)] == ["active", "active"]


def test_a_provider_without_its_secret_has_no_endpoint(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_SENDGRID_PUBLIC_KEY", raising=False)
    assert httpx2.post(site + "webhooks/sendgrid", json=[]).status_code == 404
    monkeypatch.delenv("PIPELINE_MAILGUN_SIGNING_KEY")
    assert httpx2.post(site + "webhooks/mailgun", json={}).status_code == 404
    monkeypatch.delenv("PIPELINE_POSTMARK_WEBHOOK_AUTH")
    assert httpx2.post(site + "webhooks/postmark", json={}).status_code == 404


def test_check_names_unusable_webhook_secrets(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    monkeypatch.setenv("PIPELINE_SENDGRID_PUBLIC_KEY", "bm90IGEga2V5")  # base64 of "not a key"
    monkeypatch.setenv("PIPELINE_POSTMARK_WEBHOOK_AUTH", "only-a-user")
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1
    assert "PIPELINE_SENDGRID_PUBLIC_KEY" in result.output and "public key" in result.output
    assert "PIPELINE_POSTMARK_WEBHOOK_AUTH" in result.output and "user:password" in result.output


def test_an_oversized_body_is_refused_before_it_is_read_whole(site: str) -> None:
    response = httpx2.post(site + "webhooks/mailgun", content=b"{" + b" " * (11 * 1024 * 1024))
    assert response.status_code == 413


def test_postmark_bounces_and_complaint_with_basic_auth(project: Path, site: str) -> None:
    postmark = PostmarkSender(site)
    hard = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "Email": ANA,
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
    }
    full = {
        "RecordType": "Bounce",
        "Type": "SoftBounce",
        "TypeCode": 4096,
        "Email": CHLOE,
        "Details": "smtp;552 5.2.2 mailbox full",
    }
    complaint = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Email": BEN}
    for record in (hard, full, complaint):
        assert postmark.post(record).json() == {"applied": 1}
    assert [status(project, a) for a in (ANA, BEN, CHLOE)] == ["bounced", "unsubscribed", "active"]
    retried = {**complaint, "ID": 7}
    assert postmark.post(retried).json() == {"applied": 1}
    assert postmark.post(retried).json() == {"applied": 0}  # Postmark retries: once only


def test_postmark_refuses_missing_and_wrong_credentials(project: Path, site: str) -> None:
    record = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Email": ANA}
    missing = PostmarkSender(site, auth=None).post(record)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Basic")
    assert PostmarkSender(site, auth=("postmark", "guess")).post(record).status_code == 403
    assert status(project, ANA) == "active"
