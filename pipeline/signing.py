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
32-byte seed that dkimpy's ``dknewkey`` writes). RSA keys are unencrypted PEM of at least
2048 bits (RFC 8301); a key file is read only up to ``MAX_KEY_BYTES``.

Every mistake is a ``ConfigError`` line that starts with where to look (``pipeline.toml:
[dkim] <setting>`` or the environment variable) and ends with the fix.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pipeline.config import CONFIG_FILE, Settings
from pipeline.dkim_sign import DkimKey, MessageSigner
from pipeline.dns_names import MAX_LABEL, MAX_NAME, is_dns_name, why_not_dns_name
from pipeline.errors import ConfigError

__all__ = [
    "DKIM_ED25519_KEY_ENV",
    "DKIM_KEY_ENV",
    "MAX_KEY_BYTES",
    "MIN_RSA_BITS",
    "SIGNED_HEADERS",
    "DkimSigner",
    "dkim_problems",
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
# RFC 8301 sets 1024 bits as the floor and asks signers for 2048; Google and Yahoo ask bulk
# senders for 2048, and a new key costs nothing, so shorter keys are refused.
MIN_RSA_BITS = 2048


DkimSigner = MessageSigner

# A PEM private key is a few KB (RSA-4096: about 3.3 KB); a bigger "key" is a wrong file,
# and reading it whole (or /dev/zero) would only fill memory.
MAX_KEY_BYTES = 64 * 1024
_RSA_FIX = "create one with: openssl genrsa -out dkim.pem 2048 (and publish its public half)"
_ED25519_FIX = "create one with: openssl genpkey -algorithm ed25519 -out dkim-ed25519.pem"


def _name_problems(selector: str, ed25519_selector: str, domain: str) -> list[str]:
    """What stops the selectors' DNS records from existing: each selector and the domain
    must be DNS names, and so must the record's name ``<selector>._domainkey.<domain>``
    (RFC 6376 section 3.6.2.1) as a whole (``pipeline.dns_names``)."""
    problems: list[str] = []
    named = (("selector", selector), ("ed25519_selector", ed25519_selector), ("domain", domain))
    for setting, value in named:
        if value and (why := why_not_dns_name(value)):
            problems.append(
                f"{CONFIG_FILE}: [dkim] {setting} {value!r} is not a DNS name ({why}); use "
                f"ASCII letters, digits, hyphens and dots, at most {MAX_LABEL} between dots "
                "(punycode for an internationalised domain)"
            )
    if problems:
        return problems
    for setting, value in named[:2]:
        record = f"{value}._domainkey.{domain}"
        if value and len(record) > MAX_NAME:
            problems.append(
                f"{CONFIG_FILE}: [dkim] {setting} {value!r}: its DNS record {record!r} is "
                f"{len(record)} characters, over DNS's {MAX_NAME}; choose a shorter selector"
            )
    return problems


def _read_key(
    settings: Settings, env: str, key_file: str, setting: str
) -> tuple[bytes | None, str]:
    """The key's bytes and where they came from ("PIPELINE_…" or "pipeline.toml: [dkim]
    key_file (path)"), or ``(None, "")`` when none is configured.

    Raises ``ConfigError`` when the file cannot be read or is far too big to be a key.
    """
    from_env = os.environ.get(env, "").strip()
    if from_env:
        # A PEM squeezed onto one line ("\n" written literally) is common in env files.
        data, source = from_env.replace("\\n", "\n").encode("ascii", "replace"), env
    elif not key_file:
        return None, ""
    else:
        path = Path(key_file)
        path = path if path.is_absolute() else settings.paths.root / path
        source = f"{CONFIG_FILE}: [dkim] {setting} ({path})"
        try:
            with path.open("rb") as file:
                data = file.read(MAX_KEY_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"{CONFIG_FILE}: [dkim] {setting}: cannot read {path} ({exc.strerror}); "
                f"fix the path or set {env}"
            ) from exc
    if len(data) > MAX_KEY_BYTES:
        fix = _ED25519_FIX if "ED25519" in env else _RSA_FIX
        raise ConfigError(
            f"{source}: more than {MAX_KEY_BYTES:,} bytes, far too big for a DKIM private "
            f"key (a PEM key is a few KB); point it at the key, or {fix}"
        )
    return data, source


def _load_pem(data: bytes, source: str, fix: str) -> object:
    """The private key in PEM ``data``; ``ConfigError`` if it is not one or is encrypted."""
    try:
        return load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's way of saying "encrypted, no password given"
        raise ConfigError(
            f"{source}: the key is encrypted with a passphrase, which nobody is there to type "
            "when mail is sent; write it out without one: openssl pkey -in KEY -out dkim.pem"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{source}: not a private key in PEM form; {fix}") from exc


def _rsa_key(data: bytes, source: str) -> RSAPrivateKey:
    """The RSA key in ``data`` (PEM), at least ``MIN_RSA_BITS`` long; ``ConfigError`` if not."""
    key = _load_pem(data, source, _RSA_FIX)
    if isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{source}: an Ed25519 key, but this one must be RSA; put the Ed25519 key in "
            f"{DKIM_ED25519_KEY_ENV} or [dkim] ed25519_key_file, and {_RSA_FIX}"
        )
    if not isinstance(key, RSAPrivateKey):
        kind = "an EC (ECDSA) key" if isinstance(key, EllipticCurvePrivateKey) else "not RSA"
        raise ConfigError(
            f"{source}: {kind}; DKIM signs with RSA or Ed25519 only (RFC 6376, RFC 8463); "
            f"{_RSA_FIX}"
        )
    if key.key_size < MIN_RSA_BITS:
        raise ConfigError(
            f"{source}: a {key.key_size}-bit RSA key is too short; mailbox providers ask for "
            f"{MIN_RSA_BITS} bits (RFC 8301): {_RSA_FIX.replace('public half', 'public half under a new selector')}"
        )
    return key


def _ed25519_key(data: bytes, source: str) -> Ed25519PrivateKey:
    """The Ed25519 key in ``data``: PEM, or the base64 32-byte seed dkimpy's ``dknewkey``
    writes (RFC 8463). Raises ``ConfigError`` if it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        key = _load_pem(data, source, _ED25519_FIX)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{source}: not an Ed25519 key; {_ED25519_FIX}")
        return key
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except binascii.Error as exc:
        raise ConfigError(
            f"{source}: neither PEM nor a base64 Ed25519 seed; {_ED25519_FIX}"
        ) from exc
    if len(seed) != 32:
        raise ConfigError(
            f"{source}: an Ed25519 seed is 32 bytes, this is {len(seed)}; {_ED25519_FIX}"
        )
    return Ed25519PrivateKey.from_private_bytes(seed)


def dkim_problems(settings: Settings) -> list[str]:
    """Every mistake in ``[dkim]`` and its keys, one line each naming the setting (or the
    environment variable) and the fix; empty when signing is off or set up right.

    ``pipeline check`` lists them all; ``load_signer`` raises the first.
    """
    return _configure(settings)[1]


def load_signer(settings: Settings) -> DkimSigner | None:
    """The configured signer (RSA, plus Ed25519 when ``ed25519_selector`` is set), or None
    when ``[dkim] selector`` is empty and no key is given.

    Raises ``ConfigError`` with the first of ``dkim_problems``.
    """
    signer, problems = _configure(settings)
    if problems:
        raise ConfigError(problems[0])
    return signer


def _configure(settings: Settings) -> tuple[DkimSigner | None, list[str]]:
    """The signer and every problem found on the way (the signer is None if any)."""
    config = settings.dkim
    problems: list[str] = []

    def read(env: str, key_file: str, setting: str) -> tuple[bytes | None, str]:
        try:
            return _read_key(settings, env, key_file, setting)
        except ConfigError as exc:
            problems.append(str(exc))
            return None, "unreadable"

    key, source = read(DKIM_KEY_ENV, config.key_file, "key_file")
    ed_key, ed_source = read(DKIM_ED25519_KEY_ENV, config.ed25519_key_file, "ed25519_key_file")
    if not config.selector:
        if source or config.ed25519_selector or ed_source:
            named = source or ed_source or "[dkim] ed25519_selector"
            problems.append(
                f"{CONFIG_FILE}: [dkim] selector is empty but DKIM is configured "
                f"({named.removeprefix(CONFIG_FILE + ': ')}); set the selector published in "
                "DNS as <selector>._domainkey.<domain>"
            )
        return None, problems
    if not source:
        problems.append(
            f"{CONFIG_FILE}: [dkim] selector is set but there is no key; "
            f"set {DKIM_KEY_ENV} to the PEM private key or [dkim] key_file to its path"
        )
    sender_domain = settings.sender.address.rpartition("@")[2].lower()
    domain = (config.domain or sender_domain).lower()
    problems += _name_problems(config.selector, config.ed25519_selector, domain)
    if is_dns_name(domain) and sender_domain != domain and not sender_domain.endswith("." + domain):
        problems.append(
            f"{CONFIG_FILE}: [dkim] domain {domain!r} does not align with the sender "
            f"{settings.sender.address!r}; DMARC needs the sender's domain or a parent of it"
        )
    keys: list[DkimKey] = []
    if key is not None:
        try:
            keys.append(DkimKey(config.selector, _rsa_key(key, source)))
        except ConfigError as exc:
            problems.append(str(exc))
    if config.ed25519_selector:
        if config.ed25519_selector.lower() == config.selector.lower():  # DNS ignores case
            problems.append(
                f"{CONFIG_FILE}: [dkim] ed25519_selector must differ from selector: each "
                "key needs its own DNS record"
            )
        if not ed_source:
            problems.append(
                f"{CONFIG_FILE}: [dkim] ed25519_selector is set but there is no key; set "
                f"{DKIM_ED25519_KEY_ENV} or [dkim] ed25519_key_file"
            )
        elif ed_key is not None:
            try:
                keys.append(DkimKey(config.ed25519_selector, _ed25519_key(ed_key, ed_source)))
            except ConfigError as exc:
                problems.append(str(exc))
    elif ed_source:
        problems.append(
            f"{CONFIG_FILE}: an Ed25519 key is set ({ed_source.removeprefix(CONFIG_FILE + ': ')})"
            " but [dkim] ed25519_selector is empty; set the selector its DNS record is "
            "published under"
        )
    if problems:
        return None, problems
    return MessageSigner(domain, keys, SIGNED_HEADERS), []
