"""Signed, opaque, purpose-bound tokens for the links in emails.

Tokens are signed with the secret key (itsdangerous, HMAC) and bound to one purpose
(unsubscribe, preferences, confirm): a token made for one page is refused by another. They
never carry the address: unsubscribe and preference links sign ``subscriber_ref``, a keyed
hash of it, and confirmation links a random sign-up id. Confirmation tokens carry the time
they were signed, so they can expire; unsubscribe and preference tokens carry no time, so the
same subscriber always gets the same link and a retried message is byte-for-byte the same.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import want_bytes

from pipeline.addresses import email_key
from pipeline.errors import SubscriberError

__all__ = [
    "CONFIRM_MAX_AGE",
    "PURPOSES",
    "TokenError",
    "key_fingerprint",
    "make_token",
    "read_token",
    "sign_token",
    "subscriber_ref",
    "verify_token",
]

PURPOSES = ("unsubscribe", "preferences", "confirm")
CONFIRM_MAX_AGE = timedelta(days=7)


class TokenError(SubscriberError):
    """A link's token is forged, altered, made for another purpose or site, or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


_TIMED = frozenset({"confirm"})


@functools.lru_cache(maxsize=32)  # building one derives its key: once per key and purpose
def _serializer(key: str, purpose: str) -> URLSafeSerializer | URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}; use one of {PURPOSES}")
    kind = URLSafeTimedSerializer if purpose in _TIMED else URLSafeSerializer
    return kind(key, salt=f"pipeline.{purpose}")


# A link payload up to this long (JSON bytes) is never offered to zlib: see ``make_token``.
SHORT_PAYLOAD = 48


@functools.lru_cache(maxsize=32)
def _link_signer(
    key: str, purpose: str
) -> tuple[URLSafeSerializer | URLSafeTimedSerializer, bytes, str]:
    """The serializer, its signer's derived key and the name of its HMAC digest, made once
    per key and purpose: ``Serializer.dumps`` makes a new signer and derives its key on
    every call, which was a tenth of a drain's time (two links in every message)."""
    serializer = _serializer(key, purpose)
    signer = serializer.make_signer()
    digest_name = str(signer.algorithm.digest_method().name)  # type: ignore[attr-defined]
    return serializer, signer.derive_key(), digest_name


def make_token(value: str, key: str, purpose: str) -> str:
    """Sign ``value`` (an opaque id, never an address) for one purpose; a URL-safe string.

    The format is itsdangerous's (base64 payload, ``.``, base64 HMAC of the payload under
    the derived key) and ``loads`` reads every token. The signer is made once per key and
    purpose, and the HMAC is one call into OpenSSL. ``dumps`` also tries zlib on every
    payload, keeping the result when it is two bytes shorter; a payload of at most
    ``SHORT_PAYLOAD`` bytes (a subscriber reference is 24) is not offered to zlib here:
    compressing it cost a third of a token and only a payload that repeats itself could
    win. Such a token is still the same on every call, and equal to what ``dumps`` makes
    wherever ``dumps`` leaves the payload as it is; ``loads`` reads both forms.
    """
    if purpose in _TIMED:
        return str(_serializer(key, purpose).dumps(value))
    serializer, derived, digest_name = _link_signer(key, purpose)
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > SHORT_PAYLOAD:
        payload = want_bytes(serializer.dump_payload(value))
    else:
        payload = base64.urlsafe_b64encode(data).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.digest(derived, payload, digest_name))
    return (payload + b"." + signature.rstrip(b"=")).decode("ascii")


def read_token(
    token: str,
    key: str,
    purpose: str,
    *,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """The value signed into ``token``; raises ``TokenError`` if it is not valid here."""
    serializer = _serializer(key, purpose)
    try:
        if isinstance(serializer, URLSafeTimedSerializer):
            value, signed_at = serializer.loads(token, return_timestamp=True)
        else:
            value, signed_at = serializer.loads(token), None
    except BadData as exc:
        raise TokenError(
            "the link is not valid: it was altered or made for something else"
        ) from exc
    if not isinstance(value, str):
        raise TokenError("the link is not valid")
    if max_age is not None and (
        signed_at is None or (now or datetime.now(UTC)) - signed_at > max_age
    ):
        raise TokenError("the link has expired", expired=True)
    return value


@functools.lru_cache(maxsize=64)  # a message asks for it up to three times (links, VERP)
def subscriber_ref(email: str, key: str) -> str:
    """The opaque reference to a subscriber in links: a keyed hash of the address."""
    mac = hmac.digest(key.encode(), b"subscriber-ref\0" + email_key(email).encode(), "sha256")
    return base64.urlsafe_b64encode(mac[:16]).decode("ascii").rstrip("=")


def sign_token(email: str, key: str, purpose: str = "unsubscribe") -> str:
    """The token for a subscriber's unsubscribe or preferences link (no look-up needed)."""
    return make_token(subscriber_ref(email, key), key, purpose)


def verify_token(token: str, key: str, purpose: str = "unsubscribe") -> str | None:
    """The subscriber reference a link token carries, or None if it is not valid here."""
    try:
        return read_token(token, key, purpose)
    except TokenError:
        return None


def key_fingerprint(key: str) -> str:
    return hmac.new(key.encode(), b"ref-key-fingerprint", hashlib.sha256).hexdigest()[:16]
