"""VERP return paths and the List-Unsubscribe mailto: opaque, signed tokens in addresses.

With ``[bounces] return_path = "bounces@news.example.org"`` each digest goes out with the
envelope sender (SMTP ``MAIL FROM``, not the From header) ``bounces+<token>@news.example.org``
(VERP). A relay that gives up on the message later sends its bounce to exactly that address,
so the token says which digest and which subscriber failed, whatever the bounce's body says.

The ``mailto:`` of List-Unsubscribe carries a per-subscriber token too: in the subject
always, and in the address when a return path is set. A request is acted on by its token,
never by its forgeable From.

Token forms (lower case only, because some mail systems fold the case of local parts)::

    <digest id>-<subscriber>-<mac>     a bounce token: digest and subscriber
    u-<subscriber>-<mac>               an unsubscribe token: subscriber only

``<subscriber>`` is the subscriber's opaque reference (``tokens.subscriber_ref``: a keyed
hash of the address, never the address) in base32; ``<mac>`` an HMAC-SHA256 under the
secret key, cut to 64 bits, over the purpose, the digest and the reference.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from pipeline.tokens import TokenError, subscriber_ref

__all__ = [
    "MAX_LOCAL_PART",
    "TOKEN_LENGTH",
    "ReturnPaths",
    "VerpToken",
    "bounce_token",
    "find_token",
    "read_verp_token",
    "unsubscribe_token",
]

MAX_LOCAL_PART = 64  # RFC 5321 section 4.5.3.1.1
# The longest bounce token for digest ids up to 9,999,999: 7 + 1 + 26 + 1 + 13 characters.
TOKEN_LENGTH = 48
_MAC_BYTES = 8
_TOKEN = re.compile(r"(?:(?P<digest>[0-9]{1,12})|u)-(?P<ref>[a-z2-7]{26})-(?P<mac>[a-z2-7]{13})")
_TOKEN_IN_TEXT = re.compile(r"(?<![0-9a-z])(?:[0-9]{1,12}|u)-[a-z2-7]{26}-[a-z2-7]{13}(?![a-z2-7])")


@dataclass(frozen=True, slots=True)
class VerpToken:
    """What a valid token names: the subscriber's reference and, for a bounce, the digest."""

    ref: str  # tokens.subscriber_ref: look the subscriber up with Ledger.subscriber_by_ref
    digest_id: int | None  # None for an unsubscribe token


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes:
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


def _mac(key: str, purpose: str, digest: str, ref32: str) -> str:
    message = f"pipeline.verp\0{purpose}\0{digest}\0{ref32}".encode()
    return _b32(hmac.digest(key.encode(), message, "sha256")[:_MAC_BYTES])


@functools.lru_cache(maxsize=64)  # the VERP sender and the mailto of one message share it
def _ref32(email: str, key: str) -> str:
    ref = subscriber_ref(email, key)
    return _b32(base64.urlsafe_b64decode(ref + "=" * (-len(ref) % 4)))


def bounce_token(key: str, digest_id: int, email: str) -> str:
    """The VERP token for digest ``digest_id`` sent to ``email`` (lower case, 42-54 chars)."""
    ref32 = _ref32(email, key)
    return f"{digest_id}-{ref32}-{_mac(key, 'bounce', str(digest_id), ref32)}"


def unsubscribe_token(key: str, email: str) -> str:
    """The token of ``email``'s List-Unsubscribe mailto: the same for every digest."""
    ref32 = _ref32(email, key)
    return f"u-{ref32}-{_mac(key, 'unsubscribe', '', ref32)}"


def read_verp_token(key: str, token: str) -> VerpToken:
    """What ``token`` names; ``TokenError`` if it is malformed, altered or signed by another key."""
    found = _TOKEN.fullmatch(token.strip().lower())
    if found is None:
        raise TokenError("not a bounce or unsubscribe token")
    digest, ref32 = found["digest"], found["ref"]
    purpose = "unsubscribe" if digest is None else "bounce"
    if not hmac.compare_digest(found["mac"], _mac(key, purpose, digest or "", ref32)):
        raise TokenError("the token was altered or signed with another key")
    ref = base64.urlsafe_b64encode(_unb32(ref32)).decode("ascii").rstrip("=")
    return VerpToken(ref, None if digest is None else int(digest))


def find_token(text: str) -> str | None:
    """The first token-shaped word in ``text`` (a subject, an address, a header holding a
    percent-encoded ``mailto:`` URL), unverified."""
    found = _TOKEN_IN_TEXT.search(unquote(text).lower())
    return None if found is None else found[0]


class ReturnPaths:
    """The envelope sender and unsubscribe mailto of each message, from ``[bounces]``.

    ``return_path`` empty: the envelope sender is the From address, as without VERP, and the
    mailto goes to the From address with the token in its subject.
    """

    def __init__(self, key: str, sender: str, return_path: str = "") -> None:
        self._key = key
        self._sender = sender
        self.return_path = return_path
        self._local, _, self._domain = return_path.rpartition("@")

    def envelope_sender(self, digest_id: int, email: str) -> str:
        """``MAIL FROM`` for one message: ``local+<token>@domain`` with VERP, else the sender."""
        if not self.return_path:
            return self._sender
        return f"{self._local}+{bounce_token(self._key, digest_id, email)}@{self._domain}"

    def unsubscribe_mailto(self, email: str) -> str:
        """The ``mailto:`` URL for List-Unsubscribe (RFC 2369), opaque to everyone but us."""
        token = unsubscribe_token(self._key, email)
        address = f"{self._local}+{token}@{self._domain}" if self.return_path else self._sender
        return f"mailto:{quote(address, safe='@+')}?subject=unsubscribe%20{token}"

    def is_ours(self, address: str) -> bool:
        """True if ``address`` is the return path itself or one of its ``+token`` forms."""
        if not self.return_path:
            return False
        local, _, domain = address.strip().strip("<>").rpartition("@")
        base = local.partition("+")[0]
        return base.lower() == self._local.lower() and domain.lower() == self._domain.lower()
