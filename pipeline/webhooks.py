"""Relay webhooks on ``pipeline serve``: bounce and complaint events from Mailgun and SendGrid.

Each provider signs its requests its own way, and a request is acted on only when that
signature verifies with the secret from the environment:

- **Mailgun** (``POST /webhooks/mailgun``, ``PIPELINE_MAILGUN_SIGNING_KEY``): the JSON body's
  ``signature`` object holds ``timestamp``, ``token`` and ``signature``, the hex
  HMAC-SHA256 of timestamp + token under the webhook signing key.
- **SendGrid** (``POST /webhooks/sendgrid``, ``PIPELINE_SENDGRID_PUBLIC_KEY``, the base64
  key the dashboard shows, or PEM): ``X-Twilio-Email-Event-Webhook-Signature`` is a
  base64 ECDSA (P-256, SHA-256) signature of the ``X-Twilio-Email-Event-Webhook-Timestamp``
  header followed by the raw body.

A request without a signature gets 401, one whose signature does not verify or whose
timestamp is more than ``[bounces] webhook_max_age`` seconds from now gets 403; nothing is
changed by either. A provider whose secret is not set has no endpoint (404). Within the
window, a replayed request is harmless: every event is recorded under the provider's id
(Mailgun's event id, SendGrid's ``sg_event_id``) and applied once, and a Mailgun token
(what its signature covers) is accepted once, whatever events come with it. Events go
through ``bounce_inbox.InboundActions`` like bounces read from a mailbox, as trusted: the
relay says which recipient failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.bounce_inbox import InboundActions
from pipeline.config import Settings, secret_key
from pipeline.errors import Problem
from pipeline.inbound import InboundEvent, InboundKind, event_kind
from pipeline.store import Ledger

__all__ = [
    "MAILGUN_KEY_ENV",
    "SENDGRID_KEY_ENV",
    "mailgun_events",
    "sendgrid_events",
    "verify_mailgun",
    "verify_sendgrid",
    "webhook_problems",
    "webhook_routes",
]

MAILGUN_KEY_ENV = "PIPELINE_MAILGUN_SIGNING_KEY"
SENDGRID_KEY_ENV = "PIPELINE_SENDGRID_PUBLIC_KEY"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
_DIGEST_MESSAGE_ID = re.compile(r"<?digest(\d+)\.")
MAX_BODY = 10 * 1024 * 1024  # bytes; a provider's batch of events is far smaller

# (key under which the event is recorded, the event, the digest its Message-ID names)
Keyed = tuple[str, InboundEvent, int | None]


class Refused(Exception):
    """The request is not from the provider: 401 (unsigned) or 403 (forged or stale)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _fresh(timestamp: str, now: datetime, max_age: float) -> None:
    try:
        signed_at = float(timestamp)
    except ValueError:
        raise Refused(403, "the timestamp is not a number") from None
    if abs(now.timestamp() - signed_at) > max_age:
        raise Refused(403, "the timestamp is too old or in the future (a replay?)")


def verify_mailgun(body: dict[str, Any], key: str, now: datetime, max_age: float) -> str:
    """Check Mailgun's signature; the request's token (unique per request) if it holds."""
    signature = body.get("signature")
    if not isinstance(signature, dict) or not signature.get("signature"):
        raise Refused(401, "no signature")
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(signature["signature"]).lower()):
        raise Refused(403, "the signature does not match")
    _fresh(timestamp, now, max_age)
    return token


def _sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = serialization.load_der_public_key(base64.b64decode(text))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve public key")
    return key


def verify_sendgrid(
    raw: bytes, signature: str, timestamp: str, key: str, now: datetime, max_age: float
) -> None:
    """Check SendGrid's ECDSA signature of timestamp + raw body; ``Refused`` if it fails."""
    if not signature or not timestamp:
        raise Refused(401, "no signature")
    try:
        public_key = _sendgrid_key(key)
    except (ValueError, binascii.Error) as exc:
        raise Refused(403, f"{SENDGRID_KEY_ENV} is not a usable public key ({exc})") from exc
    try:
        der = base64.b64decode(signature, validate=True)
        public_key.verify(der, timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "the signature does not match") from None
    _fresh(timestamp, now, max_age)


def webhook_problems() -> list[Problem]:
    """For ``pipeline check``: a webhook secret in the environment that cannot be used."""
    key = os.environ.get(SENDGRID_KEY_ENV, "")
    if not key:
        return []
    try:
        _sendgrid_key(key)
    except (ValueError, binascii.Error) as exc:
        message = (
            f"not an elliptic-curve public key ({exc}); paste the verification key "
            "SendGrid's Signed Event Webhook settings show (base64) or a PEM public key"
        )
        return [Problem(SENDGRID_KEY_ENV, None, None, message)]
    return []


