"""Relay webhooks on ``pipeline serve``: bounce and complaint events from Mailgun, SendGrid
and Postmark.

Each provider authenticates its requests its own way, and a request is acted on only when
that verifies with the secret from the environment:

- **Mailgun** (``POST /webhooks/mailgun``, ``PIPELINE_MAILGUN_SIGNING_KEY``): the JSON body's
  ``signature`` object holds ``timestamp``, ``token`` and ``signature``, the hex
  HMAC-SHA256 of timestamp + token under the webhook signing key.
- **SendGrid** (``POST /webhooks/sendgrid``, ``PIPELINE_SENDGRID_PUBLIC_KEY``, the base64
  key the dashboard shows, or PEM): ``X-Twilio-Email-Event-Webhook-Signature`` is a
  base64 ECDSA (P-256, SHA-256) signature of the ``X-Twilio-Email-Event-Webhook-Timestamp``
  header followed by the raw body.
- **Postmark** (``POST /webhooks/postmark``, ``PIPELINE_POSTMARK_WEBHOOK_AUTH`` as
  ``user:password``): HTTP Basic authentication, the credentials written into the webhook
  URL in Postmark's settings; Postmark signs nothing and sends no timestamp, so serve it
  over HTTPS only, and a replay can only repeat an event already applied (recorded by its
  ``ID``).

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
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.bounce_inbox import InboundActions
from pipeline.config import Settings, secret_key
from pipeline.errors import Problem
from pipeline.store import open_ledger
from pipeline.webhook_events import Keyed, mailgun_events, postmark_events, sendgrid_events

__all__ = [
    "MAILGUN_KEY_ENV",
    "POSTMARK_AUTH_ENV",
    "SENDGRID_KEY_ENV",
    "verify_basic_auth",
    "verify_mailgun",
    "verify_sendgrid",
    "webhook_problems",
    "webhook_routes",
]

MAILGUN_KEY_ENV = "PIPELINE_MAILGUN_SIGNING_KEY"
SENDGRID_KEY_ENV = "PIPELINE_SENDGRID_PUBLIC_KEY"
POSTMARK_AUTH_ENV = "PIPELINE_POSTMARK_WEBHOOK_AUTH"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_BODY = 10 * 1024 * 1024  # bytes; a provider's batch of events is far smaller


class Refused(Exception):
    """The request is not from the provider: 401 (unsigned) or 403 (forged or stale); or,
    400, not what the provider sends."""

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


def verify_basic_auth(authorization: str, expected: str) -> None:
    """Check an ``Authorization: Basic`` header (RFC 7617) against ``user:password``."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise Refused(401, "no credentials")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(403, "the credentials do not match") from None
    if not hmac.compare_digest(given, expected.encode()):
        raise Refused(403, "the credentials do not match")


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
    problems = []
    key = os.environ.get(SENDGRID_KEY_ENV, "")
    try:
        if key:
            _sendgrid_key(key)
    except (ValueError, binascii.Error) as exc:
        message = (
            f"not an elliptic-curve public key ({exc}); paste the verification key "
            "SendGrid's Signed Event Webhook settings show (base64) or a PEM public key"
        )
        problems.append(Problem(SENDGRID_KEY_ENV, None, None, message))
    auth = os.environ.get(POSTMARK_AUTH_ENV, "")
    if auth and (":" not in auth or not auth.partition(":")[2]):
        message = "write it as user:password, the credentials in Postmark's webhook URL"
        problems.append(Problem(POSTMARK_AUTH_ENV, None, None, message))
    return problems


async def _body(request: Request) -> bytes | None:
    """The request's body, or None when it is larger than ``MAX_BODY``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def _apply(
    settings: Settings, events: Iterable[Keyed], source: str, now: datetime, request_key: str = ""
) -> int:
    """Apply each event not seen before, all in one transaction; how many were new.

    ``request_key`` (Mailgun's token, which its signature covers while the events are not)
    makes the whole request count once: a captured signature cannot carry other events.
    """
    applied = 0
    with open_ledger(settings) as ledger, ledger.transaction():
        if request_key and not ledger.record_inbound(request_key, source, "request", "", now):
            return 0
        actions = InboundActions(settings, ledger, secret_key(settings))
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

    def mailgun(headers: Headers, key: str, raw: bytes, body: Any, now: datetime) -> int:
        if not isinstance(body, dict):
            raise Refused(400, "the body is not a JSON object")
        token = verify_mailgun(body, key, now, max_age)
        events = mailgun_events(body, token)
        return _apply(settings, events, "mailgun", now, request_key=f"mailgun-token:{token}")

    def sendgrid(headers: Headers, key: str, raw: bytes, body: Any, now: datetime) -> int:
        signature, timestamp = (
            headers.get(SENDGRID_SIGNATURE, ""),
            headers.get(SENDGRID_TIMESTAMP, ""),
        )
        verify_sendgrid(raw, signature, timestamp, key, now, max_age)
        return _apply(settings, sendgrid_events(body), "sendgrid", now)

    def postmark(headers: Headers, auth: str, raw: bytes, body: Any, now: datetime) -> int:
        verify_basic_auth(headers.get("Authorization", ""), auth)
        return _apply(settings, postmark_events(body), "postmark", now)

    return [
        Route("/webhooks/mailgun", _endpoint(MAILGUN_KEY_ENV, mailgun, clock), methods=["POST"]),
        Route("/webhooks/sendgrid", _endpoint(SENDGRID_KEY_ENV, sendgrid, clock), methods=["POST"]),
        Route(
            "/webhooks/postmark", _endpoint(POSTMARK_AUTH_ENV, postmark, clock), methods=["POST"]
        ),
    ]


# (request headers, the provider's secret, raw body, decoded JSON, now) -> events applied;
# raises Refused when the request is not the provider's.
Handler = Callable[[Headers, str, bytes, Any, datetime], int]


def _endpoint(
    secret_env: str, handle: Handler, clock: Callable[[], datetime]
) -> Callable[[Request], Awaitable[Response]]:
    """The steps every provider shares: its secret set, a bounded JSON body, one answer."""

    async def endpoint(request: Request) -> Response:
        secret = os.environ.get(secret_env, "")
        if not secret:
            return JSONResponse({"error": "not configured"}, status_code=404)
        raw = await _body(request)
        if raw is None:
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            applied = handle(request.headers, secret, raw, body, clock())
        except Refused as exc:
            response = JSONResponse({"error": str(exc)}, status_code=exc.status)
            if exc.status == 401 and secret_env == POSTMARK_AUTH_ENV:
                response.headers["WWW-Authenticate"] = 'Basic realm="webhooks", charset="UTF-8"'
            return response
        return JSONResponse({"applied": applied})

    return endpoint
