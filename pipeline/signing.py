"""DKIM signing settings for digests: which keys, for which domain, read from where.

Mailbox providers require bulk mail to be DKIM-signed by a domain aligned with the From
address, and the signature must cover the List-Unsubscribe headers so no one on the way
can swap the unsubscribe target. Many relays sign for you; sign here when yours does not.
The signing itself is ``pipeline.dkim_sign``.

Configuration: ``[dkim] selector`` turns signing on; ``[dkim] domain`` defaults to the
sender's domain; the RSA private key (PEM) comes from the environment variable
``PIPELINE_DKIM_KEY`` or, failing that, the file named by ``[dkim] key_file``. An Ed25519
co-signature (RFC 8463) is added when ``[dkim] ed25519_selector`` is set, with its key
from ``PIPELINE_DKIM_ED25519_KEY`` or ``[dkim] ed25519_key_file`` (PEM, or the base64
32-byte seed that dkimpy's ``dknewkey`` writes).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pipeline.config import CONFIG_FILE, Settings
from pipeline.dkim_sign import DkimKey, MessageSigner
from pipeline.errors import ConfigError

__all__ = [
    "DKIM_ED25519_KEY_ENV",
    "DKIM_KEY_ENV",
    "SIGNED_HEADERS",
    "DkimSigner",
    "load_signer",
]

DKIM_KEY_ENV = "PIPELINE_DKIM_KEY"
DKIM_ED25519_KEY_ENV = "PIPELINE_DKIM_ED25519_KEY"
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
# RSA keys shorter than this are refused by Gmail and others (RFC 8301 sets 1024 as the
# floor for verifiers; 2048 is what providers ask of senders).
MIN_RSA_BITS = 1024

# A selector is one or more DNS labels (RFC 6376 section 3.1); a domain is ASCII too.
_DNS_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)

DkimSigner = MessageSigner


def _read_key(
    settings: Settings, env: str, key_file: str, setting: str
) -> tuple[bytes | None, str]:
    """The key's bytes and where they came from, or None when none is configured."""
    from_env = os.environ.get(env, "").strip()
    if from_env:
        # A PEM squeezed onto one line ("\n" written literally) is common in env files.
        return from_env.replace("\\n", "\n").encode("ascii", "replace"), env
    if not key_file:
        return None, ""
    path = Path(key_file)
    path = path if path.is_absolute() else settings.paths.root / path
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ConfigError(
            f"{CONFIG_FILE}: [dkim] {setting}: cannot read {path} ({exc.strerror}); "
            f"fix the path or set {env}"
        ) from exc


def _rsa_key(data: bytes, source: str) -> RSAPrivateKey:
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{source}: not an RSA private key in PEM form (without a passphrase); "
            "create one with: openssl genrsa -out dkim.pem 2048"
        ) from exc
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(
            f"{source}: an RSA key is needed here; put an Ed25519 key in "
            f"{DKIM_ED25519_KEY_ENV} or [dkim] ed25519_key_file"
        )
    if key.key_size < MIN_RSA_BITS:
        raise ConfigError(
            f"{source}: a {key.key_size}-bit RSA key is too short for DKIM; "
            "create a 2048-bit one with: openssl genrsa -out dkim.pem 2048"
        )
    return key


def _ed25519_key(data: bytes, source: str) -> Ed25519PrivateKey:
    fix = "create one with: openssl genpkey -algorithm ed25519 -out dkim-ed25519.pem"
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                f"{source}: not an unencrypted private key in PEM form; {fix}"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{source}: not an Ed25519 key; {fix}")
        return key
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"{source}: neither PEM nor a base64 Ed25519 seed; {fix}") from exc
    if len(seed) != 32:
        raise ConfigError(f"{source}: an Ed25519 seed is 32 bytes, this is {len(seed)}; {fix}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_signer(settings: Settings) -> DkimSigner | None:
    """The configured signer, None when DKIM is off; ``ConfigError`` if half configured."""
    config = settings.dkim
    key, source = _read_key(settings, DKIM_KEY_ENV, config.key_file, "key_file")
    ed_key, ed_source = _read_key(
        settings, DKIM_ED25519_KEY_ENV, config.ed25519_key_file, "ed25519_key_file"
    )
    if not config.selector:
        if key is not None or config.ed25519_selector or ed_key is not None:
            raise ConfigError(
                f"{CONFIG_FILE}: a DKIM key is set ({source or ed_source or 'ed25519_selector'}) "
                "but [dkim] selector is empty; set the selector published in DNS as "
                "<selector>._domainkey.<domain>"
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
    for setting, value in (
        ("selector", config.selector),
        ("ed25519_selector", config.ed25519_selector),
        ("domain", domain),
    ):
        if value and not _DNS_NAME.fullmatch(value):
            raise ConfigError(
                f"{CONFIG_FILE}: [dkim] {setting} {value!r} is not a DNS name; use ASCII "
                "letters, digits, hyphens and dots (punycode for an internationalised domain)"
            )
    keys = [DkimKey(config.selector, _rsa_key(key, source))]
    if config.ed25519_selector:
        if config.ed25519_selector == config.selector:
            raise ConfigError(
                f"{CONFIG_FILE}: [dkim] ed25519_selector must differ from selector: each "
                "key needs its own DNS record"
            )
        if ed_key is None:
            raise ConfigError(
                f"{CONFIG_FILE}: [dkim] ed25519_selector is set but there is no key; set "
                f"{DKIM_ED25519_KEY_ENV} or [dkim] ed25519_key_file"
            )
        keys.append(DkimKey(config.ed25519_selector, _ed25519_key(ed_key, ed_source)))
    elif ed_key is not None:
        raise ConfigError(
            f"{CONFIG_FILE}: an Ed25519 key is set ({ed_source}) but [dkim] ed25519_selector "
            "is empty; set the selector its DNS record is published under"
        )
    return MessageSigner(domain, keys, SIGNED_HEADERS)
