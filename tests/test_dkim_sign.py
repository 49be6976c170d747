"""The fast DKIM signer against dkimpy: same canonical forms, signatures dkimpy verifies.

Messages are generated at random (seeded) with what breaks canonicalisers: folded
headers, tabs, runs of spaces, trailing whitespace on header and body lines, trailing
empty lines, raw UTF-8 and encoded-words, empty bodies. dkimpy is the reference: its
``rfc822_parse`` and ``Relaxed`` canonicalisation, its ``bh=`` and its ``verify``.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from dkim.canonicalization import Relaxed

from pipeline.dkim_sign import (
    DkimKey,
    MessageSigner,
    canonical_body,
    canonical_headers,
    select_signed,
    split_message,
)
from pipeline.signing import SIGNED_HEADERS

WORDS = [
    b"therapy",
    b"caf\xc3\xa9",
    b"=?utf-8?q?K=C3=B6ln?=",
    b"a",
    b"List",
    b"\xe6\x97\xa5\xe6\x9c\xac",
]
SPACES = [b" ", b"  ", b"\t", b" \t ", b""]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def dns_for(records: dict[str, bytes]) -> Callable[..., bytes | None]:
    """A stand-in DNS resolver (no DNS here): TXT records for the test selectors."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode())

    return lookup


def rsa_record(key: rsa.RSAPrivateKey) -> bytes:
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def ed_record(key: Ed25519PrivateKey) -> bytes:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


def random_line(rng: random.Random) -> bytes:
    parts = [rng.choice(SPACES) if rng.random() < 0.3 else b""]
    for _ in range(rng.randint(0, 8)):
        parts += [rng.choice(WORDS), rng.choice(SPACES[:4])]
    if rng.random() < 0.5:
        parts.append(rng.choice(SPACES))  # trailing whitespace
    return b"".join(parts)


def random_message(rng: random.Random) -> bytes:
    names = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Unsubscribe",
             b"List-Unsubscribe-Post", b"X-Other", b"from", b"SUBJECT"]  # fmt: skip
    headers = []
    for name in rng.sample(names, rng.randint(3, len(names))):
        value = random_line(rng)
        for _ in range(rng.randint(0, 2)):  # folded continuation lines
            value += b"\r\n" + rng.choice([b" ", b"\t", b"  "]) + random_line(rng)
        headers.append(name + b":" + rng.choice([b" ", b"", b"\t"]) + value + b"\r\n")
    if not any(h.lower().startswith(b"from:") for h in headers):
        headers.insert(0, b"From: a@example.org\r\n")
    body = b"\r\n".join(random_line(rng) for _ in range(rng.randint(0, 30)))
    if rng.random() < 0.7:
        body += b"\r\n" * rng.randint(1, 4)
    return b"".join(headers) + b"\r\n" + body


MESSAGES = [random_message(random.Random(seed)) for seed in range(300)]


def test_split_message_matches_dkimpy() -> None:
    for message in MESSAGES:
        headers, body = split_message(message)
        theirs, their_body = dkim.rfc822_parse(message)
        assert [tuple(h) for h in theirs] == headers
        assert their_body == body


def test_canonical_body_matches_dkimpy() -> None:
    bodies = [split_message(m)[1] for m in MESSAGES]
    bodies += [b"", b"\r\n", b"\r\n\r\n", b"x", b"x ", b"x\t\r\n", b"a  b\r\n\r\n", b" \r\n"]
    bodies += [b"=\r\n".join([b"plain quoted=3Dprintable line"] * 40) + b"\r\n"]
    tabless = [b.replace(b"\t", b" ") for b in bodies]  # the shortcut without tabs
    assert sum(b"\t" in b for b in bodies) > 50  # and dkimpy's own path with them
    for body in bodies + tabless:
        assert canonical_body(body) == Relaxed.canonicalize_body(body), body