async def _body(request: Request) -> bytes | None:
    """The request's body, or None when it is larger than ``MAX_BODY``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def _digest_of(message_id: object) -> int | None:
    found = _DIGEST_MESSAGE_ID.match(str(message_id or ""))
    return int(found[1]) if found else None


def mailgun_events(body: dict[str, Any], token: str) -> list[Keyed]:
    """Mailgun's ``event-data`` as an event: failed (permanent or temporary), complained,
    unsubscribed; anything else (delivered, opened …) is ignored."""
    data = body.get("event-data")
    if not isinstance(data, dict):
        return []
    name, recipient = str(data.get("event", "")), str(data.get("recipient", ""))
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    assert isinstance(status, dict)
    text = " ".join(f"{status.get('code', '')} {status.get('message', '')}".split())
    reason = text or str(data.get("reason", ""))
    if name == "failed" and data.get("severity") == "temporary":
        kind = InboundKind.DELAYED  # Mailgun keeps retrying; its final verdict follows
    elif name == "failed" and data.get("reason") == "suppress-bounce":
        kind = InboundKind.HARD
    elif name == "failed" and str(status.get("code", "")).startswith("4"):
        kind = InboundKind.SOFT  # given up after retrying a temporary refusal, as a DSN's 4.x.x
    elif name == "failed":
        kind = event_kind("failed", str(status.get("enhanced-code", "")), text)
    elif name == "complained":
        kind, reason = InboundKind.COMPLAINT, "complaint (reported to Mailgun)"
    elif name == "unsubscribed":
        kind, reason = InboundKind.UNSUBSCRIBE, "unsubscribed at Mailgun"
    else:
        return []
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers", {}) if isinstance(message, dict) else {}
    digest = _digest_of(headers.get("message-id") if isinstance(headers, dict) else None)
    key = f"mailgun:{data.get('id') or token}"
    return [(key, InboundEvent(kind, recipient, f"mailgun: {reason}"), digest)]


_SENDGRID_KINDS = {
    "spamreport": InboundKind.COMPLAINT,
    "unsubscribe": InboundKind.UNSUBSCRIBE,
    "group_unsubscribe": InboundKind.UNSUBSCRIBE,
    "deferred": InboundKind.DELAYED,
}


def sendgrid_events(body: Any) -> list[Keyed]:
    """SendGrid's array of events: bounce (judged by its status), spamreport, unsubscribe,
    deferred; the rest (processed, delivered, dropped, opens …) are ignored."""
    events: list[Keyed] = []
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict):
            continue
        name, recipient = str(item.get("event", "")), str(item.get("email", ""))
        reason = " ".join(str(item.get("reason", "")).split())
        if name == "bounce":
            kind = event_kind("failed", str(item.get("status", "")), reason)
        elif name in _SENDGRID_KINDS:
            kind = _SENDGRID_KINDS[name]
        else:
            continue
        key = f"sendgrid:{item.get('sg_event_id') or item.get('sg_message_id')}:{name}"
        digest = _digest_of(item.get("smtp-id"))
        events.append((key, InboundEvent(kind, recipient, f"sendgrid {name}: {reason}"), digest))
    return events


def _apply(
    settings: Settings, events: Iterable[Keyed], source: str, now: datetime, request_key: str = ""
) -> int:
    """Apply each event not seen before, all in one transaction; how many were new.

    ``request_key`` (Mailgun's token, which its signature covers while the events are not)
    makes the whole request count once: a captured signature cannot carry other events.
    """
    applied = 0
    with Ledger(settings.paths.ledger) as ledger, ledger.transaction():
        if request_key and not ledger.record_inbound(request_key, source, "request", "", now):
            return 0
        actions = InboundActions(settings, ledger, secret_key(settings.paths))
        for key, event, digest in events:
            if ledger.inbound_seen(key):
                continue  # a retry or a replay: already applied
            outcome = actions.apply(
                event, source="webhook", now=now, trusted=True, digest_id=digest
            )
            ledger.record_inbound(key, source, str(event.kind), outcome.action, now)
            applied += 1
    return applied


def webhook_routes(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> list[BaseRoute]:
    """The webhook endpoints, for ``create_app`` (each 404 while its secret is unset)."""
    max_age = settings.bounces.webhook_max_age

    def refused(exc: Refused) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def mailgun(request: Request) -> Response:
        key = os.environ.get(MAILGUN_KEY_ENV, "")
        if not key:
            return JSONResponse({"error": "not configured"}, status_code=404)
        raw = await _body(request)
        if raw is None:
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body is not a JSON object"}, status_code=400)
        now = clock()
        try:
            token = verify_mailgun(body, key, now, max_age)
        except Refused as exc:
            return refused(exc)
        events = mailgun_events(body, token)
        applied = _apply(settings, events, "mailgun", now, request_key=f"mailgun-token:{token}")
        return JSONResponse({"applied": applied})

    async def sendgrid(request: Request) -> Response:
        key = os.environ.get(SENDGRID_KEY_ENV, "")
        if not key:
            return JSONResponse({"error": "not configured"}, status_code=404)
        raw = await _body(request)
        if raw is None:
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        now = clock()
        try:
            verify_sendgrid(
                raw,
                request.headers.get(SENDGRID_SIGNATURE, ""),
                request.headers.get(SENDGRID_TIMESTAMP, ""),
                key,
                now,
                max_age,
            )
        except Refused as exc:
            return refused(exc)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        applied = _apply(settings, sendgrid_events(body), "sendgrid", now)
        return JSONResponse({"applied": applied})

    return [
        Route("/webhooks/mailgun", mailgun, methods=["POST"]),
        Route("/webhooks/sendgrid", sendgrid, methods=["POST"]),
    ]
