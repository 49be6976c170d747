"""DKIM signatures (dkimpy) for digests, when a key is configured.

Mailbox providers require bulk mail to be DKIM-signed by a domain aligned with the From
address, and the signature must cover the List-Unsubscribe headers so no one on the way
can swap the unsubscribe target. Many relays sign for you; sign here when yours does not.

Configuration: ``[dkim] selector`` turns signing on; ``[dkim] domain`` defaults to the
sender's domain; the RSA private key (PEM) comes from the environment variable
``PIPELINE_DKIM_KEY`` or, failing that, the file named by ``[dkim] key_file``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dkim

from pipeline.config import CONFIG_FILE, Settings
from pipeline.errors import ConfigError

__all__ = ["DKIM_KEY_ENV", "SIGNED_HEADERS", "DkimSigner", "load_signer"]

DKIM_KEY_ENV = "PIPELINE_DKIM_KEY"
# Every header a digest carries; those listed twice are signed once more than they occur,
# so a second copy added on the way breaks the signature instead of taking over.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
    b"from",
    b"subject",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


@dataclass(frozen=True, slots=True)
class DkimSigner:
    selector: str
    domain: str
    private_key: bytes  # PEM

    def sign(self, message: bytes) -> bytes:
        """``message`` with a ``DKIM-Signature`` header (relaxed/relaxed) on top."""
        signature = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return bytes(signature) + message


def _read_key(settings: Settings) -> tuple[bytes | None, str]:
    """The PEM key and where it came from, or None when no key is configured."""
    from_env = os.environ.get(DKIM_KEY_ENV, "").strip()
    if from_env:
        # A PEM squeezed onto one line ("\n" written literally) is common in env files.
        return from_env.replace("\\n", "\n").encode("ascii", "replace"), DKIM_KEY_ENV
    key_file = settings.dkim.key_file
    if not key_file:
        return None, ""
    path = Path(key_file)
    path = path if path.is_absolute() else settings.paths.root / path
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ConfigError(
            f"{CONFIG_FILE}: [dkim] key_file: cannot read {path} ({exc.strerror}); "
            f"fix the path or set {DKIM_KEY_ENV}"
        ) from exc


def load_signer(settings: Settings) -> DkimSigner | None:
    """The configured signer, None when DKIM is off; ``ConfigError`` if half configured."""
    config = settings.dkim
    key, source = _read_key(settings)
    if not config.selector:
        if key is not None:
            raise ConfigError(
                f"{CONFIG_FILE}: a DKIM key is set ({source}) but [dkim] selector is empty; "
                "set the selector published in DNS as <selector>._domainkey.<domain>"
            )
        return None
    if key is None:
        raise ConfigError(
            f"{CONFIG_FILE}: [dkim] selector is set but there is no key; "
            f"set {DKIM_KEY_ENV} to the PEM private key or [dkim] key_file to its path"
        )
    sender_domain = settings.sender.address.rpartition("@")[2].lower()
    domain = (config.domain or sender_domain).lower()
    if sender_domain != domain and not sender_domain.endswith("." + domain):
        raise ConfigError(
            f"{CONFIG_FILE}: [dkim] domain {domain!r} does not align with the sender "
            f"{settings.sender.address!r}; DMARC needs the sender's domain or a parent of it"
        )
    try:
        dkim.crypto.parse_pem_private_key(key)
    except dkim.crypto.UnparsableKeyError as exc:
        raise ConfigError(
            f"{source}: not an RSA private key in PEM form ({exc}); "
            "create one with: openssl genrsa -out dkim.pem 2048"
        ) from exc
    return DkimSigner(config.selector, domain, key)