def test_canonical_headers_match_dkimpy() -> None:
    every = [h for m in MESSAGES for h in split_message(m)[0]]
    every += [(b"Subject ", b" a\r\n"), (b"X", b"\r\n"), (b"X", b" \ra b \r\n"), (b"X", b"a")]
    assert sum(b"\r\n " in v or b"\r\n\t" in v for _, v in every) > 50  # folded ones
    assert sum(v.count(b"\n") == 1 and b"  " not in v and b"\t" not in v for _, v in every) > 50
    assert canonical_headers(every) == Relaxed.canonicalize_headers(every)


def test_selected_fields_match_dkimpy() -> None:
    rng = random.Random(11)
    names = [h.lower() for h in SIGNED_HEADERS] + [b"x-other", b"absent"]
    for message in MESSAGES:
        headers = split_message(message)[0]
        for listed in (list(SIGNED_HEADERS), rng.choices(names, k=rng.randint(1, 20))):
            assert select_signed(headers, listed) == dkim.select_headers(headers, listed)


def test_every_signature_verifies_with_dkimpy_and_body_hash_matches(
    rsa_key: rsa.RSAPrivateKey, ed_key: Ed25519PrivateKey
) -> None:
    signer = MessageSigner(
        "example.org", [DkimKey("s1", rsa_key), DkimKey("ed1", ed_key)], SIGNED_HEADERS
    )
    dns = dns_for(
        {
            "s1._domainkey.example.org.": rsa_record(rsa_key),
            "ed1._domainkey.example.org.": ed_record(ed_key),
        }
    )
    pem = rsa_key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    for message in MESSAGES:
        signed = signer.sign(message)
        verifier = dkim.DKIM(signed)
        assert verifier.verify(idx=0, dnsfunc=dns), message  # RSA, outermost
        assert verifier.verify(idx=1, dnsfunc=dns), message  # Ed25519 (RFC 8463)
        assert all(len(line) <= 998 for line in signed.split(b"\r\n"))
        field = signed[: signed.index(b"DKIM-Signature:", 1)]  # the outermost field
        assert all(len(line) <= 72 for line in field.split(b"\r\n")), field  # folded
        theirs = dkim.sign(message, b"s1", b"example.org", pem,
                           canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=list(SIGNED_HEADERS))  # fmt: skip
        assert body_hash(signed) == body_hash(theirs)


def body_hash(signed: bytes) -> bytes:
    found = re.search(rb"bh=([A-Za-z0-9+/=\s]+);", signed)
    assert found is not None
    return re.sub(rb"\s", b"", found[1])


def test_a_changed_signed_header_or_body_fails_verification(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = MessageSigner("example.org", [DkimKey("s1", rsa_key)], SIGNED_HEADERS)
    dns = dns_for({"s1._domainkey.example.org.": rsa_record(rsa_key)})
    message = (
        b"From: a@example.org\r\nTo: b@example.net\r\nSubject: Hi\r\n"
        b"List-Unsubscribe: <https://example.org/u/1>\r\n\r\nBody\r\n"
    )
    signed = signer.sign(message)
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"/u/1", b"/u/2"), dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Body", b"B0dy"), dnsfunc=dns)
    # An added second List-Unsubscribe breaks it too: the header is over-signed.
    added = signed.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe: <https://evil.example>\r\n\r\n")
    assert not dkim.verify(added, dnsfunc=dns)
    # Whitespace changes on the way are what relaxed/relaxed tolerates.
    assert dkim.verify(signed.replace(b"Subject: Hi", b"Subject:   Hi  "), dnsfunc=dns)


def test_signer_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="From"):
        MessageSigner("example.org", [DkimKey("s", Ed25519PrivateKey.generate())], [b"to"])
    for domain, selector in (("example.org ", "s"), ("example.org", "s 1"), ("", "s")):
        with pytest.raises(ValueError, match="not a DNS name"):
            MessageSigner(domain, [DkimKey(selector, Ed25519PrivateKey.generate())], [b"from"])
    with pytest.raises(ValueError, match="not a header field"):
        split_message(b"no colon here\r\n\r\nbody")
