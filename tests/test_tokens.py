"""Link tokens made with the signer prepared once are itsdangerous's own, byte for byte.

``make_token`` skips ``Serializer.dumps``'s new signer and key derivation per call, and
never offers a short payload to zlib; the reference here is itsdangerous itself (``dumps``
and ``loads``), and for the subscriber reference the keyed hash written out with
``hmac.new``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import string

from itsdangerous import URLSafeSerializer

from pipeline.addresses import email_key
from pipeline.tokens import SHORT_PAYLOAD, make_token, read_token, subscriber_ref

KEYS = ["test-secret-key", "ünïcode key", "k" * 200]


def _values() -> list[str]:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + '-_=.é"\\\n '
    values = ["", "a", "x" * 400, "a" * 2000]  # the last compresses: the "." prefix form
    values += [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))) for _ in range(300)
    ]
    return values


def test_link_tokens_are_the_ones_itsdangerous_makes_and_reads() -> None:
    for key in KEYS:
        for purpose in ("unsubscribe", "preferences"):
            reference = URLSafeSerializer(key, salt=f"pipeline.{purpose}")
            for value in _values():
                token = make_token(value, key, purpose)
                made = reference.dumps(value)
                if not made.startswith("."):  # dumps kept the payload uncompressed
                    assert token == made, (key, purpose, value)
                assert read_token(token, key, purpose) == value
                assert reference.loads(token) == value
    assert make_token("a" * 2000, KEYS[0], "unsubscribe").startswith(".")  # compressed form


def test_short_payloads_are_never_compressed_and_still_read_back() -> None:
    # dumps compresses this short, repetitive value; make_token leaves it as it is, and
    # the token is itsdangerous's uncompressed form, which loads reads.
    value = "a" * (SHORT_PAYLOAD - 2)
    reference = URLSafeSerializer(KEYS[0], salt="pipeline.unsubscribe")
    assert reference.dumps(value).startswith(".")
    token = make_token(value, KEYS[0], "unsubscribe")
    assert not token.startswith(".")
    assert reference.loads(token) == value
    assert make_token(value, KEYS[0], "unsubscribe") == token  # the same link every time


def test_subscriber_references_sign_exactly_as_dumps_does() -> None:
    # The payloads links carry: what a subscriber's message holds is dumps's token itself.
    for key in KEYS:
        reference = URLSafeSerializer(key, salt="pipeline.preferences")
        for i in range(500):
            ref = subscriber_ref(f"reader{i}@example.net", key)
            assert make_token(ref, key, "preferences") == reference.dumps(ref)


def test_subscriber_ref_is_the_keyed_hash_of_the_address() -> None:
    for address in ("Ana.Reyes@Example.org", "ben@example.net", "chloé@exämple.org"):
        for key in KEYS:
            mac = hmac.new(
                key.encode(), b"subscriber-ref\0" + email_key(address).encode(), hashlib.sha256
            ).digest()
            expected = base64.urlsafe_b64encode(mac[:16]).decode("ascii").rstrip("=")
            assert subscriber_ref(address, key) == expected
            assert subscriber_ref(address.upper(), key) == expected  # case-blind
